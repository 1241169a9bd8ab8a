"""Compare: N explainers × M models over one dataset slice: each metric's mean ± 95% CI, how much
the explainers agree (Spearman, top-10% IoU), and the samples they disagree on most, each opening
in Explain. The URL holds the selection; stored results show without recomputing. Layout only."""
import streamlit as st

import loupe
from views import st_layout as ui
from views.access import require_access
from views.compare import AGREEMENT, agreement_matrix, disagreement, metric_table
from views.explain import explain_link

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Compare")
query = st.query_params.to_dict()
models = {m["id"]: m for m in ui.usable_models()}
datasets = sorted({d for m in models.values() for d in ui.datasets_for(m)})
ui.seed("cmp-dataset", query.get("dataset", "shapes") if query.get("dataset", "shapes") in datasets else datasets[0])
dataset_id = st.selectbox("Dataset", datasets, key="cmp-dataset")
fitting = [m for m in models if dataset_id in ui.datasets_for(models[m])]
asked = [m for m in query.get("models", "").split(",") if m]
if any(m not in fitting for m in asked):
    st.error(f"Unknown model(s) for {dataset_id}: {', '.join(m for m in asked if m not in fitting)}")
ui.seed("cmp-models", [m for m in asked if m in fitting] or fitting[:1])
st.session_state["cmp-models"] = [m for m in st.session_state["cmp-models"] if m in fitting]
chosen_models = st.multiselect("Models", fitting, key="cmp-models")
common = [e for e in ui.listings()[2]
          if e["output"] == "attribution" and all(e["id"] in ui.explainers_for(models[m]) for m in chosen_models)]
ids = [e["id"] for e in common]
ui.seed("cmp-explainers", [e for e in query.get("explainers", "").split(",") if e in ids])
st.session_state["cmp-explainers"] = [e for e in st.session_state["cmp-explainers"] if e in ids]
chosen = st.multiselect("Explainers (default parameters)", ids, key="cmp-explainers")
ui.seed("cmp-samples", query.get("samples", "0:16"))
samples = st.text_input("Samples", key="cmp-samples", help="'a:b[:step]', '1,4,7' or 'all'")
measure = st.radio("Agreement", list(AGREEMENT), horizontal=True, key="cmp-measure")
st.query_params.from_dict({"dataset": dataset_id, "models": ",".join(chosen_models),
                           "explainers": ",".join(chosen), "samples": samples})
if not chosen_models or len(chosen) < 2:
    st.info("Choose at least one model and two explainers.")
    st.stop()

pairs = [(m, e) for m in chosen_models for e in chosen]
if st.button("Compute missing", type="primary", key="cmp-run"):
    bar = st.progress(0.0, text="starting…")
    with st.status(f"{len(pairs)} model × explainer runs", expanded=False) as box:
        for k, (m, e) in enumerate(pairs):
            bar.progress(k / len(pairs), text=f"{e} on {m}")
            try:
                loupe.explain(m, dataset_id, samples, e)
            except loupe.user_errors() as err:
                st.error(f"{e} on {m}: {err}")
        bar.progress(1.0, text="done")
        box.update(state="complete")

results, problems = {}, []
for m, e in pairs:
    try:
        found = loupe.stored(m, dataset_id, samples, e)
    except loupe.user_errors() as err:
        problems.append(f"{e} on {m}: {err}")
        continue
    if found is not None:
        results[(m, e)] = found
for problem in problems:
    st.error(problem)
if len(results) < len(pairs):
    st.info(f"{len(pairs) - len(results)} of {len(pairs)} runs are not stored yet: press Compute missing.")
if not results:
    st.stop()

st.subheader("Metrics (mean ± 95% CI over the samples)")
st.dataframe(metric_table(results), hide_index=True, width="stretch")
for m in chosen_models:
    mine = {k: v for k, v in results.items() if k[0] == m}
    if len(mine) < 2:
        continue
    st.subheader(f"{m}: agreement ({measure})")
    left, right = st.columns([2, 3])
    left.dataframe(agreement_matrix(mine, m, measure), width="stretch")
    ranked = disagreement(mine, m, measure)
    ranked.insert(0, "open", [explain_link(loupe.base_url(), m, dataset_id, [s], [e for _, e in mine]) for s in ranked["sample"]])
    right.dataframe(ranked, hide_index=True, width="stretch", key=f"cmp-rank-{m}",
                    column_config={"open": st.column_config.LinkColumn("open", display_text="explain")})
