"""Explain: pick a model, a dataset and samples from a gallery, one or more explainers and their
parameters; see the cost before running; compare the results side by side. The URL always holds the
selection, so it reopens the same view (stored results show without recomputing). A share link
(``?run=<key>``) first shows just its stored result, which a fresh browser draws quickly; one click
opens it in the full explorer. Layout only."""
import streamlit as st

import loupe
from views import st_layout as ui
from views import st_sanity
from views.access import require_access
from views.explain import TARGETS, GalleryFilter, Selection, SelectionError, caption, gallery_page

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

GALLERY = 12
SHOWN = 6


def shared_result(res: loupe.Result) -> None:
    """A stored run on its own: what it is, its maps, metrics, link and downloads, and a button that
    opens it in the explorer. No selection widgets, so a fresh browser loads few scripts; and it
    loads them in page order, so the button comes last (the maps show sooner than with the button
    above them: bench/results/design_measurements.md)."""
    prov = res.provenance
    data = loupe.dataset(prov["dataset_id"])
    model_classes = next((m["classes"] for m in ui.listings()[0] if m["id"] == prov["model_id"]), data.classes)
    st.caption(f"Stored result: {prov.get('explainer', prov['explainer_id'])} on {prov['model_id']} / "
               f"{prov['dataset_id']}, target {prov.get('target', 'predicted')}, "
               f"{len(res.sample_ids)} sample(s), computed on {prov.get('device', '?')}. Parameters: "
               f"{', '.join(f'{k}={v}' for k, v in prov['params'].items()) or 'none'}. The button under the "
               "results opens it in the explorer, to change the model, samples or parameters.")
    shown = list(enumerate(res.sample_ids[:SHOWN]))
    for row in range(0, len(shown), 3):  # up to three samples side by side
        for column, (i, sample_id) in zip(st.columns(3), shown[row:row + 3]):
            with column:
                st.markdown(f"#### {caption(int(sample_id), model_classes, int(res.labels[i]), int(res.predictions[i]), float(res.confidences[i]))}")
                image = data.inputs([int(sample_id)])[0].numpy() if data.task == "image" else None
                ui.result_panel(res, i, image, data.feature_names or [], 0.6, key=f"shared-{sample_id}", details=False)
    if len(res.sample_ids) > SHOWN:
        st.caption(f"Showing {SHOWN} of {len(res.sample_ids)} samples; the CSV download has them all.")
    st.button("Change the model, samples or parameters", key="shared-edit-button",
              on_click=lambda: st.session_state.update({"shared-edit": res.key}))

st.title("Explain")
ui.follow_run_link("attribution")
models = {m["id"]: m for m in ui.usable_models()}
if not models:
    st.error("No model loads: fix the manifest entries on the Registry page.")
    st.stop()
first = next(iter(models.values()))

if "run" in st.query_params:
    opened = ui.open_linked(loupe.run)
    if st.session_state.get("shared-edit") != opened.key:
        shared_result(opened)
        st.stop()
    stored_preset = opened.provenance["params"].get("preset")
    defaults = ui.resolved_params(opened.provenance["model_id"], opened.provenance["explainer_id"], stored_preset)
    selection = Selection.from_run(opened.provenance, {**defaults, "preset": "loupe"} if stored_preset else defaults)
    for key in [k for k in st.session_state if str(k).startswith("ex-")]:
        del st.session_state[key]
else:
    try:
        selection = Selection.from_query(st.query_params.to_dict(), first["id"], first.get("dataset") or "")
    except SelectionError as err:
        st.error(f"This link cannot be read: {err}")
        selection = Selection(first["id"], first.get("dataset") or "")

if selection.model not in models:
    st.error(f"Unknown model {selection.model!r}; known: {', '.join(models)}")
    selection = Selection(first["id"], first.get("dataset") or "")
ui.seed("ex-model", selection.model)
targets = [*TARGETS, *map(str, range(len(models[selection.model]["classes"])))]
ui.seed("ex-target", selection.target if selection.target in targets else "predicted")
ui.seed("ex-samples", list(selection.samples))

top = st.columns([2, 2, 1, 1])
model = models[top[0].selectbox("Model", list(models), key="ex-model")]
datasets = ui.datasets_for(model)
if not datasets:
    st.error(f"No registered dataset matches {model['id']}'s inputs {model['input_shape']}.")
    st.stop()
ui.seed("ex-dataset", selection.dataset if selection.dataset in datasets else datasets[0])
if st.session_state["ex-dataset"] not in datasets:
    st.session_state["ex-dataset"] = datasets[0]
