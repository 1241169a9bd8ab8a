"""Loaders for user datasets declared in the manifest, one per ``kind``.

* ``image_folder``: one subfolder per class (class = folder name, sorted), images read with PIL,
  converted to 1 or 3 channels, scaled to float32 in [0, 1]; files in sorted order give stable ids.
* ``npz``: arrays ``x`` (N×C×H×W or N×F), ``y`` (N) and optional ``masks`` (N×H×W), read with
  ``allow_pickle=False``.
* ``table``: CSV or Parquet read through DuckDB with a parameterised path; one label column, every
  other column a numeric feature.

User datasets evaluate on every row (``train=None``) unless the entry sets ``test_fraction``, which
makes a seeded split. Every problem raises DatasetError naming the dataset and the file.
"""
from __future__ import annotations

import math
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from data.base import Dataset, DatasetError, Split
from model_registry.manifest import DatasetEntry

if TYPE_CHECKING:  # PIL is imported on use
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
TABLE_QUERIES = {
    ".csv": "SELECT * FROM read_csv_auto(?, header=true, skip=0, delim=',', quote='\"', escape='\"', "
    "strict_mode=true, sample_size=-1)",
    ".parquet": "SELECT * FROM read_parquet(?)",
    ".pq": "SELECT * FROM read_parquet(?)",
}


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
def _split(entry: DatasetEntry, x: np.ndarray, y: np.ndarray, masks: np.ndarray | None) -> tuple[Split, Split | None]:
    """Everything is the evaluation split, or a seeded split with ``test_fraction`` of the samples
    for evaluation (kept in file order so ids follow the file)."""
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
        return Split(x[idx], y[idx], masks[idx] if masks is not None else None)

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


