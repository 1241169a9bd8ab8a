"""Home: what Loupe is, what is registered (with status), recent runs, and a shared run opened by
its link (``/?run=<key>``). Layout only."""
import pandas as pd
import streamlit as st

import loupe
from views.figures import attribution_overlay, feature_bars
from views.runs import metric_summary, metrics_table, run_page


@st.cache_data(ttl=5, show_spinner="Reading the registries…")
def listings() -> tuple[list[dict], list[dict], list[dict]]:
    """Models, datasets and explainers; re-read every few seconds so manifest edits show up."""
    return loupe.models(), loupe.datasets(), loupe.explainers()


def show_run(key: str) -> None:
    """The stored run behind a share link, or a clear message when there is none."""
    try:
        res = loupe.run(key)
    except loupe.user_errors() as err:
        st.error(f"Run not found. {err}")
        st.page_link("pages/home.py", label="Back to the home page", icon=":material/home:")
        return
    meta = res.provenance
    st.subheader(f"{meta['explainer_id']} · {meta['model_id']} · {meta['dataset_id']}")
    st.caption(f"Run `{res.key}` · {meta['n_samples']} samples · stored {meta['created']} · device {meta['device']}")
    st.code(res.link, language=None)
    with st.expander("Parameters"):
        st.json(meta["params"])
    st.dataframe(metric_summary(res), width="stretch")
    dataset = loupe.dataset(meta["dataset_id"])
    shown = res.sample_ids[:12]
    columns = st.columns(4)
    for i, sid in enumerate(shown):
        with columns[i % 4]:
            title = f"#{sid} · {dataset.classes[res.targets[i]]} ({res.confidences[i]:.2f})"
            if dataset.task == "image":
                fig = attribution_overlay(dataset.inputs([sid])[0].numpy(), res.attributions[i], title=title)
            else:
                fig = feature_bars(res.attributions[i], dataset.feature_names or [], top=10, title=title)
            st.plotly_chart(fig, key=f"run-{sid}", config={"displayModeBar": False})
    if len(res.sample_ids) > len(shown):
        st.caption(f"Showing {len(shown)} of {len(res.sample_ids)} samples; the table has them all.")
    table = metrics_table(res)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button("Download CSV", loupe.export(res.key).to_csv(index=False).encode(),
                       file_name=f"loupe-{res.key[:12]}.csv", mime="text/csv")


st.title("Loupe")
if "run" in st.query_params:
    target_page = run_page(st.query_params["run"])
    if target_page:
        st.switch_page(target_page, query_params={"run": st.query_params["run"]})
    show_run(st.query_params["run"])
    st.stop()

st.markdown(
    "An interpretability workbench: pick a registered model and dataset, run explainers "
    "(SAMP, OSA-DAS, surrogate rules, Bluff pathways and the Captum/SHAP references), and measure "
    "whether the explanations are faithful. Results are cached, so nothing is computed twice, and "
    "every run has a permanent link."
)
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
st.dataframe(status_table(models, ["id", "status", "task", "dataset", "classes", "test_accuracy", "source", "reason"]),
             hide_index=True, width="stretch")
st.subheader("Datasets")
st.dataframe(status_table(datasets, ["id", "status", "task", "n_samples", "input_shape", "classes", "has_masks",
                                     "source", "reason"]), hide_index=True, width="stretch")
st.subheader("Explainers")
st.dataframe(pd.DataFrame([{k: e[k] for k in ("id", "title", "modalities", "needs_gradients", "paper")}
                           for e in explainers]), hide_index=True, width="stretch")

st.subheader("Recent runs")
recent = loupe.runs(limit=10)
if recent:
    st.dataframe(
        pd.DataFrame([{"open": r["link"], "explainer": r["explainer_id"], "model": r["model_id"],
                       "dataset": r["dataset_id"], "samples": r["n_samples"], "created": r["created"]}
                      for r in recent]),
        column_config={"open": st.column_config.LinkColumn("open", display_text="open")},
        hide_index=True, width="stretch",
    )
else:
    st.caption("No runs yet: run `python -m loupe explain …` or use the API, and they appear here.")

with st.expander("Quick start"):
    st.code(
        'import loupe\n'
        'res = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:8",\n'
        '                    explainer="integrated_gradients", params={"n_steps": 32})\n'
        'res.attributions.shape, res.metrics[0], res.link',
        language="python",
    )
    st.code("python -m loupe explain --model shapes_cnn --dataset shapes --samples 0:16 "
            "--explainer integrated_gradients --json", language="bash")