dataset_id = top[1].selectbox("Dataset", datasets, key="ex-dataset")
classes = model["classes"]
targets = [*TARGETS, *map(str, range(len(classes)))]
if st.session_state["ex-target"] not in targets:
    st.session_state["ex-target"] = "predicted"
target = top[2].selectbox("Target", targets, key="ex-target", help="explain the predicted class, the label or one class",
                          format_func=lambda t: t if t in TARGETS else f"class {classes[int(t)]}")
opacity = top[3].slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="ex-opacity")
dataset = loupe.dataset(dataset_id)
image_data = dataset.task == "image"

# -- gallery -------------------------------------------------------------------------------------
chosen_ids: list[int] = [i for i in st.session_state["ex-samples"] if 0 <= i < len(dataset)]
if len(chosen_ids) < len(st.session_state["ex-samples"]):
    st.warning(f"Ignored sample ids outside 0…{len(dataset) - 1}: "
               f"{', '.join(str(i) for i in st.session_state['ex-samples'] if i not in chosen_ids)}")


def toggle(sample_id: int) -> None:
    ids = st.session_state["ex-samples"]
    st.session_state["ex-samples"] = [i for i in ids if i != sample_id] if sample_id in ids else [*ids, sample_id]


picked = ", ".join(f"#{i}" for i in chosen_ids) or "none"
ui.seed("ex-gallery-initially-open", not chosen_ids)
gallery = st.expander(f"Samples · {len(dataset)} in {dataset_id} · selected: {picked}",
                      expanded=st.session_state["ex-gallery-initially-open"], key="ex-gallery", on_change="rerun")
if gallery.open:  # closed (e.g. when a link opens a result) it costs nothing: no thumbnails, no predictions
    with gallery:
        controls = st.columns([1, 1.2, 2, 2], vertical_alignment="bottom")
        start = controls[0].number_input("From sample", 0, max(len(dataset) - 1, 0), step=GALLERY,
                                         key="ex-gallery-start")
        chosen_filter = GalleryFilter(
            misclassified=controls[1].toggle("Mistakes only", key="ex-gallery-wrong"),
            labels=tuple(controls[2].multiselect("Label", range(len(dataset.classes)), key="ex-gallery-labels",
                                                 format_func=lambda c: dataset.classes[c], placeholder="all classes")),
            confidence=controls[3].slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="ex-gallery-confidence",
                                          help="the model's probability of its predicted class"))
        try:
            rows, scanned = gallery_page(lambda ids: ui.predictions(model["id"], dataset_id, ids), int(start),
                                         len(dataset), chosen_filter, GALLERY)
        except loupe.user_errors() as err:
            st.error(str(err))
            st.stop()
        if chosen_filter.active:
            found = f"{len(rows)} matching sample(s) among #{int(start)}…#{scanned - 1}" if scanned > start else ""
            note, more = st.columns([5, 1], vertical_alignment="center")
            note.caption(f"{found or 'No samples left'}." + (" Next scans on." if scanned < len(dataset) else ""))
            if scanned < len(dataset):
                more.button("Next", key="ex-gallery-next", width="stretch",
                            on_click=lambda: st.session_state.update({"ex-gallery-start": scanned}))
        ids = tuple(row["sample_id"] for row in rows)
        pictures = ui.thumbnails(dataset_id, ids) if image_data else [None] * len(ids)
        columns = st.columns(6)
        for k, (row, picture) in enumerate(zip(rows, pictures)):
            with columns[k % 6]:
                text = caption(row["sample_id"], classes, row["label"], row["prediction"], row["confidence"])
                if picture is not None:
                    st.image(picture, caption=text, width="stretch")
                else:
                    st.caption(text)
                st.session_state[f"ex-pick-{row['sample_id']}"] = row["sample_id"] in chosen_ids
                st.checkbox(f"select #{row['sample_id']}", key=f"ex-pick-{row['sample_id']}", on_change=toggle,
                            args=(row["sample_id"],))

# -- explainers and their parameters ---------------------------------------------------------------
available = ui.explainers_for(model)
unknown = [e for e in selection.explainers if e not in available]
if unknown:
    st.error(f"Unknown or inapplicable explainer(s) for {model['id']}: {', '.join(unknown)}")
ui.seed("ex-explainers", [e for e in selection.explainers if e in available])
st.session_state["ex-explainers"] = [e for e in st.session_state["ex-explainers"] if e in available]
chosen = st.multiselect("Explainers", list(available), key="ex-explainers",
                        format_func=lambda e: f"{available[e]['title']} ({e})")
