"""The user manifest: a TOML file that registers the user's own models and datasets.

``read_manifest`` parses and validates the file into typed, frozen entries. A bad entry becomes one
:class:`EntryError` (all its problems joined) and never hides the good ones; a TOML syntax error is a
single error for the whole file, so built-in models keep working. Validation here is cheap and needs
no torch: keys, types, kinds, ids, paths. Loading the files and running the models happens later, in
``model_registry.loaders`` and ``data.loaders``. This module is configuration shared by both, below
them in the layers: it imports neither (the registries pass in the built-in ids it checks against).

Example::

    [[model]]
    id = "my_net"
    kind = "torchscript"          # torchscript | state_dict | exported | sklearn
    path = "/abs/path/model.pt"   # or relative to the manifest's folder
    task = "image"                # image | tabular
    input_shape = [3, 64, 64]
    classes = ["circle", "square"]  # leave out for ImageNet-1k's 1000 classes

    [[dataset]]
    id = "my_images"
    kind = "image_folder"         # image_folder | npz | table
    path = "images"

Preprocessing: a model whose checkpoint expects normalised input gives ``mean`` and ``std`` (Loupe
puts ``(x - mean) / std`` inside the model handle, so explainers see [0, 1] pixels); an image
folder gives ``image_size = [H, W]``, or ``resize = 256`` (shorter side) and ``center_crop = 224``.
A dataset's ``class_map = { folder = "model class" }`` says which model class a dataset class is
when the names differ (``data.classes``).
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
FACTORY_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
MODEL_KINDS = ("torchscript", "state_dict", "exported", "sklearn")
DATASET_KINDS = ("image_folder", "npz", "table")
TASKS = ("image", "tabular")
# Dataset kinds whose ``path`` is a folder; every other entry points at a file.
FOLDER_KINDS = frozenset({"image_folder"})


@dataclass(frozen=True)
class EntryError:
    """One rejected manifest entry. ``kind`` is "model", "dataset" or "manifest" (whole file);
    ``id`` is the entry's id as written (None when it has none)."""

    kind: str
    id: str | None
    reason: str

    def __str__(self) -> str:
        who = f"{self.kind} {self.id!r}" if self.id is not None else self.kind
        return f"{who}: {self.reason}"


@dataclass(frozen=True)
class ModelEntry:
    """A validated ``[[model]]`` entry; ``path`` is absolute."""

    id: str
    kind: str
    path: Path
    task: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...] | None = None
    """None: the ImageNet-1k classes (the model must output 1000 logits)."""
    value_range: tuple[float, float] = (0.0, 1.0)
    dataset: str | None = None
    factory: str | None = None
    factory_kwargs: Mapping[str, Any] = field(default_factory=dict)
    trust: bool = False
    normalize_mean: tuple[float, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    gradcam_layer: str | None = None
    layers: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    """A validated ``[[dataset]]`` entry; ``path`` is absolute."""

    id: str
    kind: str
    path: Path
    classes: tuple[str, ...] | None = None
    label: str | None = None
    image_size: tuple[int, int] | None = None
    resize: int | None = None
    center_crop: tuple[int, int] | None = None
    channels: int | None = None
    class_map: Mapping[str, str | int] | None = None
    test_fraction: float | None = None
    seed: int = 0
    description: str = ""


@dataclass
class Manifest:
    """The parsed manifest: valid entries plus one error per rejected entry."""

    path: Path
    models: list[ModelEntry] = field(default_factory=list)
    datasets: list[DatasetEntry] = field(default_factory=list)
    errors: list[EntryError] = field(default_factory=list)

    def model(self, model_id: str) -> ModelEntry | None:
        """The valid model entry with this id, if any."""
        return next((m for m in self.models if m.id == model_id), None)

    def dataset(self, dataset_id: str) -> DatasetEntry | None:
        """The valid dataset entry with this id, if any."""
        return next((d for d in self.datasets if d.id == dataset_id), None)

    def error(self, kind: str, entry_id: str) -> EntryError | None:
        """The error recorded for the ``kind`` entry with this id, if it was rejected."""
        return next((e for e in self.errors if e.kind == kind and e.id == entry_id), None)


# -- value parsers: each returns the converted value or raises ValueError saying what is wrong ---------
def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(f"must match [A-Za-z0-9_.-]+, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {list(options)}, got {value!r}")
        return value

    return parse


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return float(value)


def _list_of(item: Callable[[Any], Any], length: int | None = None) -> Callable[[Any], tuple]:
    def parse(value: Any) -> tuple:
        if not isinstance(value, list) or not value or (length is not None and len(value) != length):
            size = f"{length} items" if length is not None else "at least one item"
            raise ValueError(f"must be a list of {size}, got {value!r}")
        return tuple(item(v) for v in value)

    return parse


def _unique_names(value: Any) -> tuple[str, ...]:
    names = _list_of(_text)(value)
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"names must be unique; repeated: {repeated}")
    return names


