"""Embeddings: UMAP of a model's penultimate activations or of an explainer's attribution maps over
a dataset slice, coloured by label, prediction, correctness, confidence or a metric. Selecting
points (box or lasso) opens those samples in Explain. UMAP runs on the worker and the result is a
stored artifact with its own link (``/embeddings?run=<key>``). Layout only.

State: the widgets hold the request; the URL mirrors them. A ``?run=`` link seeds the widgets once
(when this session has not opened that key yet), so later reruns (a colour, a selection, another
model) keep what the user chose. The shown embedding is the last one computed or opened, and only
while the widgets still describe it."""
import streamlit as st

import loupe
from views import st_layout as ui
from views.access import require_access
from views.embedding import colourings, embedding_figure, same_request, selected_samples

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

ANALYSIS = "umap_embedding"

st.title("Embeddings")
ui.follow_run_link("embedding")
models = {m["id"]: m for m in ui.usable_models()}
query = st.query_params.to_dict()
if query.get("run") and query["run"] != st.session_state.get("em-opened"):
    try:
        opened = ui.artifact(query["run"])
    except loupe.user_errors() as err:
        st.error(f"Run not found. {err}")
    else:  # a link this session has not opened yet: its request replaces the widgets' values
        for key in [k for k in st.session_state if str(k).startswith("em-")]:
            del st.session_state[key]
        st.session_state["em-shown"] = opened.key
    st.session_state["em-opened"] = query["run"]
shown = ui.artifact(st.session_state["em-shown"]) if "em-shown" in st.session_state else None
seed = ({"model": shown.meta["model_id"], "dataset": shown.meta["dataset_id"], **shown.meta["params"]}
        if shown is not None else query)

ui.seed("em-model", seed.get("model") if seed.get("model") in models else next(iter(models)))
top = st.columns(2)
model = models[top[0].selectbox("Model", list(models), key="em-model")]
datasets = ui.datasets_for(model)
if st.session_state.get("em-dataset") not in datasets:
    st.session_state["em-dataset"] = seed.get("dataset") if seed.get("dataset") in datasets else datasets[0]
dataset_id = top[1].selectbox("Dataset", datasets, key="em-dataset")
analysis = ui.explainers_for(model, "embedding")[ANALYSIS]
with st.expander("Embedding parameters", expanded=shown is None):
    params = ui.params_form(analysis, "em-p", {k: v for k, v in seed.items() if k not in ("model", "dataset", "run")},
                            choices={"explainer": list(ui.explainers_for(model))})

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
        st.session_state["em-shown"] = shown.key
    except loupe.user_errors() as err:
        st.error(str(err))
if shown is not None and not same_request(shown.meta, model["id"], dataset_id, params):
    st.info("The settings above differ from the last embedding: press Compute embedding (stored embeddings open "
            "instantly).")
    shown = None
if shown is not None:
    st.session_state["em-opened"] = shown.key  # the URL below names it: a rerun is not a newly opened link
st.query_params.from_dict({"model": model["id"], "dataset": dataset_id, **{k: str(v) for k, v in params.items()},
                           **({"run": shown.key} if shown is not None else {})})
if shown is None:
    if "em-shown" not in st.session_state:
        st.info("Press Compute embedding (stored embeddings open instantly).")
    st.stop()

meta, info = shown.meta, shown.info
st.caption(f"{info['source']}{' of ' + info['explainer'] if info.get('explainer') else ''} · {meta['model_id']} on "
           f"{meta['dataset_id']} · {len(meta['sample_ids'])} samples · {info['feature_dim']} dimensions → 2 · "
           f"link: {shown.link}")
options = colourings(shown.arrays, info["classes"])
if st.session_state.get("em-colour") not in options:
    st.session_state["em-colour"] = "label"
colour = st.radio("Colour by", list(options), horizontal=True, key="em-colour",
                  format_func=lambda name: options[name].title, help="metrics: ↑ higher is better, ↓ lower is better")
event = st.plotly_chart(embedding_figure(shown.arrays["points"], meta["sample_ids"], options[colour]),
                        key="em-plot", on_select="rerun", selection_mode=("box", "lasso", "points"))
picked = selected_samples(event.selection.points) if event and event.selection else []
if picked:
    st.markdown(f"**{len(picked)} selected:** " + ", ".join(f"#{i}" for i in picked))
    explainer = {"explainers": info["explainer"]} if info.get("explainer") else {}
    st.page_link("pages/explain.py", label=f"Open the {len(picked)} selected sample(s) in Explain",
                 icon=":material/image_search:",
                 query_params={"model": meta["model_id"], "dataset": meta["dataset_id"],
                               "samples": ",".join(map(str, picked)), **explainer})
else:
    st.caption("Select points with the box or lasso tool (top right of the plot) to open them in Explain.")