params: dict[str, dict] = {}
for explainer_id in chosen:
    with st.expander(f"{available[explainer_id]['title']} parameters"):
        st.caption(available[explainer_id]["description"])
        params[explainer_id] = ui.params_form(available[explainer_id], f"ex-p-{explainer_id}",
                                              selection.params.get(explainer_id, {}), model["id"])

current = Selection(model["id"], dataset_id, tuple(chosen_ids), tuple(chosen), params, target)
st.query_params.from_dict(current.to_query({e: ui.form_schema(available[e], model["id"], params[e].get("preset"))
                                            for e in chosen}))

if not chosen_ids or not chosen:
    st.info("Select samples in the gallery and at least one explainer.")
    st.stop()

# -- cost preview and run --------------------------------------------------------------------------
estimates, problems = [], []
for explainer_id in chosen:
    try:
        est = loupe.estimate(model["id"], dataset_id, chosen_ids, explainer_id, params[explainer_id], target)
    except loupe.user_errors() as err:
        problems.append(f"{explainer_id}: {err}")
        continue
    low, high = est.seconds
    estimates.append({
        "explainer": explainer_id, "samples": est.n_samples, "stored": est.n_cached,
        "forward passes": "–".join(dict.fromkeys(map(str, est.passes.forward))),
        "backward passes": "–".join(dict.fromkeys(map(str, est.passes.backward))),
        "predicted seconds": "–".join(dict.fromkeys(f"{s:.2g}" for s in (low, high))), "device": est.device,
    })
for problem in problems:
    st.error(problem)
if estimates:
    st.table(estimates, hide_index=True, border="horizontal")
st.caption("Cost preview: each explainer's passes per sample (plus prediction and metric curves) × the model's "
           "pass time measured on the worker. Stored samples cost nothing.")

if st.button("Explain", type="primary", key="ex-run", disabled=bool(problems)):
    for explainer_id in chosen:
        with st.status(f"{explainer_id}: {len(chosen_ids)} sample(s)…", expanded=True) as box:
            bar = st.progress(0.0)
            try:
                res = loupe.explain(model["id"], dataset_id, chosen_ids, explainer_id, params[explainer_id], target,
                                    progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                              text=f"{done}/{total} samples"))
            except loupe.user_errors() as err:
                box.update(label=f"{explainer_id}: failed", state="error")
                st.error(str(err))
                continue
            state = "from the store, no model pass" if res.cached else f"computed {res.provenance['computed']} sample(s)"
            box.update(label=f"{explainer_id}: {state}", state="complete", expanded=False)

# -- results side by side --------------------------------------------------------------------------
results = {e: loupe.stored(model["id"], dataset_id, chosen_ids, e, params[e], target) for e in chosen
           if not any(p.startswith(f"{e}:") for p in problems)}
ready = {e: r for e, r in results.items() if r is not None}
if not ready:
    st.info("Not computed yet: press Explain.")
    st.stop()
missing = [e for e in results if results[e] is None]
if missing:
    st.caption(f"Not computed yet for this selection: {', '.join(missing)}.")
switches = st.columns(2)
details = switches[0].toggle("Show deletion/insertion curves and method details (SAMP paths, OSA-DAS windows)",
                             key="ex-details")
interactive = switches[1].toggle("Interactive maps (hover for values)", key="ex-interactive",
                                 help="Plotly figures; off, the maps are images, which open faster")
for i, sample_id in enumerate(chosen_ids[:SHOWN]):
    any_res = next(iter(ready.values()))
    st.markdown(f"#### {caption(sample_id, classes, int(any_res.labels[i]), int(any_res.predictions[i]), float(any_res.confidences[i]))}")
    image = dataset.inputs([sample_id])[0].numpy() if image_data else None
    for column, (explainer_id, res) in zip(st.columns(len(ready)), ready.items()):
        with column:
            ui.result_panel(res, i, image, dataset.feature_names or [], opacity, key=f"res-{explainer_id}-{sample_id}",
                            details=details, interactive=interactive)
if len(chosen_ids) > SHOWN:
    st.caption(f"Showing {SHOWN} of {len(chosen_ids)} samples; the CSV downloads have them all.")

# -- sanity check of the shown explainers (cascading model randomisation; issue #17) -------------------
st.divider()
st_sanity.section(model["id"], dataset_id, chosen_ids, {e: params[e] for e in ready}, target, key="ex-sanity")
