"""Export stored results as a table (CSV and/or Parquet) and, optionally, the maps as one .npz.

One row per sample of each exported run, with the columns

``run_key, link, model, dataset, sample_id, label, label_name, target, target_name, prediction,
prediction_name, confidence, explainer, params`` (canonical JSON; a ``*_name`` is the model's class
name of the index before it, since labels are stored as the model's class indices; empty when the
caller gives no names for that model), one column per metric (sorted by name; a metric whose name
clashes with one of these columns is written as ``metric_<name>``), then for j = 1..k the top-k
attributed units:

* ``top<j>_index``: the flat (row-major) index into the sample's map: the feature index for a
  tabular map (F), ``row * W + col`` for an image map (H×W);
* ``top<j>_row``, ``top<j>_col``: the pixel of that index, present when any exported map is 2-D
  (empty for 1-D maps);
* ``top<j>_value``: the attribution there.

"Top" means the largest signed values (the strongest evidence *for* the target), ties broken by
the lower index, NaN ranked last; a map with fewer than k units leaves the later columns empty.

Stored analyses that check runs add their own columns (:data:`ANNOTATING_KINDS`; today the sanity
check: ``sanity_verdict``, ``sanity_spearman_judged``, ``sanity_spearman_all_random``,
``sanity_ssim_judged``, ``sanity_link``). Such an artifact's ``info["annotates"]`` names the
explainer, its params, the columns and, per sample id, the target class and the values; a row gets
them when model, weights, dataset, explainer, params, sample and target all match (the newest
artifact wins), else they stay empty.

The maps .npz holds one array per row, named ``<run_key>_<sample_id>`` (the same map under every
run that contains it). It is written entry by entry, so memory stays bounded by one chunk of maps.
"""
from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from store.links import run_link
from store.runs import Store

DEFAULT_K = 5
ANNOTATING_KINDS = ("sanity",)
"""Artifact kinds whose ``info["annotates"]`` adds columns to the export rows of the runs they checked."""
_CHUNK = 1024
_BASE_COLUMNS = ("run_key", "link", "model", "dataset", "sample_id", "label", "label_name", "target", "target_name",
                 "prediction", "prediction_name", "confidence", "explainer", "params")
_INT_COLUMNS = ("sample_id", "label", "target", "prediction")
_NAMED = ("label", "target", "prediction")
"""Index columns named by the model's classes (labels are stored as the model's class indices)."""

AddMap = Callable[[str, np.ndarray], None]


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries of each row of ``values`` (N×P), largest
    first, ties broken by the lower index, NaN ranked below everything. Vectorised: a partition
    finds each row's k-th largest value, everything above it is taken, and the remaining places go
    to the lowest-index entries equal to it."""
    n, p = values.shape
    k = min(k, p)
    if k == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), values.dtype)
    ranked = np.where(np.isnan(values), -np.inf, values)
    kth = np.partition(ranked, p - k, axis=1)[:, p - k : p - k + 1]
    above = ranked > kth
    tied = ranked == kth
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    index = np.nonzero(chosen)[1].reshape(n, k)
    order = np.lexsort((index, -np.take_along_axis(ranked, index, 1)), axis=1)
    index = np.take_along_axis(index, order, 1)
    return index, np.take_along_axis(values, index, 1)


@contextmanager
def _npz_writer(path: Path | None) -> Iterator[AddMap | None]:
    """``add(name, array)`` streaming into an uncompressed .npz (what ``np.savez`` writes), or None."""
    if path is None:
        yield None
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        written: set[str] = set()

        def add(name: str, array: np.ndarray) -> None:
            if name not in written:
                written.add(name)
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)

        yield add


def _top_columns(root: Path, rows: pd.DataFrame, k: int, add_map: AddMap | None) -> dict[str, Any]:
    """Load each row's map (chunk by chunk), feed it to ``add_map`` and compute its top-k units."""
    n = len(rows)
    index = np.full((n, k), -1, np.int64)
    value = np.full((n, k), np.nan)
    pixel = np.full((n, k, 2), -1, np.int64)
    any_2d = False
    paths = rows["map_path"].tolist()
    names = (rows["run_key"] + "_" + rows["sample_id"].astype(str)).tolist()
    for start in range(0, n, _CHUNK):
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = defaultdict(list)
        for i in range(start, min(start + _CHUNK, n)):
            if isinstance(paths[i], str):
                array = np.load(root / paths[i], allow_pickle=False)
                if add_map is not None:
                    add_map(names[i], array)
                groups[array.shape].append((i, array))
        for shape, members in groups.items():
            rows_at = [i for i, _ in members]
            top_index, top_value = top_k(np.stack([a.ravel() for _, a in members]), k)
            width = top_index.shape[1]
            index[rows_at, :width], value[rows_at, :width] = top_index, top_value
            if len(shape) == 2:
                any_2d = True
                pixel[rows_at, :width] = np.stack(np.unravel_index(top_index, shape), axis=-1)
    columns: dict[str, Any] = {}
    for j in range(k):
        columns[f"top{j + 1}_index"] = _nullable(index[:, j])
        if any_2d:
            columns[f"top{j + 1}_row"] = _nullable(pixel[:, j, 0])
            columns[f"top{j + 1}_col"] = _nullable(pixel[:, j, 1])
        columns[f"top{j + 1}_value"] = value[:, j]
    return columns


