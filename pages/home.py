"""Home: what Loupe is, what is registered (with status), recent runs as links, a quick start; and
the router of share links: ``/?run=<key>`` opens the stored result on the page of its kind, and an
unknown or malformed key says "Run not found". Layout only."""
import pandas as pd
import streamlit as st

import loupe
from views.access import require_access
from views.runs import run_page
from views.st_layout import open_linked

require_access()  # every page gates itself: a fresh server may serve a page path without app.py


@st.cache_data(ttl=5, show_spinner="Reading the registries…")
def listings() -> tuple[list[dict], list[dict], list[dict]]:
    """Models, datasets and explainers; re-read every few seconds so manifest edits show up."""
    return loupe.models(), loupe.datasets(), loupe.explainers()


KINDS = {"attribution": "explanation", "rules": "rules", "pathways": "pathways", "embedding": "embedding"}
# (how each stored kind reads in the recent-results table; a bare string here would be drawn by Streamlit)

st.title("Loupe")
if "run" in st.query_params:
    kind, target_page = open_linked(run_page)
    if target_page:
        st.switch_page(target_page, query_params={"run": st.query_params["run"]})
    st.error(f"This link opens a stored {kind} result, which no page of this app shows yet.")
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
st.dataframe(pd.DataFrame([{k: e[k] for k in ("id", "title", "output", "modalities", "needs_gradients", "paper")}
                           for e in explainers]), hide_index=True, width="stretch")

st.subheader("Recent results")
recent = loupe.recent(limit=12)
if recent:
    st.dataframe(
        pd.DataFrame([{"open": r["link"], "kind": KINDS.get(r["kind"], r["kind"]), "method": r["what"],
                       "model": r["model"], "dataset": r["dataset"], "samples": r["samples"],
                       "created": r["created"]} for r in recent]),
        column_config={"open": st.column_config.LinkColumn("open", display_text="open", width="small"),
                       "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm")},
        hide_index=True, width="stretch",
    )
else:
    st.caption("Nothing stored yet: explain, extract rules, compute pathways or an embedding (here or with "
               "`python -m loupe …`), and the results appear here, each with its link.")

st.subheader("Quick start")
st.markdown(
    "1. **Explain**: pick `shapes_cnn`, tick a few images in the gallery, choose `samp` and `osa_das`, check "
    "the cost preview and press *Explain*. Each result has a link to copy and CSV/PNG downloads.\n"
    "2. **Compare**: several explainers (and models) over a slice: their maps side by side, the samples they "
    "disagree on most first, metrics with 95% confidence intervals, and how much they agree.\n"
    "3. **Batch**: run a slice in the background, cancel or resume it, export CSV or Parquet.\n"
    "4. **Registry**: add your own model or dataset (by path or upload); it is validated before it is saved.\n"
    "5. **Embeddings**: UMAP of a model's penultimate activations or of attribution maps."
)
with st.expander("From Python or the command line"):
    st.code(
        'import loupe\n'
        'res = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:8",\n'
        '                    explainer="integrated_gradients", params={"n_steps": 32})\n'
        'res.attributions.shape, res.metrics[0], res.link',
        language="python",
    )
    st.code("python -m loupe explain --model shapes_cnn --dataset shapes --samples 0:16 "
            "--explainer integrated_gradients --json", language="bash")
