"""Registry: every manifest entry with its validation status and reason, and forms that add a model
or a dataset by path or by upload. An entry is saved only after it loads (models are probed with a
forward pass): ``loupe.add_entry`` (model_registry/uploads.py). Layout only."""
from typing import Any

import pandas as pd
import streamlit as st

import loupe
from views import st_layout as ui
from views.access import require_access
from views.registry import entry_values

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Registry")
models, datasets, _ = ui.listings()
st.caption(f"Manifest: `{loupe.manifest_path()}` (re-read when it changes)")
if "rg-added" in st.session_state:
    st.success(st.session_state.pop("rg-added"))
for title, rows, columns in (
    ("Models", models, ["id", "status", "reason", "task", "input_shape", "classes", "dataset", "source"]),
    ("Datasets", datasets, ["id", "status", "reason", "task", "input_shape", "classes", "source"]),
):
    st.subheader(title)
    frame = pd.DataFrame(rows)
    st.dataframe(frame[[c for c in columns if c in frame.columns]], hide_index=True, width="stretch")
    for row in rows:
        if row.get("status") == "error":
            st.error(f"{row['id']}: {row.get('reason', '')}")


def file_source(prefix: str, types: list[str] | None) -> str | Any:
    """A path typed on the server, or an uploaded file (saved only when the entry is added)."""
    how = st.radio("File", ["path on the server", "upload"], horizontal=True, key=f"{prefix}-how")
    if how == "path on the server":
        return st.text_input("Path", key=f"{prefix}-path", help="absolute, or relative to the manifest's folder")
    return st.file_uploader(f"Upload (at most {loupe.max_upload_bytes() / 2**20:g} MB)", type=types, key=f"{prefix}-file")


def register(section: str, fields: dict, lists: dict) -> None:
    """Save an uploaded file under $LOUPE_HOME/uploads/, then validate and add the entry."""
    try:
        source = fields.get("path")
        if source is not None and not isinstance(source, str):
            fields = {**fields, "path": str(loupe.save_upload(source.name, source))}
        entry = loupe.add_entry(section, entry_values(fields, lists))
    except loupe.user_errors() as err:
        st.error(f"Not saved: {err}")
        return
    ui.listings.clear()
    st.session_state["rg-added"] = f"Added {section} {entry.id!r}; it is listed below and usable on every page."
    st.rerun()


model_tab, dataset_tab = st.tabs(["Add a model", "Add a dataset"])
with model_tab:
    top: tuple[Any, ...] = st.columns(3)
    fields: dict[str, Any] = {"id": top[0].text_input("Id", key="rg-m-id"), "kind": top[1].selectbox("Kind", loupe.MODEL_KINDS, key="rg-m-kind"),
              "task": top[2].selectbox("Task", loupe.TASKS, key="rg-m-task")}
    fields["path"] = file_source("rg-m", ["pt", "pt2", "pth", "ts"])
    shape = st.columns(3)
    fields["input_shape"] = shape[0].text_input("Input shape", key="rg-m-shape", help="3,64,64 for images; 30 for tables")
    fields["classes"] = shape[1].text_input("Classes", key="rg-m-classes", help="comma-separated class names")
    fields["dataset"] = shape[2].text_input("Default dataset (optional)", key="rg-m-dataset")
    if fields["kind"] == "state_dict":
        fields["factory"] = st.text_input("Factory", key="rg-m-factory", help="package.module:callable that builds the nn.Module")
        fields["trust"] = st.checkbox("Trust pickled objects in this file (they can run code)", key="rg-m-trust")
    if st.button("Validate and add the model", type="primary", key="rg-m-add"):
        register("model", fields, {"input_shape": int, "classes": str})
with dataset_tab:
    top = st.columns(2)
    fields = {"id": top[0].text_input("Id", key="rg-d-id"), "kind": top[1].selectbox("Kind", loupe.DATASET_KINDS, key="rg-d-kind")}
    if fields["kind"] == "image_folder":
        fields["path"] = st.text_input("Folder", key="rg-d-path", help="one sub-folder per class")
        fields["image_size"] = st.text_input("Image size (optional)", key="rg-d-size", help="height,width")
    else:
        fields["path"] = file_source("rg-d", ["npz", "csv", "parquet"])
    if fields["kind"] == "table":
        fields["label"] = st.text_input("Label column", key="rg-d-label")
    if st.button("Validate and add the dataset", type="primary", key="rg-d-add"):
        register("dataset", fields, {"image_size": int})