def _nullable(values: np.ndarray) -> pd.arrays.IntegerArray:
    """An Int64 column where -1 (no such unit) is empty."""
    return pd.arrays.IntegerArray(values.copy(), mask=values < 0)


def _metric_frame(metrics_json: Sequence[str]) -> pd.DataFrame:
    """One column per metric name (sorted), prefixed ``metric_`` where it clashes with a base column."""
    frame = pd.DataFrame([json.loads(m) for m in metrics_json], index=pd.RangeIndex(len(metrics_json)))
    frame = frame.reindex(columns=sorted(frame.columns))
    return frame.rename(columns={c: f"metric_{c}" for c in frame.columns if c in _BASE_COLUMNS})


def _annotations(store: Store, rows: pd.DataFrame) -> pd.DataFrame:
    """The columns of :data:`ANNOTATING_KINDS` artifacts for ``rows`` (module docstring); a column
    exists only when some row matches. ``rows`` has a RangeIndex (positions)."""
    found: dict[str, list[Any]] = {}
    for kind in ANNOTATING_KINDS:
        for (model, weights, dataset), group in rows.groupby(["model", "weights_hash", "dataset"], sort=False):
            metas = [m for m in store.list_artifacts(kind, model, dataset, limit=10_000) if m["weights_hash"] == weights]
            for meta in metas:
                artifact = store.get_artifact(meta["key"])
                note = artifact.info.get("annotates")
                if not note:
                    continue
                names = [*note["columns"], f"{kind}_link"]
                link = run_link(artifact.key, kind=kind)
                for position, row in zip(group.index, group.itertuples()):
                    entry = note["samples"].get(str(row.sample_id))
                    if (entry is None or row.explainer != note["explainer"] or entry["target"] != row.target
                            or json.loads(row.params) != note["params"]):
                        continue
                    for name in names:
                        found.setdefault(name, [None] * len(rows))
                    if found[names[-1]][position] is None:  # the newest matching artifact wins
                        for name, value in zip(names, [*entry["values"], link]):
                            found[name][position] = value
    return pd.DataFrame(found, index=pd.RangeIndex(len(rows)))


def _class_names(rows: pd.DataFrame, column: str, classes: Mapping[str, Sequence[str]]) -> pd.Series:
    """The class name of each row's ``column`` index, looked up in ``classes`` by the row's model
    id; empty where the model has no names or the index is out of range (-1: unmapped label)."""
    ids, index = rows["model"], rows[column]
    names = [classes[i][int(j)] if i in classes and pd.notna(j) and 0 <= int(j) < len(classes[i]) else None
             for i, j in zip(ids, index)]
    return pd.Series(names, index=rows.index, dtype="string")


def export(
    store: Store,
    run: str | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    explainer: str | None = None,
    k: int = DEFAULT_K,
    csv: Path | str | None = None,
    parquet: Path | str | None = None,
    maps: Path | str | None = None,
    model_classes: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """The export table for one run (``run``, a key) or for all runs matching the filters; also
    written to ``csv`` / ``parquet`` and the maps to ``maps`` (.npz) when those paths are given.
    ``model_classes`` (model id -> class names) fill the ``*_name`` columns; the store itself knows
    only indices. Raises InvalidKey / RunNotFound for a bad ``run``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k (number of top attributed units) must be an integer ≥ 0, got {k!r}")
    rows = store.export_rows(run, model=model, dataset=dataset, explainer=explainer)
    with _npz_writer(None if maps is None else Path(maps)) as add_map:
        top = _top_columns(store.root, rows, k, add_map)
    links = {key: run_link(key) for key in rows["run_key"].unique()}
    rows = rows.assign(link=rows["run_key"].map(links), **{
        f"{column}_name": _class_names(rows, column, model_classes or {}) for column in _NAMED})
    base = rows.reindex(columns=list(_BASE_COLUMNS))
    base = base.astype({c: "Int64" for c in _INT_COLUMNS})
    frame = pd.concat(
        [base.reset_index(drop=True), _metric_frame(rows["metrics"].tolist()), pd.DataFrame(top),
         _annotations(store, rows)], axis=1
    )
    if csv is not None:
        frame.to_csv(csv, index=False)
    if parquet is not None:
        frame.to_parquet(parquet, index=False)
    return frame
