"""The dataset registry: built-in datasets, manifest datasets and datasets registered in-process.

Same rules as the model registry: the manifest is re-read when it changes, loaded datasets are cached
and reloaded when their entry or their files change, and failures are remembered for listings.
"""
from __future__ import annotations

import threading
from typing import Callable

from data.base import Dataset, DatasetError
from data.loaders import load_dataset, source_stamp
from manifest import ID_PATTERN, DatasetEntry, Manifest, current_manifest

_LOCK = threading.RLock()
_LOADED: dict[str, tuple[tuple, Dataset]] = {}
_FAILED: dict[str, tuple[tuple, str]] = {}
_SESSION: dict[str, Dataset] = {}
# The task a dataset kind implies before loading (npz: decided by the array's shape).
_KIND_TASK = {"image_folder": "image", "table": "tabular"}


def _builtins() -> dict[str, Callable[[], Dataset]]:
    """The built-in datasets (``data.builtin.BUILTIN_DATASETS``), imported on use."""
    from data.builtin import BUILTIN_DATASETS

    return BUILTIN_DATASETS


def _manifest() -> Manifest:
    """The manifest's datasets, checked against the built-in dataset ids."""
    return current_manifest(reserved_datasets=frozenset(_builtins()))


def _stamp(entry: DatasetEntry) -> tuple:
    return entry, source_stamp(entry.path)


def _load_manifest_dataset(entry: DatasetEntry) -> Dataset:
    """Load (or reuse) a manifest dataset; failures are remembered for listings and re-raised."""
    stamp = _stamp(entry)
    cached = _LOADED.get(entry.id)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    failed = _FAILED.get(entry.id)
    if failed is not None and failed[0] == stamp:
        raise DatasetError(failed[1])
    try:
        ds = load_dataset(entry)
    except DatasetError as err:
        _FAILED[entry.id] = (stamp, str(err))
        raise
    _FAILED.pop(entry.id, None)
    _LOADED[entry.id] = (stamp, ds)
    return ds


def open_entry(entry: DatasetEntry) -> Dataset:
    """The dataset of a manifest entry (cached like ``get_dataset``): how a worker opens the dataset
    a job names, even when its own manifest differs from the submitter's."""
    with _LOCK:
        return _load_manifest_dataset(entry)


def origin(ds: Dataset) -> tuple[str, DatasetEntry | None] | None:
    """Where another process can open ``ds`` again: ("builtin", None), ("manifest", its entry), or
    None for a dataset only this process has (registered in-process, or built by hand)."""
    with _LOCK:
        if ds.id in _SESSION:
            return None
        if ds.id in _builtins():
            return ("builtin", None) if _LOADED.get(ds.id, ((), None))[1] is ds else None
        loaded = _LOADED.get(ds.id)
        if loaded is None or loaded[1] is not ds:
            return None
        entry = loaded[0][0]
        return "manifest", entry


def _load_builtin(dataset_id: str) -> Dataset:
    from data.builtin import load_builtin

    if dataset_id not in _LOADED:
        _LOADED[dataset_id] = ((), load_builtin(dataset_id))
    return _LOADED[dataset_id][1]


def get_dataset(dataset_id: str) -> Dataset:
    """The dataset with this id (cached). Raises DatasetError with the entry's reason for a rejected
    or failing manifest entry, and with the list of known ids for an unknown one."""
    with _LOCK:
        if dataset_id in _SESSION:
            return _SESSION[dataset_id]
        if dataset_id in _builtins():
            return _load_builtin(dataset_id)
        manifest = _manifest()
        entry = manifest.dataset(dataset_id)
        if entry is not None:
            return _load_manifest_dataset(entry)
        error = manifest.error("dataset", dataset_id)
        if error is not None:
            raise DatasetError(f"dataset {dataset_id!r} in {str(manifest.path)!r} is invalid: {error.reason}")
        known = sorted({*_SESSION, *_builtins(), *(d.id for d in manifest.datasets)})
        raise DatasetError(f"unknown dataset {dataset_id!r}; known: {known}")


def _builtin_row(dataset_id: str) -> dict:
    """A built-in dataset's row: its description when loaded, else what ``BUILTIN_INFO`` knows
    (listing must not generate hundreds of MB of images)."""
    from data.builtin import BUILTIN_INFO

    if dataset_id in _LOADED:
        return {**_LOADED[dataset_id][1].describe(), "source": "builtin", "status": "ok", "reason": ""}
    info = BUILTIN_INFO[dataset_id]
    return {"id": dataset_id, "source": "builtin", "status": "ok", "reason": "", "task": info.task,
            "classes": list(info.classes), "input_shape": list(info.input_shape)}


def _entry_row(entry: DatasetEntry) -> dict:
    """A manifest dataset's row: its description once loaded, its load error, or its entry."""
    stamp = _stamp(entry)
    loaded = _LOADED.get(entry.id)
    failed_stamp, reason = _FAILED.get(entry.id, ((), ""))
    reason = reason if failed_stamp == stamp else ""
    described = (
        loaded[1].describe() if loaded is not None and loaded[0] == stamp
        else {"id": entry.id, "task": _KIND_TASK.get(entry.kind)}
    )
    return {
        **described,
        "source": "manifest",
        "status": "error" if reason else "ok",
        "reason": reason,
        "kind": entry.kind,
        "path": str(entry.path),
        "description": entry.description,
    }


def list_datasets(check: bool = False) -> list[dict]:
    """Every known dataset as a dict with ``id``, ``source`` (builtin/manifest/session), ``status``
    ("ok"/"error") and ``reason``, plus task/classes/shape where known without loading;
    ``check=True`` loads each manifest dataset first to verify it."""
    with _LOCK:
        manifest = _manifest()
        if check:
            for entry in manifest.datasets:
                try:
                    _load_manifest_dataset(entry)
                except DatasetError:
                    pass  # recorded in _FAILED, shown below
        rows = [_builtin_row(i) for i in _builtins()]
        rows += [_entry_row(e) for e in manifest.datasets]
        rows += [
            {"id": e.id, "source": "manifest", "status": "error", "reason": e.reason}
            for e in manifest.errors
            if e.kind == "dataset" and e.id is not None
        ]
        rows += [{**d.describe(), "source": "session", "status": "ok", "reason": ""} for d in _SESSION.values()]
        return rows


def register_dataset(ds: Dataset) -> None:
    """Add an in-process dataset (e.g. from a notebook) under ``ds.id``; visible only in this process.
    Re-registering an id replaces it."""
    if not ID_PATTERN.fullmatch(ds.id):
        raise DatasetError(f"dataset id {ds.id!r} must match [A-Za-z0-9_.-]+")
    with _LOCK:
        if ds.id in _builtins() or _manifest().dataset(ds.id) is not None:
            raise DatasetError(f"dataset id {ds.id!r} is already used by a built-in or manifest dataset")
        _SESSION[ds.id] = ds
