"""Batch: define a job (model, dataset slice, explainers and their parameters), watch its progress,
cancel it, resume it (finished chunks are stored, so a restart skips them), list past batches and
export their results as CSV or Parquet. Batches run in a background thread of the app. Layout only."""
import datetime

import streamlit as st

import loupe
from loupe import background
from views import st_layout as ui
from views.access import require_access

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Batch")
models = {m["id"]: m for m in ui.usable_models()}

st.markdown("**New batch**")
top = st.columns(3)
model_id = top[0].selectbox("Model", list(models), key="bt-model")
dataset_id = top[1].selectbox("Dataset", ui.datasets_for(models[model_id]), key="bt-dataset")
samples = top[2].text_input("Samples", "0:16", key="bt-samples", help="'a:b[:step]', '1,4,7' or 'all'")
available = ui.explainers_for(models[model_id])
st.session_state["bt-explainers"] = [e for e in st.session_state.get("bt-explainers", []) if e in available]
chosen = st.multiselect("Explainers", list(available), key="bt-explainers",
                        format_func=lambda e: f"{available[e]['title']} ({e})")
params: dict[str, dict] = {}
for explainer_id in chosen:
    with st.expander(f"{available[explainer_id]['title']} parameters"):
        params[explainer_id] = ui.params_form(available[explainer_id], f"bt-p-{explainer_id}", {})
if st.button("Start", type="primary", key="bt-start"):
    spec = background.BatchSpec(model_id, dataset_id, samples, params)
    try:
        record = background.start(spec)
        st.session_state["bt-watch"] = record.id
    except loupe.user_errors() as err:
        st.error(str(err))


def resume(spec: background.BatchSpec) -> None:
    """Start a batch again (the button's callback): finished chunks come from the store."""
    background.start(spec)


def watch(record: background.BatchRecord) -> None:
    """Progress of one batch, with cancel and resume, and its downloads once runs are stored."""
    spec = record.spec
    st.markdown(f"**Batch `{record.id}`** · {', '.join(spec.explainers)} on {spec.model} / {spec.dataset} "
                f"samples {spec.samples} · **{record.status}**")
    st.progress(record.done / max(record.total, 1), text=f"{record.done}/{record.total} sample explanations")
    if record.error:
        st.error(record.error)
    left, right = st.columns(2)
    if record.status == "running":
        left.button("Cancel", key=f"bt-cancel-{record.id}", on_click=background.cancel, args=(record.id,))
    else:
        left.button("Resume" if record.status != "done" else "Run again (from the store)", key=f"bt-resume-{record.id}",
                    on_click=resume, args=(spec,))
    if record.run_keys:  # the files are made when a button is pressed, not on every refresh of the progress
        batch_id = record.id
        right.download_button("Download CSV", lambda: background.export(batch_id, "csv"), file_name=f"batch-{batch_id}.csv",
                              mime="text/csv", key=f"bt-csv-{batch_id}", on_click="ignore")
        right.download_button("Download Parquet", lambda: background.export(batch_id, "parquet"),
                              file_name=f"batch-{batch_id}.parquet", mime="application/vnd.apache.parquet",
                              key=f"bt-parquet-{batch_id}", on_click="ignore")


def batches(live: bool) -> None:
    """The watched batch and the list of past batches, read from the same records in the same run
    (a fragment refreshed every second while a batch runs), so the table's counts are the progress
    bar's; when the last running batch ends, the page reruns once and stops refreshing."""
    past = background.list_batches()
    if live and not any(r.status == "running" for r in past):
        st.rerun()
    by_id = {r.id: r for r in past}
    if st.session_state.get("bt-watch") in by_id:
        with st.container(border=True):
            watch(by_id[st.session_state["bt-watch"]])
    st.subheader("Past batches")
    if not past:
        st.caption("No batches yet.")
        return
    rows = [{"id": r.id, "status": r.status, "model": r.spec.model, "dataset": r.spec.dataset,
             "samples": r.spec.samples, "explainers": ", ".join(r.spec.explainers),
             "progress": r.done / max(r.total, 1), "done": f"{r.done}/{r.total}",
             "started": datetime.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M")} for r in past]
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")})
    ui.seed("bt-open", past[0].id)
    opened = st.selectbox("Open a batch", list(by_id), key="bt-open")
    if opened != st.session_state.get("bt-watch"):
        st.button("Watch this batch", key="bt-open-go", on_click=lambda: st.session_state.update({"bt-watch": opened}))


running = any(r.status == "running" for r in background.list_batches())
st.fragment(batches, run_every=1.0 if running else None)(running)
