"""Compare: N explainers × M models over one dataset slice. A grid of maps (samples × (model,
explainer), the input image beside them, the samples the explainers disagree on most first), each
metric's mean with its 95% interval as a chart, how much the explainers agree (Spearman, top-10%
IoU), and every map a link that opens its stored result in Explain. The URL holds the selection;
stored results show without recomputing. Layout only."""
import streamlit as st

import loupe
from views import st_layout as ui
from views.access import require_access
from views.compare import (agreement_figure, agreement_matrix, disagreement, disputed_samples, metric_figure,
                           metric_table)
from views.explain import caption, explain_link
from views.figures import top_features
from views.runs import metric_line

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Compare")
query = st.query_params.to_dict()
models = {m["id"]: m for m in ui.usable_models()}
datasets = sorted({d for m in models.values() for d in ui.datasets_for(m)})
ui.seed("cmp-dataset", query.get("dataset", "shapes") if query.get("dataset", "shapes") in datasets else datasets[0])
top = st.columns([2, 2, 2])
dataset_id = top[0].selectbox("Dataset", datasets, key="cmp-dataset")
ui.seed("cmp-samples", query.get("samples", "0:16"))
samples = top[1].text_input("Samples", key="cmp-samples", help="'a:b[:step]', '1,4,7' or 'all'")
ui.seed("cmp-measure", query.get("measure") if query.get("measure") in loupe.AGREEMENT_MEASURES else "spearman")
measure = top[2].radio("Agreement", loupe.AGREEMENT_MEASURES, horizontal=True, key="cmp-measure",
                       format_func=lambda m: loupe.metric_info(m).label,
                       help=" ".join(f"{loupe.metric_info(m).label}: {loupe.metric_info(m).help}"
                                     for m in loupe.AGREEMENT_MEASURES))
fitting = [m for m in models if dataset_id in ui.datasets_for(models[m])]
asked = [m for m in query.get("models", "").split(",") if m]
if any(m not in fitting for m in asked):
    st.error(f"Unknown model(s) for {dataset_id}: {', '.join(m for m in asked if m not in fitting)}")
ui.seed("cmp-models", [m for m in asked if m in fitting] or fitting[:1])
st.session_state["cmp-models"] = [m for m in st.session_state["cmp-models"] if m in fitting]
pickers = st.columns([2, 4])
chosen_models = pickers[0].multiselect("Models", fitting, key="cmp-models")
common = {e["id"]: e for e in ui.listings()[2]
          if e["output"] == "attribution" and all(e["id"] in ui.explainers_for(models[m]) for m in chosen_models)}
ui.seed("cmp-explainers", [e for e in query.get("explainers", "").split(",") if e in common])
st.session_state["cmp-explainers"] = [e for e in st.session_state["cmp-explainers"] if e in common]
chosen = pickers[1].multiselect("Explainers (default parameters)", list(common), key="cmp-explainers",
                                format_func=lambda e: f"{common[e]['title']} ({e})")
st.query_params.from_dict({"dataset": dataset_id, "models": ",".join(chosen_models),
                           "explainers": ",".join(chosen), "samples": samples, "measure": measure})
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

dataset = loupe.dataset(dataset_id)
shown_pairs = [p for p in pairs if p in results]
order = disputed_samples(results, measure)
first = next(iter(results.values()))
position = {int(s): i for i, s in enumerate(first.sample_ids)}
st.subheader("Maps: the samples the explainers disagree on most first")
ui.seed("cmp-rows", min(6, len(order)))
controls = st.columns([1, 4], vertical_alignment="bottom")
rows = controls[0].number_input("Samples shown", 1, len(order), key="cmp-rows",
                                help=f"ordered by the mean {loupe.metric_info(measure).label} between explainers, "
                                     "lowest first")
controls[1].caption("Red: evidence for the explained (predicted) class, blue: against it; each map is scaled to its "
                    "own largest |value|. Each map opens its stored result in Explain.")
headers = st.columns([1] * (1 + len(shown_pairs)))
headers[0].markdown("**input**")
for column, (m, e) in zip(headers[1:], shown_pairs):
    column.markdown(f"**{common[e]['title']}**" + (f"  \n{m}" if len(chosen_models) > 1 else ""))
image_data = dataset.task == "image"
pictures = ui.thumbnails(dataset_id, tuple(order[:rows])) if image_data else [None] * rows
for sample_id, picture in zip(order[:rows], pictures):
    i = position[sample_id]
    cells = st.columns([1] * (1 + len(shown_pairs)), vertical_alignment="top")
    text = caption(sample_id, dataset.classes, int(first.labels[i]), int(first.predictions[i]),
                   float(first.confidences[i]))
    if picture is not None:
        cells[0].image(picture, caption=text, width="stretch")
    else:
        cells[0].markdown(text)
    image = dataset.inputs([sample_id])[0].numpy() if picture is not None else None
    for cell, (m, e) in zip(cells[1:], shown_pairs):
        res = results[(m, e)]
        with cell:
            if image is not None:
                st.image(ui.map_card(res, i, image, 0.6, size=192, colour_bar=False), width="stretch")
            else:
                st.markdown("top: " + ", ".join(top_features(res.attributions[i], dataset.feature_names or [], 5)))
            st.markdown(f"[open in Explain]({explain_link(loupe.base_url(), m, dataset_id, [sample_id], [e])})")
            st.markdown(metric_line(res.metrics[i] if res.metrics else {}, ["deletion_auc", "insertion_auc"]),
                        unsafe_allow_html=True)

st.subheader("Metrics: mean and 95% confidence interval over the samples")
st.caption("Each dot is a (model, explainer); the whisker is the 95% interval of its mean (Student's t). ↑ higher "
           "is better, ↓ lower is better; hover a dot for the numbers and what the metric measures.")
st.plotly_chart(metric_figure({p: results[p] for p in shown_pairs}), key="cmp-metrics",
                config={"displayModeBar": False})
table = metric_table({p: results[p] for p in shown_pairs})
with st.expander("The numbers"):
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        name: st.column_config.TextColumn(loupe.metric_info(name).title, help=loupe.metric_info(name).tooltip)
        for name in table.columns if name not in ("model", "explainer", "samples")})

label = loupe.metric_info(measure).label
for m in chosen_models:
    mine = {k: v for k, v in results.items() if k[0] == m}
    if len(mine) < 2:
        continue
    st.subheader(f"{m}: agreement between explainers ({label})")
    matrix = agreement_matrix(mine, m, measure)
    st.plotly_chart(agreement_figure(matrix, measure), key=f"cmp-agree-{m}", width=min(220 + 110 * len(matrix), 900),
                    config={"displayModeBar": False})
    ranked = disagreement(mine, m, dataset.classes, measure)
    ranked.insert(0, "open", [explain_link(loupe.base_url(), m, dataset_id, [s], [e for _, e in mine])
                              for s in ranked["sample"]])
    st.dataframe(ranked, hide_index=True, width="stretch", key=f"cmp-rank-{m}", column_config={
        "open": st.column_config.LinkColumn("open", display_text="explain", width="small"),
        "sample": st.column_config.NumberColumn("sample", width="small"),
        f"mean {label}": st.column_config.NumberColumn(f"mean {label}", format="%.2f",
                                                        help=loupe.metric_info(measure).tooltip),
        "least agreeing pair": st.column_config.TextColumn("least agreeing pair", width="large")})
