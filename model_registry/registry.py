"""The model registry: built-in zoo models, manifest models and models registered in-process.

Lookups re-read the manifest when the file changed, so entries added while the app runs appear
without a restart. Loaded handles are cached per (id, device) and reloaded when the manifest entry or
the weights file (mtime, size) changes; a failed load is remembered the same way, so listings show
its reason without loading again.
"""
from __future__ import annotations

import threading
from typing import Any

import torch

from data.loaders import source_stamp
from manifest import ID_PATTERN, EntryError, Manifest, ModelEntry
from manifest import current_manifest as read_current_manifest
from model_registry.base import ModelError, ModelHandle, pick_device, weights_hash
from model_registry.loaders import entry_classes, load_model

_LOCK = threading.RLock()
_LOADED: dict[tuple[str, str], tuple[tuple, ModelHandle]] = {}
_FAILED: dict[str, tuple[tuple, str]] = {}
_SESSION: dict[str, ModelHandle] = {}


def _zoo() -> dict[str, Any]:
    """The built-in zoo (``model_registry.zoo.ZOO``), imported on use."""
    from model_registry.zoo import ZOO

    return ZOO


def builtin_ids() -> tuple[frozenset[str], frozenset[str]]:
    """Ids of the built-in models and datasets (imported on use: the zoo is not needed to parse)."""
    from data.builtin import BUILTIN_DATASETS

    return frozenset(_zoo()), frozenset(BUILTIN_DATASETS)


def current_manifest() -> Manifest:
    """The manifest (``manifest.current_manifest``), checked against the built-in model and dataset ids."""
    models, datasets = builtin_ids()
    return read_current_manifest(models, datasets)