def _classes(value: Any) -> tuple[str, ...]:
    names = _unique_names(value)
    if len(names) < 2:
        raise ValueError(f"needs at least 2 classes, got {list(names)}")
    return names


def _value_range(value: Any) -> tuple[float, float]:
    low, high = _list_of(_number, 2)(value)
    if not low < high:
        raise ValueError(f"must be [low, high] with low < high, got {value!r}")
    return low, high


def _factory(value: Any) -> str:
    if not isinstance(value, str) or not FACTORY_PATTERN.fullmatch(value):
        raise ValueError(f"must look like 'package.module:callable', got {value!r}")
    return value


def _positive_number(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return number


def _crop(value: Any) -> tuple[int, int]:
    """``224`` or ``[224, 224]`` (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _positive_int(value), value
    return _list_of(_positive_int, 2)(value)


def _class_map(value: Any) -> dict[str, str | int]:
    """A table: dataset class -> model class name or index."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"must be a table such as {{ cat = \"tabby\", dog = 207 }}, got {value!r}")
    for key, target in value.items():
        name_ok = isinstance(target, str) and target != ""
        index_ok = isinstance(target, int) and not isinstance(target, bool) and target >= 0
        if not (name_ok or index_ok):
            raise ValueError(f"maps {key!r} to {target!r}; give a model class name or an index ≥ 0")
    return dict(value)


def _table(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of keyword arguments, got {value!r}")
    return value


def _fraction(value: Any) -> float:
    number = _number(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"must be strictly between 0 and 1, got {value!r}")
    return number


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a non-negative integer, got {value!r}")
    return value


def _channels(value: Any) -> int:
    if value not in (1, 3) or isinstance(value, bool):
        raise ValueError(f"must be 1 or 3, got {value!r}")
    return value


@dataclass(frozen=True)
class _Key:
    """How one manifest key is parsed; ``kinds`` limits it to some entry kinds (None: all)."""

    parse: Callable[[Any], Any]
    required: bool = False
    kinds: frozenset[str] | None = None


_MODEL_KEYS: dict[str, _Key] = {
    "id": _Key(_ident, required=True),
    "kind": _Key(_choice(MODEL_KINDS), required=True),
    "path": _Key(_text, required=True),
    "task": _Key(_choice(TASKS), required=True),
    "input_shape": _Key(_list_of(_positive_int), required=True),
    "classes": _Key(_classes),
    "value_range": _Key(_value_range),
    "dataset": _Key(_ident),
    "factory": _Key(_factory, kinds=frozenset({"state_dict"})),
    "factory_kwargs": _Key(_table, kinds=frozenset({"state_dict"})),
    "trust": _Key(_boolean, kinds=frozenset({"state_dict", "sklearn"})),
    "normalize_mean": _Key(_list_of(_number)),
    "mean": _Key(_list_of(_number)),
    "std": _Key(_list_of(_positive_number)),
    "gradcam_layer": _Key(_text),
    "layers": _Key(_unique_names),
    "description": _Key(_text),
}

_DATASET_KEYS: dict[str, _Key] = {
    "id": _Key(_ident, required=True),
    "kind": _Key(_choice(DATASET_KINDS), required=True),
    "path": _Key(_text, required=True),
    "classes": _Key(_classes),
    "label": _Key(_text, kinds=frozenset({"table"})),
    "image_size": _Key(_list_of(_positive_int, 2), kinds=frozenset({"image_folder"})),
    "resize": _Key(_positive_int, kinds=frozenset({"image_folder"})),
    "center_crop": _Key(_crop, kinds=frozenset({"image_folder"})),
    "channels": _Key(_channels, kinds=frozenset({"image_folder"})),
    "class_map": _Key(_class_map),
    "test_fraction": _Key(_fraction),
    "seed": _Key(_seed),
    "description": _Key(_text),
}


# -- cross-key checks: each returns a problem or None --------------------------------------------------
def _check_shape_for_task(v: dict) -> str | None:
    dims = {"image": 3, "tabular": 1}.get(v.get("task", ""))
    shape = v.get("input_shape")
    if dims is None or shape is None or len(shape) == dims:
        return None
    layout = "[channels, height, width]" if dims == 3 else "[n_features]"
    return f"input_shape for task {v['task']!r} must be {layout}, got {list(shape)}"


def _check_normalize_mean(v: dict) -> str | None:
    mean, shape = v.get("normalize_mean"), v.get("input_shape")
    if mean is None or shape is None or len(mean) == shape[0]:
        return None
    return f"normalize_mean has {len(mean)} values but input_shape {list(shape)} has {shape[0]} channels/features"


def _check_mean_std(v: dict) -> str | None:
    mean, std, shape = v.get("mean"), v.get("std"), v.get("input_shape")
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        return "mean and std go together: give both (the checkpoint's input normalisation) or neither"
    if "normalize_mean" in v:
        return ("normalize_mean describes a normaliser inside the model, mean/std one Loupe adds in front of it; "
                "give one of them")
    if len(mean) != len(std) or (shape is not None and len(mean) != shape[0]):
        channels = f" and input_shape {list(shape)} has {shape[0]} channels/features" if shape is not None else ""
        return f"mean has {len(mean)} values, std {len(std)}{channels}; they must agree"
    return None


def _check_factory(v: dict) -> str | None:
    if v.get("kind") != "state_dict" or "factory" in v or v.get("trust"):
        return None
    return "kind 'state_dict' needs factory = 'package.module:callable' that builds the nn.Module"


def _check_sklearn(v: dict) -> str | None:
    if v.get("kind") != "sklearn":
        return None
    if v.get("task", "tabular") != "tabular":
        return "kind 'sklearn' is for tabular models (task = 'tabular')"
    if not v.get("trust"):
        return "kind 'sklearn' loads a pickle, which can run code; set trust = true if you trust this file"
    return None


def _check_factory_kwargs(v: dict) -> str | None:
    if "factory_kwargs" in v and "factory" not in v:
        return "factory_kwargs given without factory"
    return None


def _check_resizing(v: dict) -> str | None:
    if "image_size" in v and ("resize" in v or "center_crop" in v):
        return "image_size resizes to exactly [H, W]; resize/center_crop do it the torchvision way; give one of them"
    resize, crop = v.get("resize"), v.get("center_crop")
    if resize is not None and crop is not None and resize < min(crop):
        return f"resize {resize} (the shorter side) is smaller than center_crop {list(crop)}"
    return None


def _check_label(v: dict) -> str | None:
    if v.get("kind") == "table" and "label" not in v:
        return "kind 'table' needs label = '<column>' naming the label column"
    return None


_MODEL_CHECKS = (_check_shape_for_task, _check_normalize_mean, _check_mean_std, _check_factory, _check_factory_kwargs,
                 _check_sklearn)
_DATASET_CHECKS = (_check_label, _check_resizing)


def _resolve_path(raw: str, base: Path, folder: bool) -> Path:
    """Absolute path for ``raw`` (relative paths are relative to the manifest's folder). ``..``
    components are refused outright: a manifest entry should name its file, not climb to it."""
    if ".." in PurePath(raw).parts:
        raise ValueError(f"{raw!r} contains '..' (path traversal is not allowed); write the path without '..'")
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else base / path
    if folder and not path.is_dir():
        raise ValueError(f"folder {str(path)!r} does not exist")
    if not folder and not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist")
    return path


def _parse_entry(table: Any, keys: dict[str, _Key], checks: tuple, base: Path) -> tuple[dict, list[str]]:
    """Parsed values and the list of problems of one ``[[model]]``/``[[dataset]]`` table."""
    if not isinstance(table, dict):
        return {}, [f"must be a table, got {table!r}"]
    problems: list[str] = []
    unknown = sorted(set(table) - set(keys))
    if unknown:
        problems.append(f"unknown key(s) {unknown}; allowed keys: {sorted(keys)}")
    values: dict[str, Any] = {}
    kind = table.get("kind")
    for name, key in keys.items():
        if name not in table:
            if key.required:
                problems.append(f"missing required key {name!r}")
            continue
        if key.kinds is not None and isinstance(kind, str) and kind not in key.kinds:
            problems.append(f"key {name!r} does not apply to kind {kind!r} (only to {sorted(key.kinds)})")
            continue
        try:
            values[name] = key.parse(table[name])
        except ValueError as err:
            problems.append(f"{name} {err}")
    problems += [p for p in (check(values) for check in checks) if p]
    if "path" in values and "kind" in values:
        try:
            values["path"] = _resolve_path(values["path"], base, values.get("kind") in FOLDER_KINDS)
        except ValueError as err:
            problems.append(f"path {err}")
    return values, problems


def _entries(data: dict, section: str) -> list[Any]:
    """The tables of one ``[[section]]`` array (a single ``[section]`` table is reported upstream)."""
    value = data.get(section, [])
    return value if isinstance(value, list) else []


def _file_errors(data: dict) -> list[EntryError]:
    """Whole-file problems: unknown top-level keys, ``[model]`` written instead of ``[[model]]``."""
    errors = [
        EntryError("manifest", None, f"unknown top-level key {key!r}; expected [[model]] and [[dataset]] tables")
        for key in sorted(set(data) - {"model", "dataset"})
    ]
    errors += [
        EntryError("manifest", None, f"'{section}' must be an array of tables: write [[{section}]], not [{section}]")
        for section in ("model", "dataset")
        if section in data and not isinstance(data[section], list)
    ]
    return errors


def _section(
    tables: list[Any], kind: str, keys: dict[str, _Key], checks: tuple, base: Path, reserved: frozenset[str],
    extra: Callable[[dict], str | None] = lambda values: None,
) -> tuple[list[dict], list[EntryError]]:
    """Validate every table of one section: returns the valid values and one error per bad entry."""
    counts = Counter(t.get("id") for t in tables if isinstance(t, dict) and isinstance(t.get("id"), str))
    valid, errors = [], []
    for index, table in enumerate(tables, start=1):
        values, problems = _parse_entry(table, keys, checks, base)
        entry_id = values.get("id")
        if entry_id is not None and counts[entry_id] > 1:
            problems.append(f"id {entry_id!r} is used by {counts[entry_id]} [[{kind}]] entries; ids must be unique")
        if entry_id in reserved:
            problems.append(f"id {entry_id!r} is already taken by a built-in {kind}; choose another id")
        problems += [p for p in [extra(values)] if p]
        if problems:
            raw_id = table.get("id") if isinstance(table, dict) and isinstance(table.get("id"), str) else None
            where = f"[[{kind}]] entry #{index}"  # the position is all an entry without an id has
            reason = "; ".join(problems) + f" ({where})" if raw_id else f"{where}: " + "; ".join(problems)
            errors.append(EntryError(kind, raw_id, reason))
        else:
            valid.append(values)
    return valid, errors


def _known_dataset(declared: frozenset[str]) -> Callable[[dict], str | None]:
    """Check that a model's ``dataset`` names a built-in or declared dataset."""

    def check(values: dict) -> str | None:
        name = values.get("dataset")
        if name is None or name in declared:
            return None
        return f"dataset {name!r} is neither a built-in dataset nor a [[dataset]] entry; known: {sorted(declared)}"

    return check


def read_manifest(
    path: str | os.PathLike[str],
    reserved_models: frozenset[str] = frozenset(),
    reserved_datasets: frozenset[str] = frozenset(),
) -> Manifest:
    """Parse and validate the manifest at ``path``; a missing file is an empty manifest.

    ``reserved_*`` are built-in ids that manifest entries may not reuse. A model's ``dataset`` must
    name a built-in dataset or a ``[[dataset]]`` entry of this file.
    """
    path = Path(path)
    manifest = Manifest(path=path)
    if not path.is_file():
        return manifest
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        manifest.errors.append(EntryError("manifest", None, f"cannot read {str(path)!r}: {err}"))
        return manifest
    base = path.parent
    manifest.errors += _file_errors(data)
    tables = _entries(data, "dataset")
    datasets, dataset_errors = _section(tables, "dataset", _DATASET_KEYS, _DATASET_CHECKS, base, reserved_datasets)
    declared = reserved_datasets | {t["id"] for t in tables if isinstance(t, dict) and isinstance(t.get("id"), str)}
    models, model_errors = _section(
        _entries(data, "model"), "model", _MODEL_KEYS, _MODEL_CHECKS, base, reserved_models, _known_dataset(declared)
    )
    manifest.models = [ModelEntry(**v) for v in models]
    manifest.datasets = [DatasetEntry(**v) for v in datasets]
    manifest.errors += model_errors + dataset_errors
    return manifest


_CACHE: dict[tuple, tuple[tuple[int, int, int] | None, Manifest]] = {}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of the file, or None when it does not exist: changes whenever it is edited."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def cached_manifest(
    path: str | os.PathLike[str],
    reserved_models: frozenset[str] = frozenset(),
    reserved_datasets: frozenset[str] = frozenset(),
) -> Manifest:
    """``read_manifest``, re-read only when the file's inode, mtime or size changed, so entries added
    while the app runs appear on the next lookup without a restart. Only the newest version is kept
    per (path, reserved ids): the model and dataset registries each ask with their own."""
    path = Path(path)
    key, stamp = (path, reserved_models, reserved_datasets), _stamp(path)
    cached = _CACHE.get(key)
    if cached is None or cached[0] != stamp:
        cached = stamp, read_manifest(path, reserved_models, reserved_datasets)
        _CACHE[key] = cached
    return cached[1]


def current_manifest(reserved_models: frozenset[str] = frozenset(),
                     reserved_datasets: frozenset[str] = frozenset()) -> Manifest:
    """The manifest at ``store.paths.manifest_path()``, checked against the built-in ids the caller
    reserves (``model_registry.registry.current_manifest`` passes the zoo's and the built-in
    datasets'; ``data.registry`` the built-in datasets', all its entries depend on)."""
    from store.paths import manifest_path

    return cached_manifest(manifest_path(), reserved_models, reserved_datasets)
