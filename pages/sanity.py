"""Sanity: the cascading model-randomisation check (Adebayo et al., NeurIPS 2018) of an attribution
explainer. A stored check opens from its link (``/sanity?run=<key>``) without computing; otherwise
pick a model, dataset, samples and explainer (with its default parameters) and run it. The Explain
and Compare pages run it for their own selection. Layout only."""
import streamlit as st

import loupe
from views import st_layout as ui
from views import st_sanity
from views.access import require_access

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Sanity check")
ui.follow_run_link("sanity")

if "run" in st.query_params:
    opened = ui.open_linked(loupe.sanity_result)
    meta = opened.artifact.meta
    st.caption(f"Stored result: {opened.explainer} on {meta['model_id']} / {meta['dataset_id']}, "
               f"{len(opened.sample_ids)} sample(s), computed on {meta.get('device') or '?'}. Explainer parameters: "
               f"{', '.join(f'{k}={v}' for k, v in opened.explainer_params.items()) or 'none'}.")
    st_sanity.show(opened, "sanity-opened")
    st.stop()

models = {m["id"]: m for m in ui.usable_models()}
top = st.columns(4)
model_id = top[0].selectbox("Model", list(models), key="sn-model")
dataset_id = top[1].selectbox("Dataset", ui.datasets_for(models[model_id]), key="sn-dataset")
samples = top[2].text_input("Samples", "0:8", key="sn-samples", help="'a:b[:step]' or '1,4,7'")
target = top[3].selectbox("Target", ["predicted", "label"], key="sn-target")
available = ui.explainers_for(models[model_id])
st_sanity.section(model_id, dataset_id, samples, {e: {} for e in available}, target, key="sn")
