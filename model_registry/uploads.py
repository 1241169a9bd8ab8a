"""Adding models and datasets from the app: uploaded files and validated manifest entries.

The Registry page (and anyone else) uses three functions; their names are stable:

* :func:`save_upload(name, data) <save_upload>`: store an uploaded file under
  ``$LOUPE_HOME/uploads/<sha256[:16]>/<safe name>`` and return its path. The size limit is
  ``LOUPE_MAX_UPLOAD_MB`` (default 200 MB); the name is reduced to a safe base name (no folders, no
  ``..``, no hidden or odd characters); the file is written to a temporary name and published with
  ``os.replace``, so no reader ever sees half a file. Identical content lands on the same path.
* :func:`add_entry(section, values) <add_entry>`: add a ``[[model]]`` or ``[[dataset]]`` entry to
  the manifest only after it validates: the keys are checked by the manifest parser, then the model
  is loaded and probed with a forward pass (``model_registry.loaders.load_model``) or the dataset
  is loaded (``data.loaders.load_dataset``). The manifest is rewritten atomically; on any problem it
  is left untouched and :class:`RegistrationError` says what is wrong.
* :func:`max_upload_bytes`: the limit in force.

Uploads are limited to single files (model weights, ``.npz`` arrays, CSV/Parquet tables); an image
folder is registered by its path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Iterator

from manifest import DatasetEntry, ModelEntry, read_manifest

DEFAULT_MAX_UPLOAD_MB = 200
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SECTIONS = ("model", "dataset")
_CHUNK = 1 << 20


class RegistrationError(ValueError):
    """An upload or a new manifest entry was refused; the message says why. Nothing was saved."""


def max_upload_bytes() -> int:
    """The upload size limit in bytes, from ``LOUPE_MAX_UPLOAD_MB`` (default 200)."""
    raw = os.environ.get("LOUPE_MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB))
    try:
        megabytes = float(raw)
    except ValueError:
        raise RegistrationError(f"LOUPE_MAX_UPLOAD_MB must be a number of megabytes, got {raw!r}") from None
    if megabytes <= 0:
        raise RegistrationError(f"LOUPE_MAX_UPLOAD_MB must be positive, got {raw!r}")
    return int(megabytes * 2**20)


def safe_filename(name: str) -> str:
    """The base name of ``name`` (either slash style) with characters outside ``A-Za-z0-9._-``
    replaced by ``_`` and leading dots removed; raises RegistrationError when nothing usable is left."""
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    cleaned = _SAFE_CHARS.sub("_", base).lstrip(".")[:120]
    if not cleaned.strip("_"):
        raise RegistrationError(f"the file name {name!r} has no usable characters; rename the file")
    return cleaned


def _uploads_dir() -> Path:
    from store.paths import loupe_home

    return loupe_home() / "uploads"


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: stream.read(_CHUNK), b"")


def save_upload(name: str, data: bytes | BinaryIO) -> Path:
    """Store an uploaded file (bytes or a binary file object) and return its path; refuses files
    over :func:`max_upload_bytes` and empty files before anything is published."""
    limit = max_upload_bytes()
    target_name = safe_filename(name)
    root = _uploads_dir()
    root.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            chunks = [bytes(data)] if isinstance(data, (bytes, bytearray, memoryview)) else _read_chunks(data)
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise RegistrationError(
                        f"{target_name} is larger than the upload limit of {limit / 2**20:.3g} MB "
                        "(LOUPE_MAX_UPLOAD_MB); register the file by its path instead")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise RegistrationError(f"{target_name} is empty")
        folder = root / digest.hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        path = folder / target_name
        os.replace(tmp, path)
        return path
    finally:
        tmp.unlink(missing_ok=True)


# -- manifest entries --------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    """One TOML value: strings (JSON escapes are valid TOML basic-string escapes), numbers,
    booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise RegistrationError(f"cannot write {value!r} ({type(value).__name__}) into the manifest")


def entry_toml(section: str, values: dict[str, Any]) -> str:
    """The ``[[section]]`` table for ``values`` (None values are left out)."""
    lines = [f"[[{section}]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def _check_loads(section: str, entry: ModelEntry | DatasetEntry) -> None:
    """Load the model (with its probing forward pass) or the dataset; any failure is a
    RegistrationError naming the entry."""
    from data.base import DatasetError
    from model_registry.base import ModelError

    try:
        if section == "model":
            from model_registry.loaders import load_model

            load_model(entry, "cpu")  # type: ignore[arg-type]
        else:
            from data.loaders import load_dataset

            load_dataset(entry)  # type: ignore[arg-type]
    except (ModelError, DatasetError, ValueError, OSError) as err:
        raise RegistrationError(f"{section} {entry.id!r} does not load: {err}") from None


def add_entry(section: str, values: dict[str, Any], manifest: Path | None = None) -> ModelEntry | DatasetEntry:
    """Validate a new ``[[model]]``/``[[dataset]]`` entry and append it to the manifest (default:
    ``store.paths.manifest_path()``). Steps: the keys and paths are parsed as the manifest reader
    would (in a candidate copy of the file), the id must be new, the model or dataset must load; only
    then the candidate replaces the manifest. Returns the parsed entry."""
    from store.files import exclusive
    from store.paths import loupe_home, manifest_path

    if section not in _SECTIONS:
        raise RegistrationError(f"section must be one of {list(_SECTIONS)}, got {section!r}")
    path = Path(manifest) if manifest is not None else manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # App processes sharing the manifest add entries one at a time, so none is lost. The lock lives in
    # LOUPE_HOME, not beside the manifest, whose folder is the user's (and may be read-only).
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with exclusive(loupe_home() / "locks" / f"manifest-{name}.lock"):
        return _append_entry(path, section, values)


def _append_entry(path: Path, section: str, values: dict[str, Any]) -> ModelEntry | DatasetEntry:
    """:func:`add_entry`'s read, check and replace of the manifest at ``path`` (under its lock)."""
    from model_registry.registry import builtin_ids

    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    entry_id = values.get("id")
    reserved_models, reserved_datasets = builtin_ids()
    before = read_manifest(path, reserved_models, reserved_datasets)
    if entry_id in {e.id for e in (before.models if section == "model" else before.datasets)}:
        raise RegistrationError(f"a {section} with id {entry_id!r} is already registered; choose another id")
    text = (current.rstrip("\n") + "\n\n" if current.strip() else "") + entry_toml(section, values)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".toml")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        candidate = read_manifest(tmp, reserved_models, reserved_datasets)
        new_errors = [e for e in candidate.errors if e not in before.errors]
        if new_errors:
            raise RegistrationError("; ".join(str(e) for e in new_errors))  # "dataset 'id': what is wrong"
        entry = (candidate.model if section == "model" else candidate.dataset)(str(entry_id))
        if entry is None:
            raise RegistrationError(f"the {section} entry was not accepted by the manifest reader")
        _check_loads(section, entry)
        os.replace(tmp, path)
        return entry
    finally:
        tmp.unlink(missing_ok=True)
