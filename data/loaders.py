"""Loaders for user datasets declared in the manifest, one per ``kind``. Opening lists samples and
reads none of them (DESIGN.md, "Contracts: Dataset"); rows are read on access (``data.lazy``).

* ``image_folder``: one subfolder per class (class = folder name, sorted), images decoded with PIL
  on access, converted to 1 or 3 channels, optionally resized/centre-cropped, scaled to float32 in
  [0, 1]; files in sorted order give stable ids (``data.images``).
* ``npz``: arrays ``x`` (N×C×H×W or N×F), ``y`` (N) and optional ``masks`` (N×H×W), read with
  ``allow_pickle=False``; members stored uncompressed are memory-mapped.
* ``table``: CSV or Parquet streamed through DuckDB with parameterised paths; one label column,
  every other column a numeric feature (``data.tables``).

User datasets evaluate on every row (``train=None``) unless the entry sets ``test_fraction``, which
makes a seeded split. Every problem raises DatasetError naming the dataset and the file.
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from data.base import Dataset, DatasetError, Split, Task
from data.images import IMAGE_SUFFIXES, ImageFiles, Preprocess, inspect
from data.lazy import ArrayRows, Rows
from data.tables import TableRows, check_features, parquet_source, read_column, schema
from manifest import DatasetEntry


# -- labels --------------------------------------------------------------------------------------------
def _int_labels(entry: DatasetEntry, y: np.ndarray, classes: list[str], where: str) -> np.ndarray:
    """``y`` as int64 class indices in [0, len(classes)), or DatasetError."""
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DatasetError(f"dataset {entry.id!r}: {where} has non-integer labels")
    elif y.dtype.kind not in "iub":
        raise DatasetError(f"dataset {entry.id!r}: {where} labels must be integers, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if bad.size:
        raise DatasetError(
            f"dataset {entry.id!r}: {where} has labels {sorted(set(bad.tolist()))[:5]} outside 0..{len(classes) - 1} "
            f"({len(classes)} classes)"
        )
    return labels


def _default_classes(entry: DatasetEntry, y: np.ndarray) -> list[str]:
    """The entry's classes, else "0".."max label"."""
    if entry.classes is not None:
        return list(entry.classes)
    top = int(np.nanmax(y)) if y.size and y.dtype.kind in "iubf" else 0
    return [str(i) for i in range(max(top + 1, 2))]


