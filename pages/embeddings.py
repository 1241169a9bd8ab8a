"""Embeddings: UMAP of a model's penultimate activations or of an explainer's attribution maps over
a dataset slice, coloured by label, prediction, correctness, confidence or a metric. Selecting
points (box or lasso) opens those samples in Explain. UMAP runs on the worker and the result is a
stored artifact with its own link (``/?run=<key>``). Layout only."""
import streamlit as st

import loupe
from views import st_layout as ui
from views.access import require_access
from views.embedding import colourings, embedding_figure, selected_samples

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

ANALYSIS = "umap_embedding"

st.title("Embeddings")
ui.follow_run_link("embedding")
models = {m["id"]: m for m in ui.usable_models()}
first = next(iter(models))
shown = None
if "run" in st.query_params:
    try:
        shown = loupe.artifact(st.query_params["run"])
    except loupe.user_errors() as err:
        st.error(f"Run not found. {err}")
    else:
        for key in [k for k in st.session_state if str(k).startswith("em-")]:
            del st.session_state[key]
        st.session_state["em-key"] = shown.key
query = st.query_params.to_dict()
opened = shown.meta if shown is not None else query
asked_model = opened.get("model_id", query.get("model"))
ui.seed("em-model", asked_model if asked_model in models else first)
top = st.columns(2)
model = models[top[0].selectbox("Model", list(models), key="em-model")]
datasets = ui.datasets_for(model)
asked_dataset = opened.get("dataset_id", query.get("dataset"))
ui.seed("em-dataset", asked_dataset if asked_dataset in datasets else datasets[0])
dataset_id = top[1].selectbox("Dataset", datasets, key="em-dataset")
analysis = ui.explainers_for(model, "embedding")[ANALYSIS]
initial = dict(shown.meta["params"]) if shown is not None else {k: v for k, v in query.items() if k not in ("model", "dataset", "run")}
with st.expander("Embedding parameters", expanded=shown is None):
    params = ui.params_form(analysis, "em-p", initial)
    attribution_ids = list(ui.explainers_for(model))
    st.caption(f"Explainers for source = attributions: {', '.join(attribution_ids)}")

if st.button("Compute embedding", type="primary", key="em-run"):
    try:
        if params["source"] == "attributions":
            with st.status(f"{params['explainer']} maps for samples {params['samples']}…") as box:
                bar = st.progress(0.0)
                res = loupe.explain(model["id"], dataset_id, params["samples"], params["explainer"],
                                    progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done}/{total}"))
                box.update(label=f"{params['explainer']}: {'stored' if res.cached else 'computed'}", state="complete")
        with st.status("UMAP on the worker (the first layout on a fresh worker compiles numba: 20–50 s)…") as box:
            shown = loupe.analysis(ANALYSIS, model["id"], dataset_id, params)
            box.update(label=f"UMAP: {'from the store' if shown.cached else 'computed'}", state="complete")
        st.session_state["em-key"] = shown.key
    except loupe.user_errors() as err:
        st.error(str(err))
if shown is None and "em-key" in st.session_state:
    shown = loupe.artifact(st.session_state["em-key"])
st.query_params.from_dict({"model": model["id"], "dataset": dataset_id, **{k: str(v) for k, v in params.items()},
                           **({"run": shown.key} if shown is not None else {})})
if shown is None:
    st.info("Press Compute embedding (stored embeddings open instantly).")
    st.stop()

meta, info = shown.meta, shown.info
st.caption(f"{info['source']}{' of ' + info['explainer'] if info.get('explainer') else ''} · {meta['model_id']} on "
           f"{meta['dataset_id']} · {len(meta['sample_ids'])} samples · {info['feature_dim']} dimensions → 2 · "
           f"link: {shown.link}")
options = colourings(shown.arrays, info["classes"])
colour = st.radio("Colour by", list(options), horizontal=True, key="em-colour")
event = st.plotly_chart(embedding_figure(shown.arrays["points"], meta["sample_ids"], options[colour], colour),
                        key="em-plot", on_select="rerun", selection_mode=("box", "lasso", "points"))
picked = selected_samples(event.selection.points) if event and event.selection else []
if picked:
    explainer = [info["explainer"]] if info.get("explainer") else []
    st.page_link("pages/explain.py", label=f"Open {len(picked[:12])} selected sample(s) in Explain",
                 icon=":material/image_search:",
                 query_params={"model": meta["model_id"], "dataset": meta["dataset_id"],
                               "samples": ",".join(map(str, picked[:12])), **({"explainers": explainer[0]} if explainer else {})})
else:
    st.caption("Select points with the box or lasso tool to open them in Explain.")