def _device_key(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else pick_device()


def _stamp(entry: ModelEntry) -> tuple:
    """What a cached load (or failure) depends on: the entry, its weights file and, for a manifest
    dataset, that dataset's entry and files (so fixing the dataset clears a mismatch error)."""
    dataset = current_manifest().dataset(entry.dataset) if entry.dataset is not None else None
    dataset_stamp = (dataset, source_stamp(dataset.path)) if dataset is not None else ()
    return entry, source_stamp(entry.path), dataset_stamp


def _check_dataset(handle: ModelHandle) -> None:
    """A manifest model's default dataset must fit it: same sample shape, and labels that map to the
    model's classes (``data.classes``; how they map is recorded as ``meta["labels"]``)."""
    from data.base import DatasetError
    from data.registry import get_dataset

    if handle.dataset is None:
        return
    try:
        ds = get_dataset(handle.dataset)
    except DatasetError as err:
        raise ModelError(f"model {handle.id!r}: its dataset {handle.dataset!r} cannot be loaded: {err}") from err
    if tuple(ds.input_shape) != tuple(handle.input_shape):
        raise ModelError(
            f"model {handle.id!r} takes input_shape {list(handle.input_shape)} but its dataset {handle.dataset!r} "
            f"has samples of shape {list(ds.input_shape)}"
        )
    mapping = ds.class_map_for(handle.classes)
    if not mapping.mapped:
        raise ModelError(f"model {handle.id!r}: the labels of its dataset {handle.dataset!r} do not map to its "
                         f"classes: {mapping.problem}")
    handle.meta["labels"] = mapping.how


def _load_manifest_model(entry: ModelEntry, device: torch.device) -> ModelHandle:
    """Load (or reuse) a manifest model; failures are remembered for listings and re-raised."""
    stamp = _stamp(entry)
    key = (entry.id, str(device))
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    failed = _FAILED.get(entry.id)
    if failed is not None and failed[0] == stamp:
        raise ModelError(failed[1])
    try:
        handle = load_model(entry, device)
        _check_dataset(handle)
    except ModelError as err:
        _FAILED[entry.id] = (stamp, str(err))
        raise
    _FAILED.pop(entry.id, None)
    _LOADED[key] = (stamp, handle)
    return handle


def _load_zoo_model(model_id: str, device: torch.device) -> ModelHandle:
    from model_registry.zoo import load_zoo_model

    key = (model_id, str(device))
    if key not in _LOADED:
        _LOADED[key] = ((), load_zoo_model(model_id, device=device))
    return _LOADED[key][1]


def get_model(model_id: str, device: torch.device | str | None = None) -> ModelHandle:
    """The model with this id on ``device`` (default: cuda if present, else CPU).

    Raises ModelError with the entry's reason for a rejected or failing manifest entry, and with the
    list of known ids for an unknown one.
    """
    with _LOCK:
        if model_id in _SESSION:
            return _SESSION[model_id]
        dev = _device_key(device)
        if model_id in _zoo():
            return _load_zoo_model(model_id, dev)
        manifest = current_manifest()
        entry = manifest.model(model_id)
        if entry is not None:
            return _load_manifest_model(entry, dev)
        error = manifest.error("model", model_id)
        if error is not None:
            raise ModelError(f"model {model_id!r} in {str(manifest.path)!r} is invalid: {error.reason}")
        known = sorted({*_SESSION, *_zoo(), *(m.id for m in manifest.models)})
        raise ModelError(f"unknown model {model_id!r}; known: {known}")


def _entry_row(entry: ModelEntry) -> dict:
    stamp, reason = _FAILED.get(entry.id, ((), ""))
    reason = reason if stamp == _stamp(entry) else ""
    return {
        "id": entry.id,
        "source": "manifest",
        "status": "error" if reason else "ok",
        "reason": reason,
        "kind": entry.kind,
        "task": entry.task,
        "input_shape": list(entry.input_shape),
        "classes": entry_classes(entry),
        "dataset": entry.dataset,
        "path": str(entry.path),
        "description": entry.description,
    }


def _zoo_row(model_id: str) -> dict:
    """A zoo model's listing row: its handle's description (zoo models are small, so listing loads
    them on the CPU, which also verifies their weights), or its load error."""
    try:
        return {**get_model(model_id, "cpu").describe(), "status": "ok", "reason": ""}
    except ModelError as err:
        return {"id": model_id, "source": "zoo", "status": "error", "reason": str(err)}


def list_models(check: bool = False) -> list[dict]:
    """Every known model as a dict with ``id``, ``source`` (zoo/manifest/session), ``status``
    ("ok"/"error") and ``reason``. Manifest models are listed from their entries without loading;
    ``check=True`` loads each one first (on the CPU) so that its status is verified."""
    with _LOCK:
        manifest = current_manifest()
        if check:
            for entry in manifest.models:
                try:
                    _load_manifest_model(entry, torch.device("cpu"))
                except ModelError:
                    pass  # recorded in _FAILED, shown below
        rows = [_zoo_row(i) for i in _zoo()]
        rows += [_entry_row(e) for e in manifest.models]
        rows += [
            {"id": e.id, "source": "manifest", "status": "error", "reason": e.reason}
            for e in manifest.errors
            if e.kind == "model" and e.id is not None
        ]
        rows += [{**h.describe(), "status": "ok", "reason": ""} for h in _SESSION.values()]
        return rows


def manifest_errors() -> list[EntryError]:
    """Every rejected manifest entry (models, datasets, whole-file problems)."""
    return list(current_manifest().errors)


def register_model(handle: ModelHandle) -> None:
    """Add an in-process model (e.g. from a notebook) under ``handle.id`` and mark it
    ``source = "session"``: it exists only in this process, so Dask workers cannot load it by id.
    Re-registering an id replaces it."""
    if not ID_PATTERN.fullmatch(handle.id):
        raise ModelError(f"model id {handle.id!r} must match [A-Za-z0-9_.-]+")
    with _LOCK:
        if handle.id in _zoo() or current_manifest().model(handle.id) is not None:
            raise ModelError(f"model id {handle.id!r} is already used by a built-in or manifest model")
        handle.source = "session"
        # the cache key holds the weights hash: without it, new weights under an old id would be
        # served the old results (and the store refuses items without one)
        handle.weights_hash = handle.weights_hash or weights_hash(handle.module)
        _SESSION[handle.id] = handle