def _named_labels(entry: DatasetEntry, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """String labels -> indices into the entry's classes (or the sorted distinct labels)."""
    if any(v is None for v in values):
        raise DatasetError(f"dataset {entry.id!r}: {where} has missing labels")
    names = [str(v) for v in values]
    classes = list(entry.classes) if entry.classes is not None else sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DatasetError(f"dataset {entry.id!r}: {where} has labels {unknown[:5]} not in classes {classes}")
    return np.array([index[n] for n in names], dtype=np.int64), classes


# -- splitting -----------------------------------------------------------------------------------------
def _split(entry: DatasetEntry, x: np.ndarray | Rows, y: np.ndarray, masks: np.ndarray | None
           ) -> tuple[Split, Split | None]:
    """Everything is the evaluation split, or a seeded split with ``test_fraction`` of the samples
    for evaluation (kept in file order so ids follow the file; lazy rows stay lazy)."""
    if entry.test_fraction is None:
        return Split(x, y, masks), None
    n_eval = math.ceil(len(x) * entry.test_fraction)
    if not 0 < n_eval < len(x):
        raise DatasetError(
            f"dataset {entry.id!r}: test_fraction {entry.test_fraction} of {len(x)} samples leaves a split empty"
        )
    order = np.random.default_rng(entry.seed).permutation(len(x))
    ev, tr = np.sort(order[:n_eval]), np.sort(order[n_eval:])

    def part(idx: np.ndarray) -> Split:
        rows = x.take(idx) if isinstance(x, Rows) else x[idx]
        return Split(rows, y[idx], masks[idx] if masks is not None else None)

    return part(ev), part(tr)


def _meta(entry: DatasetEntry) -> dict:
    return {"source": "manifest", "kind": entry.kind, "path": str(entry.path), "description": entry.description}


def _check_finite(entry: DatasetEntry, x: np.ndarray, where: str) -> None:
    if x.size and not np.all(np.isfinite(x)):
        first = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
        raise DatasetError(f"dataset {entry.id!r}: {where} has NaN or infinite values (first in sample {first})")


# -- image folder --------------------------------------------------------------------------------------
def _class_folders(entry: DatasetEntry) -> list[Path]:
    folders = sorted(p for p in entry.path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"dataset {entry.id!r}: {str(entry.path)!r} has no class subfolders (one folder per class)")
    if entry.classes is not None:
        extra = sorted({p.name for p in folders} - set(entry.classes))
        if extra:
            raise DatasetError(f"dataset {entry.id!r}: folders {extra} are not in classes {list(entry.classes)}")
        by_name = {p.name: p for p in folders}
        folders = [by_name.get(name, entry.path / name) for name in entry.classes]
    return folders


def _image_files(entry: DatasetEntry, folder: Path) -> list[str]:
    """The folder's image files in sorted order (one ``scandir``, no per-file ``stat``)."""
    try:
        with os.scandir(folder) as found:
            names = sorted(e.name for e in found
                           if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
    except OSError:
        names = []
    if not names:
        raise DatasetError(
            f"dataset {entry.id!r}: class folder {str(folder)!r} has no images ({sorted(IMAGE_SUFFIXES)})"
        )
    return [os.path.join(folder, name) for name in names]


def load_image_folder(entry: DatasetEntry) -> Dataset:
    """image_folder: ``path/<class>/<image>``, listed, not decoded: rows decode on access
    (``data.images.ImageFiles``). Channels default to 1 when every sampled header is greyscale."""
    folders = _class_folders(entry)
    per_class = [_image_files(entry, folder) for folder in folders]
    files = [f for names in per_class for f in names]
    y = np.repeat(np.arange(len(folders), dtype=np.int64), [len(names) for names in per_class])
    resizing = entry.image_size is not None or entry.resize is not None or entry.center_crop is not None
    channels, first = inspect(entry.id, files, entry.channels, exact_size=not resizing)
    prep = Preprocess(channels, entry.image_size, entry.resize, entry.center_crop)
    x = ImageFiles(entry.id, files, prep, prep.out_size(first))
    ev, tr = _split(entry, x, y, None)
    return Dataset(entry.id, "image", [p.name for p in folders], ev, tr, meta=_meta(entry), class_map=entry.class_map)


# -- npz -----------------------------------------------------------------------------------------------
SCAN_BYTES = 256 * 2**20
"""Memory-mapped inputs up to this size are checked for NaN/inf when the dataset opens (a quick
streamed pass); larger ones are checked as their rows are read, with the same message."""


def _mapped_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The .npy member stored uncompressed (``np.savez``) as a read-only memmap; None when it must be
    read whole (compressed). Object arrays raise ValueError, as ``np.load(allow_pickle=False)`` does."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {info.filename!r} has no local header")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:  # format 3.0 (utf-8 field names): read it whole
            return None
        shape, fortran, dtype = readers[version](handle)
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        offset = handle.tell()
    if not int(np.prod(shape)):
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _npz_arrays(entry: DatasetEntry) -> dict[str, np.ndarray]:
    """The arrays of the .npz: members stored uncompressed are memory-mapped (nothing is read),
    compressed ones are read into memory."""
    where = f"{str(entry.path)!r}"
    if not zipfile.is_zipfile(entry.path):  # np.load would try other formats and end with pickle advice
        raise DatasetError(f"dataset {entry.id!r}: cannot read {where} as a .npz: it is not a zip archive of .npy "
                           "arrays (what numpy.savez writes; Loupe needs arrays x and y in it)")
    try:
        with zipfile.ZipFile(entry.path) as archive:
            infos = {i.filename[:-4]: i for i in archive.infolist() if i.filename.endswith(".npy")}
        arrays = {name: _mapped_member(entry.path, info) for name, info in infos.items()}
        compressed = [name for name, a in arrays.items() if a is None]
        if compressed:
            with np.load(entry.path, allow_pickle=False) as data:
                arrays.update({name: data[name] for name in compressed})
        return arrays  # type: ignore[return-value]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # ValueError: pickled/object arrays
        raise DatasetError(f"dataset {entry.id!r}: cannot read {where} as a .npz of numeric arrays: {err}") from None


def _finite_check(entry: DatasetEntry, where: str) -> Callable[[np.ndarray, np.ndarray], None]:
    """A row check for :class:`ArrayRows`: NaN/inf in a row read raises DatasetError naming it."""
    def check(rows: np.ndarray, positions: np.ndarray) -> None:
        bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            raise DatasetError(f"dataset {entry.id!r}: {where} has NaN or infinite values "
                               f"(first in sample {int(positions[np.argmax(bad)])})")
    return check


def _inputs(entry: DatasetEntry, x: np.ndarray, where: str) -> np.ndarray | Rows:
    """``x`` as float32 samples: a memmap stays on disk as :class:`ArrayRows` (scanned for NaN/inf
    now when small), an in-memory array is converted and checked."""
    if isinstance(x, np.memmap):
        rows = ArrayRows(x, _finite_check(entry, where))
        if x.nbytes <= SCAN_BYTES:
            step = max(1, SCAN_BYTES // 16 // max(x[:1].nbytes, 1))
            for start in range(0, len(rows), step):
                rows[start:start + step]
        return rows
    x = x.astype(np.float32)
    _check_finite(entry, x, where)
    return x


def load_npz(entry: DatasetEntry) -> Dataset:
    """npz: ``x`` (N×C×H×W image or N×F tabular), integer ``y``, optional boolean ``masks`` (N×H×W).
    Arrays saved uncompressed (``np.savez``) open memory-mapped, so only the rows used are read."""
    where = f"{str(entry.path)!r}"
    arrays = _npz_arrays(entry)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(f"dataset {entry.id!r}: {where} lacks arrays {missing}; it has {sorted(arrays)}")
    x, y, masks = arrays["x"], np.asarray(arrays["y"]), arrays.get("masks")
    if x.dtype.kind not in "iubf" or x.ndim not in (2, 4):
        raise DatasetError(
            f"dataset {entry.id!r}: x in {where} must be a numeric N×C×H×W or N×F array, "
            f"got {x.dtype} {list(x.shape)}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"dataset {entry.id!r}: y in {where} has shape {list(y.shape)} but x has {len(x)} samples")
    if masks is not None and (masks.shape != (len(x), *x.shape[2:]) or x.ndim != 4):
        raise DatasetError(
            f"dataset {entry.id!r}: masks in {where} has shape {list(masks.shape)}; expected {[len(x), *x.shape[2:]]}"
        )
    inputs = _inputs(entry, x, f"x in {where}")
    classes = _default_classes(entry, y)
    labels = _int_labels(entry, y, classes, f"y in {where}")
    if masks is not None and masks.dtype != bool:
        masks = np.asarray(masks).astype(bool)
    ev, tr = _split(entry, inputs, labels, masks)
    task: Task = "image" if x.ndim == 4 else "tabular"
    return Dataset(entry.id, task, classes, ev, tr, meta=_meta(entry), class_map=entry.class_map)


# -- table ---------------------------------------------------------------------------------------------
def load_table(entry: DatasetEntry) -> Dataset:
    """table: CSV/Parquet streamed through DuckDB (``data.tables``); ``label`` names the label column
    (strings or integers), the rest are numeric features, read by row number on access."""
    source = parquet_source(entry.id, entry.path)
    columns, n_rows = schema(entry.id, source, entry.path)
    if n_rows == 0:
        raise DatasetError(f"dataset {entry.id!r}: {str(entry.path)!r} has no data rows")
    names = [name for name, _ in columns]
    if entry.label not in names:
        raise DatasetError(f"dataset {entry.id!r}: label column {entry.label!r} not found; columns: {names}")
    features = [(name, kind) for name, kind in columns if name != entry.label]
    if not features:
        raise DatasetError(f"dataset {entry.id!r}: {str(entry.path)!r} has no feature columns besides {entry.label!r}")
    check_features(entry.id, source, features)
    raw = read_column(source, entry.label)
    where = f"label column {entry.label!r}"
    if np.ma.isMaskedArray(raw) and raw.mask.any():
        raise DatasetError(f"dataset {entry.id!r}: {where} has missing labels")
    raw = np.ma.getdata(raw)
    if raw.dtype.kind in "OUS":
        y, classes = _named_labels(entry, raw, where)
    else:
        classes = _default_classes(entry, raw)
        y = _int_labels(entry, raw, classes, where)
    x = TableRows(source, [name for name, _ in features], n_rows)
    ev, tr = _split(entry, x, y, None)
    return Dataset(entry.id, "tabular", classes, ev, tr, feature_names=x.features, meta=_meta(entry),
                   class_map=entry.class_map)


DATASET_LOADERS: dict[str, Callable[[DatasetEntry], Dataset]] = {
    "image_folder": load_image_folder,
    "npz": load_npz,
    "table": load_table,
}


def load_dataset(entry: DatasetEntry) -> Dataset:
    """Load a manifest dataset with the loader for its kind."""
    return DATASET_LOADERS[entry.kind](entry)


def source_stamp(path: Path) -> tuple:
    """What changes when a dataset or weights file changes: (mtime, size) of a file; for a folder,
    the mtimes of it and its immediate subfolders (adding or removing an image updates its folder)."""
    try:
        if path.is_dir():
            return tuple((p.name, p.stat().st_mtime_ns) for p in [path, *sorted(path.iterdir())] if p.is_dir())
        st = path.stat()
    except OSError:
        return ()
    return st.st_mtime_ns, st.st_size