def _image_files(entry: DatasetEntry, folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DatasetError(
            f"dataset {entry.id!r}: class folder {str(folder)!r} has no images ({sorted(IMAGE_SUFFIXES)})"
        )
    return files


def _read_image(entry: DatasetEntry, path: Path) -> PILImage:
    """The decoded image. Images above PIL's ``MAX_IMAGE_PIXELS`` (about 89 million pixels) are
    refused before decoding: PIL only warns up to twice that, and decoding one costs gigabytes."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # UnidentifiedImageError and truncated files are OSErrors
        raise DatasetError(f"dataset {entry.id!r}: cannot read image {str(path)!r}: {err}") from None


def _image_array(
    entry: DatasetEntry, img: PILImage, path: Path, channels: int, size: tuple[int, int] | None
) -> np.ndarray:
    """One image as a C×H×W float32 array in [0, 1]."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    if entry.image_size is not None:
        height, width = entry.image_size
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    elif size is not None and img.size != size:
        raise DatasetError(
            f"dataset {entry.id!r}: image {str(path)!r} is {img.size[0]}x{img.size[1]} but earlier images are "
            f"{size[0]}x{size[1]} (width x height); set image_size = [H, W] to resize"
        )
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _is_grey(img: PILImage) -> bool:
    """Greyscale modes (1, L, LA, I, F…); palette images count as colour."""
    from PIL import Image

    return Image.getmodebase(img.mode) == "L"


def load_image_folder(entry: DatasetEntry) -> Dataset:
    """image_folder: ``path/<class>/<image>``; channels default to 1 when every image is greyscale."""
    folders = _class_folders(entry)
    files = [(label, f) for label, folder in enumerate(folders) for f in _image_files(entry, folder)]
    images = [_read_image(entry, f) for _, f in files]
    channels = entry.channels or (1 if all(_is_grey(img) for img in images) else 3)
    arrays: list[np.ndarray] = []
    for img, (_, path) in zip(images, files):
        size = (arrays[0].shape[2], arrays[0].shape[1]) if arrays else None
        arrays.append(_image_array(entry, img, path, channels, size))
    x = np.stack(arrays)
    y = np.array([label for label, _ in files], dtype=np.int64)
    ev, tr = _split(entry, x, y, None)
    return Dataset(entry.id, "image", [p.name for p in folders], ev, tr, meta=_meta(entry))


# -- npz -----------------------------------------------------------------------------------------------
def load_npz(entry: DatasetEntry) -> Dataset:
    """npz: ``x`` (N×C×H×W image or N×F tabular), integer ``y``, optional boolean ``masks`` (N×H×W)."""
    where = f"{str(entry.path)!r}"
    if not zipfile.is_zipfile(entry.path):  # np.load would try other formats and end with pickle advice
        raise DatasetError(f"dataset {entry.id!r}: cannot read {where} as a .npz: it is not a zip archive of .npy "
                           "arrays (what numpy.savez writes; Loupe needs arrays x and y in it)")
    try:
        with np.load(entry.path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # ValueError: pickled/object arrays
        raise DatasetError(f"dataset {entry.id!r}: cannot read {where} as a .npz of numeric arrays: {err}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(f"dataset {entry.id!r}: {where} lacks arrays {missing}; it has {sorted(arrays)}")
    x, y, masks = arrays["x"], arrays["y"], arrays.get("masks")
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
    x = x.astype(np.float32)
    _check_finite(entry, x, f"x in {where}")
    classes = _default_classes(entry, y)
    labels = _int_labels(entry, y, classes, f"y in {where}")
    ev, tr = _split(entry, x, labels, masks.astype(bool) if masks is not None else None)
    task = "image" if x.ndim == 4 else "tabular"
    return Dataset(entry.id, task, classes, ev, tr, meta=_meta(entry))


# -- table ---------------------------------------------------------------------------------------------
def _read_table(entry: DatasetEntry) -> dict[str, np.ndarray]:
    """Columns of a CSV/Parquet file through DuckDB, the path bound as a parameter (never spliced
    into SQL)."""
    import duckdb

    query = TABLE_QUERIES.get(entry.path.suffix.lower())
    if query is None:
        raise DatasetError(
            f"dataset {entry.id!r}: {str(entry.path)!r} must end in one of {sorted(TABLE_QUERIES)} for kind 'table'"
        )
    try:
        with duckdb.connect() as con:
            return con.execute(query, [str(entry.path)]).fetchnumpy()
    except duckdb.Error as err:
        csv = entry.path.suffix.lower() == ".csv"
        hint = " (rows with a different number of fields than the header?)" if csv else ""
        raise DatasetError(
            f"dataset {entry.id!r}: cannot read {str(entry.path)!r}{hint}: {str(err).splitlines()[0]}"
        ) from None


def _feature(entry: DatasetEntry, name: str, column: np.ndarray) -> np.ndarray:
    """One feature column as float64; missing, non-numeric or non-finite values raise DatasetError
    naming the column and the first bad row."""
    where = f"dataset {entry.id!r}: feature column {name!r}"
    if np.ma.isMaskedArray(column) and column.mask.any():
        raise DatasetError(f"{where} has missing values (first at row {int(np.flatnonzero(column.mask)[0])})")
    column = np.ma.getdata(column)
    if column.dtype.kind in "iubf":
        values = column.astype(np.float64)
    elif column.dtype.kind == "O":
        values = np.array([_number(where, row, v) for row, v in enumerate(column)], dtype=np.float64)
    else:
        raise DatasetError(f"{where} is not numeric (dtype {column.dtype})")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DatasetError(f"{where} has NaN or infinite values (first at row {int(bad[0])})")
    return values


def _number(where: str, row: int, value: object) -> float:
    """``float(value)`` for a text cell such as "inf" or "1e3"; anything else raises DatasetError."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(
            f"{where} is not numeric (row {row} holds {value!r}); every column other than the label must be a number"
        ) from None


def load_table(entry: DatasetEntry) -> Dataset:
    """table: CSV/Parquet; ``label`` names the label column (strings or integers), the rest are features."""
    columns = _read_table(entry)
    n_rows = len(next(iter(columns.values()))) if columns else 0
    if n_rows == 0:
        raise DatasetError(f"dataset {entry.id!r}: {str(entry.path)!r} has no data rows")
    if entry.label not in columns:
        raise DatasetError(f"dataset {entry.id!r}: label column {entry.label!r} not found; columns: {list(columns)}")
    names = [c for c in columns if c != entry.label]
    if not names:
        raise DatasetError(f"dataset {entry.id!r}: {str(entry.path)!r} has no feature columns besides {entry.label!r}")
    x = np.stack([_feature(entry, c, columns[c]) for c in names], axis=1).astype(np.float32)
    raw = columns[entry.label]
    where = f"label column {entry.label!r}"
    if np.ma.isMaskedArray(raw) and raw.mask.any():
        raise DatasetError(f"dataset {entry.id!r}: {where} has missing labels")
    raw = np.ma.getdata(raw)
    if raw.dtype.kind in "OUS":
        y, classes = _named_labels(entry, raw, where)
    else:
        classes = _default_classes(entry, raw)
        y = _int_labels(entry, raw, classes, where)
    ev, tr = _split(entry, x, y, None)
    return Dataset(entry.id, "tabular", classes, ev, tr, feature_names=names, meta=_meta(entry))


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
