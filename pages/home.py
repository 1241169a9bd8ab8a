"""Home: what Loupe is, what is registered (with status), and how to start. Layout only."""
import pandas as pd
import streamlit as st

import loupe

st.title("🔍 Loupe")
st.markdown(
    "An interpretability workbench: pick a registered model and dataset, run explainers "
    "(SAMP, OSA-DAS, surrogate rules, Bluff pathways and the Captum/SHAP references), and measure "
    "whether the explanations are faithful."
)


@st.cache_data(ttl=5, show_spinner="Reading the registries…")
def listings() -> tuple[list[dict], list[dict], list[dict]]:
    """Models, datasets and explainers; re-read every few seconds so manifest edits show up."""
    return loupe.models(), loupe.datasets(), loupe.explainers()


models, datasets, explainers = listings()


def status_table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame[[c for c in columns if c in frame.columns]]


n_bad = sum(r.get("status") == "error" for r in models + datasets)
c1, c2, c3 = st.columns(3)
c1.metric("Models", len(models))
c2.metric("Datasets", len(datasets))
c3.metric("Explainers", len(explainers))
if n_bad:
    st.warning(f"{n_bad} manifest entr{'y' if n_bad == 1 else 'ies'} could not be loaded: see the reasons below.")

st.subheader("Models")
st.dataframe(
    status_table(models, ["id", "status", "task", "dataset", "classes", "test_accuracy", "source", "reason"]),
    hide_index=True, width="stretch",
)
st.subheader("Datasets")
st.dataframe(
    status_table(datasets, ["id", "status", "task", "n_samples", "input_shape", "classes", "has_masks", "reason"]),
    hide_index=True, width="stretch",
)
st.subheader("Explainers")
st.dataframe(
    pd.DataFrame([{k: e[k] for k in ("id", "title", "modalities", "needs_gradients", "paper")} for e in explainers]),
    hide_index=True, width="stretch",
)

with st.expander("Quick start"):
    st.code(
        'import loupe\n'
        'res = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:8",\n'
        '                    explainer="integrated_gradients", params={"n_steps": 32})\n'
        'res.attributions.shape, res.metrics[0]',
        language="python",
    )
    st.code("python -m loupe explain --model shapes_cnn --dataset shapes --samples 0:16 "
            "--explainer integrated_gradients --json", language="bash")
