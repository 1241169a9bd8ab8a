"""The cache of explanation results: :class:`Store` reads and writes items and runs.

* An *item* is one sample's explanation, keyed by :func:`store.keys.item_key`. Its small fields
  (label, target, prediction, confidence, metrics, scalar extras) are a row of ``items``; its map
  is ``maps/<key[:2]>/<key>.npy`` beside the database and its other arrays (e.g. deletion curves)
  ``maps/<key[:2]>/<key>.npz``. Files are written to a temporary name and published with
  ``os.replace``, so a reader never sees half a file.
* A *run* is a request over an ordered list of samples, keyed by :func:`store.keys.run_key`: a row
  of ``runs`` plus one ``run_items`` row per position. It is written once, after its items.

Rows are only ever inserted (``INSERT OR IGNORE``), never updated: a key always names the same
content. That makes every write idempotent and lets this process memoise what it has read (an LRU
bounded by bytes, maps marked read-only), which is what keeps a repeated lookup of a run under a
millisecond without holding the database open (see :mod:`store.db` for the numbers).
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import numpy as np

from store import db, schema
from store.artifacts import Artifact, Artifacts
from store.database import Database
from store.files import StoreError, arrays_file, atomic_write, map_file
from store.keys import RunNotFound, canonical_json, check_key, check_target, run_key

Scalar = str | int | float | bool | None
_NUMBER_TYPES: tuple[type, ...] = (bool, int, float, type(None))
_SCALAR_TYPES: tuple[type, ...] = (str, *_NUMBER_TYPES)

_ID_FIELDS = ("model_id", "weights_hash", "dataset_id", "explainer_id", "explainer_version")
_ITEM_META = (*_ID_FIELDS, "params")
_RUN_REQUIRED = (*_ITEM_META, "sample_ids", "content_hash", "target")
_RUN_OPTIONAL = ("key", "kind", "status", "created", "seconds", "device", "versions", "n_samples")
_FILTERS = {"model": "model_id", "dataset": "dataset_id", "explainer": "explainer_id"}
MEMO_BYTES = 256 * 2**20
"""Upper bound on the map bytes this process keeps memoised."""


@dataclass(frozen=True, eq=False)
class ItemRecord:
    """One sample's explanation. Writers fill it; readers get it back with ``map`` read-only and
    ``arrays`` loaded on first access. ``metrics`` holds numbers/bools/None, ``extras`` small
    scalars (arrays go in ``arrays``)."""

    item_key: str
    sample_id: int
    label: int | None = None
    target: int | None = None
    prediction: int | None = None
    confidence: float | None = None
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    extras: Mapping[str, Scalar] = field(default_factory=dict)
    map: np.ndarray | None = None
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    seconds: float | None = None


@dataclass(frozen=True)
class StoredRun:
    """A stored run: its metadata (the ``runs`` columns, JSON decoded) and its items in order."""

    key: str
    meta: dict[str, Any]
    items: tuple[ItemRecord, ...]


class _StoredArrays(Mapping[str, np.ndarray]):
    """An item's extra arrays, read from its .npz on first access (most readers never need them)."""

    def __init__(self, path: Path, names: Sequence[str]) -> None:
        self._path = path
        self._names = tuple(names)
        self._loaded: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._loaded is None:
            try:
                with np.load(self._path, allow_pickle=False) as npz:
                    loaded = {name: npz[name] for name in self._names}
            except FileNotFoundError:
                raise StoreError(f"the arrays file of a stored item is missing: {self._path}") from None
            for array in loaded.values():
                array.setflags(write=False)
            self._loaded = loaded
        return self._loaded

    def __getitem__(self, name: str) -> np.ndarray:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True)
class _RunRow:
    """What the memo keeps for a run: its raw column values and its item keys in order."""

    values: tuple
    item_keys: tuple[str, ...]


class _Memo:
    """Thread-safe LRU of immutable records keyed by (database, kind, key), bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._data: OrderedDict[tuple[str, str, str], tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            self._data.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[str, str, str], value: object, nbytes: int) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self._max and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped


_MEMO = _Memo(MEMO_BYTES)


# -- validation and encoding -------------------------------------------------------------------
def _check_fields(meta: Mapping[str, Any], required: Sequence[str], allowed: Sequence[str], what: str) -> None:
    """Every required key present, no unknown keys, id fields are strings."""
    missing = [k for k in required if k not in meta]
    unknown = sorted(set(meta) - set(allowed))
    if missing or unknown:
        raise ValueError(f"{what}: missing fields {missing}, unknown fields {unknown}; allowed: {list(allowed)}")
    for name in _ID_FIELDS:
        if not isinstance(meta[name], str) or not meta[name]:
            raise ValueError(f"{what}: {name} must be a non-empty string, got {meta[name]!r}")
    if not isinstance(meta["params"], Mapping):
        raise ValueError(f"{what}: params must be a dict, got {type(meta['params']).__name__}")


def _scalars(values: Mapping[str, Any], allowed: tuple[type, ...], where: str) -> dict[str, Scalar]:
    """Plain Python scalars (numpy scalars unwrapped); anything else raises naming the entry."""
    out: dict[str, Scalar] = {}
    for name, raw in values.items():
        value: Any = raw.item() if isinstance(raw, np.generic) else raw
        plain = isinstance(name, str) and isinstance(value, allowed)
        if not plain:
            kinds = "/".join(t.__name__ for t in allowed)
            raise ValueError(f"{where}[{name!r}] is a {type(value).__name__}; only {kinds} are stored "
                             "there (put arrays in ItemRecord.arrays)")
        out[name] = value
    return out


def _json(values: Mapping[str, Scalar]) -> str:
    """Sorted-key JSON that keeps NaN (a metric can be undefined, e.g. a constant map's rank)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def _int(value: Any, what: str) -> int:
    """An integer (numpy integers accepted; bools, floats and None refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _item_row(root: Path, meta: Mapping[str, Any], rec: ItemRecord, created: Any) -> dict[str, Any]:
    """Write the item's files and return its ``items`` row."""
    key = check_key(rec.item_key, "an item")
    where = f"item {key[:12]}… (sample {rec.sample_id})"
    metrics = _scalars(rec.metrics, _NUMBER_TYPES, f"{where} metrics")
    extras = _scalars(rec.extras, _SCALAR_TYPES, f"{where} extras")
    map_rel = map_shape = None
    if rec.map is not None:
        array = np.asarray(rec.map)
        map_rel, map_shape = map_file(key), list(array.shape)
        atomic_write(root / map_rel, lambda f: np.save(f, array, allow_pickle=False))
    if rec.arrays:
        arrays = {name: np.asarray(a) for name, a in rec.arrays.items()}
        atomic_write(root / arrays_file(key), lambda f: np.savez(f, allow_pickle=False, **arrays))
    return {
        "item_key": key, **{name: meta[name] for name in _ID_FIELDS}, "params": canonical_json(dict(meta["params"])),
        "sample_id": _int(rec.sample_id, f"{where} sample_id"),
        "label": _optional_int(rec.label, f"{where} label"),
        "target": _optional_int(rec.target, f"{where} target"),
        "prediction": _optional_int(rec.prediction, f"{where} prediction"),
        "confidence": None if rec.confidence is None else float(rec.confidence),
        "metrics": _json(metrics), "extras": _json(extras), "map_path": map_rel, "map_shape": map_shape,
        "array_names": sorted(rec.arrays), "seconds": None if rec.seconds is None else float(rec.seconds),
        "device": meta.get("device"), "created": created,
    }


def _items_table(rows: list[dict[str, Any]]) -> Any:
    """The rows as an Arrow table with explicit types (so all-None columns still insert)."""
    import pyarrow as pa

    types = {
        "item_key": pa.string(), "model_id": pa.string(), "weights_hash": pa.string(), "dataset_id": pa.string(),
        "sample_id": pa.int64(), "explainer_id": pa.string(), "explainer_version": pa.string(),
        "params": pa.string(), "label": pa.int64(), "target": pa.int64(), "prediction": pa.int64(),
        "confidence": pa.float64(), "metrics": pa.string(), "extras": pa.string(), "map_path": pa.string(),
        "map_shape": pa.list_(pa.int32()), "array_names": pa.list_(pa.string()), "seconds": pa.float64(),
        "device": pa.string(), "created": pa.timestamp("us"),
    }
    return pa.Table.from_pylist(rows, schema=pa.schema(list(types.items())))


def _run_meta(values: tuple) -> dict[str, Any]:
    """A ``runs`` row as a dict with its JSON columns decoded (a fresh dict every call)."""
    meta = dict(zip(schema.RUN_COLUMNS, values))
    for name in schema.RUN_JSON_COLUMNS:
        meta[name] = json.loads(meta[name])
    return meta


def _where(filters: Mapping[str, str | None], alias: str) -> tuple[str, list[Any]]:
    """``WHERE`` over the given model/dataset/explainer filters (fixed column names, bound values)."""
    clauses = [(f"{alias}.{_FILTERS[name]} = ?", value) for name, value in filters.items() if value is not None]
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in clauses), [v for _, v in clauses]


# -- the store ---------------------------------------------------------------------------------
class Store:
    """The DuckDB file (default ``$LOUPE_HOME/loupe.duckdb``) and the maps folder beside it: items
    and runs here, analysis results in :attr:`artifacts` (same database, same lock).

    The constructor only resolves paths (for the default, ``loupe_home()`` creates LOUPE_HOME); every
    method opens a short-lived connection (store.db)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.database = Database(path)
        self.path, self.root, self._id = self.database.path, self.database.root, self.database.id
        self.artifacts = Artifacts(self.database)

    # -- writes --------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise :class:`store.db.StoreReadOnly` when new results could not be saved here (callers
        check before computing them, so no work is thrown away)."""
        self.database.check_writable()

    def put_items(self, meta: Mapping[str, Any], items: Sequence[ItemRecord]) -> None:
        """Store items computed for one request (``meta``: model_id, weights_hash, dataset_id,
        explainer_id, explainer_version, params, optional device; run fields are allowed and
        ignored, so the run's meta dict can be passed). Items already stored are left as they are."""
        _check_fields(meta, _ITEM_META, (*_RUN_REQUIRED, *_RUN_OPTIONAL), "item metadata")
        unique = list({rec.item_key: rec for rec in items}.values())  # a key names one content
        if not unique:
            return
        created = schema.utc_now()
        self.check_writable()  # before any map file is written
        with db.guard(self.path):
            table = _items_table([_item_row(self.root, meta, rec, created) for rec in unique])

        with self.database.open(write=True) as con:
            con.register("incoming_items", table)  # outside the transaction: after a failed
            try:  # statement, only ROLLBACK may run in it
                with db.transaction(con):
                    con.execute("INSERT OR IGNORE INTO items BY NAME SELECT * FROM incoming_items").fetchall()
            finally:
                con.unregister("incoming_items")

    def put_run(self, run_meta: Mapping[str, Any], item_keys: Sequence[str]) -> str:
        """Store a run over already-stored items (``item_keys[i]`` explains ``sample_ids[i]``) and
        return its key, computed from ``run_meta`` (a given ``key`` must match). Idempotent."""
        _check_fields(run_meta, _RUN_REQUIRED, (*_RUN_REQUIRED, *_RUN_OPTIONAL), "run metadata")
        key = run_key(**{name: run_meta[name] for name in (*_ITEM_META, "sample_ids", "content_hash", "target")})
        if run_meta.get("key", key) != key:
            raise ValueError(f"run metadata: key {run_meta['key']!r} does not match its fields (computed {key})")
        keys = [check_key(k, "an item") for k in item_keys]
        sample_ids = [int(i) for i in run_meta["sample_ids"]]
        if not sample_ids or len(keys) != len(sample_ids):
            raise ValueError(f"run {key}: {len(sample_ids)} sample ids but {len(keys)} item keys (need ≥ 1, equal)")
        row = self._run_values(key, run_meta, sample_ids)

        with self.database.open(write=True) as con, db.transaction(con):
            self._check_items_stored(con, key, keys)
            con.execute(f"INSERT OR IGNORE INTO runs VALUES ({', '.join('?' * len(row))})", row).fetchall()
            con.execute(
                "INSERT OR IGNORE INTO run_items SELECT $1, unnest(range(len(ks))), unnest(ks) "
                "FROM (SELECT $2::VARCHAR[] AS ks)",
                [key, keys],
            ).fetchall()
        return key

    @staticmethod
    def _run_values(key: str, meta: Mapping[str, Any], sample_ids: list[int]) -> list[Any]:
        """The ``runs`` row, in :data:`schema.RUN_COLUMNS` order."""
        n = meta.get("n_samples", len(sample_ids))
        if n != len(sample_ids):
            raise ValueError(f"run {key}: n_samples {n} but {len(sample_ids)} sample ids")
        values = {
            "key": key, **{name: meta[name] for name in _ID_FIELDS}, "kind": meta.get("kind", "attribution"),
            "sample_ids": canonical_json(sample_ids), "content_hash": meta["content_hash"],
            "params": canonical_json(dict(meta["params"])), "target": canonical_json(check_target(meta["target"])),
            "status": meta.get("status", "done"), "created": meta.get("created") or schema.utc_now(),
            "seconds": meta.get("seconds"), "device": meta.get("device"),
            "versions": canonical_json(dict(meta.get("versions") or {})), "n_samples": n,
        }
        return [values[name] for name in schema.RUN_COLUMNS]

    @staticmethod
    def _check_items_stored(con: duckdb.DuckDBPyConnection, key: str, keys: list[str]) -> None:
        """A run may only list items that are stored (else get_run could not return them)."""
        present = {r[0] for r in con.execute(
            "SELECT item_key FROM items WHERE item_key IN (SELECT unnest(?::VARCHAR[]))", [keys]).fetchall()}
        missing = [k for k in dict.fromkeys(keys) if k not in present]
        if missing:
            raise ValueError(f"run {key}: {len(missing)} item(s) are not stored, e.g. {missing[:3]}; "
                             "put_items first")

    # -- reads ---------------------------------------------------------------------------------
    def lookup(self, item_keys: Sequence[str]) -> dict[str, ItemRecord]:
        """The stored items among ``item_keys`` (absent keys are simply missing from the result)."""
        keys = [check_key(k, "an item") for k in item_keys]
        found, missing = self._memoised(keys)
        if missing:
            with self.database.open() as con:
                found.update(self._fetch_items(con, missing))
        return found

    def get_run(self, key: str) -> StoredRun:
        """The run stored under ``key`` with its items in order; raises InvalidKey for a malformed
        key and RunNotFound for an unknown one."""
        key = check_key(key)
        run: _RunRow | None = _MEMO.get((self._id, "run", key))
        found, missing = self._memoised(run.item_keys) if run else ({}, [])
        if run is None or missing:
            with self.database.open() as con:
                if run is None:
                    run = self._fetch_run(con, key)
                    found, missing = self._memoised(run.item_keys)
                found.update(self._fetch_items(con, missing))
        lost = [k for k in run.item_keys if k not in found]
        if lost:
            raise StoreError(f"run {key} lists {len(lost)} item(s) that are not stored, e.g. {lost[0]}")
        return StoredRun(key, _run_meta(run.values), tuple(found[k] for k in run.item_keys))

    def list_runs(
        self, model: str | None = None, dataset: str | None = None, explainer: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Run metadata, newest first, optionally filtered by model, dataset and explainer id."""
        where, args = _where({"model": model, "dataset": dataset, "explainer": explainer}, "r")
        columns = ", ".join(f"r.{c}" for c in schema.RUN_COLUMNS)
        with self.database.open() as con:
            rows = con.execute(
                f"SELECT {columns} FROM runs r{where} ORDER BY r.created DESC, r.key LIMIT ?", [*args, int(limit)]
            ).fetchall()
        return [_run_meta(row) for row in rows]

    def export_rows(
        self, run: str | None = None, model: str | None = None, dataset: str | None = None,
        explainer: str | None = None,
    ) -> Any:
        """One pandas row per (run, position): run key, model, dataset, sample id, label, target,
        prediction, confidence, explainer, params JSON, metrics JSON, map path (relative to
        :attr:`root`); for one run (``run``) or all runs matching ``model``/``dataset``/``explainer``.
        Ordered by run creation, then position."""
        if run is not None:
            where, args = " WHERE r.key = ?", [check_key(run)]
        else:
            where, args = _where({"model": model, "dataset": dataset, "explainer": explainer}, "r")
        sql = (
            "SELECT r.key AS run_key, r.model_id AS model, r.dataset_id AS dataset, i.sample_id, i.label, i.target, "
            "i.prediction, i.confidence, r.explainer_id AS explainer, r.params, i.metrics, i.map_path "
            "FROM runs r JOIN run_items ri ON ri.run_key = r.key JOIN items i ON i.item_key = ri.item_key"
            f"{where} ORDER BY r.created, r.key, ri.position"
        )
        with self.database.open() as con:
            frame = con.execute(sql, args).fetchdf()
        if run is not None and frame.empty:
            raise RunNotFound(f"no stored run with key {run}")
        return frame

    def kind_of(self, key: str) -> str:
        """What a share link's key names: "attribution" for a run, else the artifact's kind. A stored
        key's kind never changes, so this process memoises it (every share link asks, and opening
        the database costs more than the rest of a stored render); an unknown key is asked again."""
        key = check_key(key)
        memo = (self._id, "kind", key)
        kind: str | None = _MEMO.get(memo)
        if kind is not None:
            return kind
        with self.database.open() as con:
            found = con.execute("SELECT kind FROM runs WHERE key = $1 UNION ALL "
                                "SELECT kind FROM artifacts WHERE key = $1", [key]).fetchall()
        if not found:
            raise RunNotFound(f"no stored result with key {key}")
        kind = str(found[0][0])
        _MEMO.put(memo, kind, 128)
        return kind

    # -- analysis results (store.artifacts) --------------------------------------------------------
    def put_artifact(self, meta: Mapping[str, Any], info: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
        """Store an analysis result and return its key (:meth:`store.artifacts.Artifacts.put`)."""
        return self.artifacts.put(meta, info, arrays)

    def get_artifact(self, key: str) -> Artifact:
        """The analysis result stored under ``key`` (:meth:`store.artifacts.Artifacts.get`)."""
        return self.artifacts.get(key)

    def list_artifacts(self, kind: str | None = None, model: str | None = None, dataset: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        """Analysis results' metadata, newest first (:meth:`store.artifacts.Artifacts.find`)."""
        return self.artifacts.find(kind, model, dataset, limit)

    # -- read helpers --------------------------------------------------------------------------
    def _memoised(self, keys: Sequence[str]) -> tuple[dict[str, ItemRecord], list[str]]:
        """Items of ``keys`` this process already read, and the keys still to fetch."""
        found: dict[str, ItemRecord] = {}
        for k in keys:
            rec = _MEMO.get((self._id, "item", k))
            if rec is not None:
                found[k] = rec
        return found, [k for k in dict.fromkeys(keys) if k not in found]

    def _fetch_run(self, con: duckdb.DuckDBPyConnection, key: str) -> _RunRow:
        found = con.execute(f"SELECT {', '.join(schema.RUN_COLUMNS)} FROM runs WHERE key = ?", [key]).fetchall()
        if not found:
            raise RunNotFound(f"no stored run with key {key}")
        values = found[0]
        item_keys = con.execute("SELECT item_key FROM run_items WHERE run_key = ? ORDER BY position", [key]).fetchall()
        run = _RunRow(tuple(values), tuple(k for (k,) in item_keys))
        _MEMO.put((self._id, "run", key), run, 1024)
        return run

    def _fetch_items(self, con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, ItemRecord]:
        if not keys:
            return {}
        rows = con.execute(
            f"SELECT {', '.join(schema.ITEM_COLUMNS)} FROM items WHERE item_key IN (SELECT unnest(?::VARCHAR[]))",
            [keys],
        ).fetchall()
        out = {}
        for values in rows:
            rec = self._record(dict(zip(schema.ITEM_COLUMNS, values)))
            nbytes = 1024 + (rec.map.nbytes if rec.map is not None else 0)
            _MEMO.put((self._id, "item", rec.item_key), rec, nbytes)
            out[rec.item_key] = rec
        return out

    def _record(self, row: dict[str, Any]) -> ItemRecord:
        """An :class:`ItemRecord` from an ``items`` row: map loaded read-only, arrays lazy."""
        key = row["item_key"]
        array = None
        if row["map_path"] is not None:
            path = self.root / row["map_path"]
            try:
                array = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise StoreError(f"the map file of stored item {key} is missing: {path}") from None
            array.setflags(write=False)
        names = row["array_names"] or []
        arrays: Mapping[str, np.ndarray] = _StoredArrays(self.root / arrays_file(key), names) if names else {}
        return ItemRecord(
            item_key=key, sample_id=row["sample_id"], label=row["label"], target=row["target"],
            prediction=row["prediction"], confidence=row["confidence"],
            metrics=MappingProxyType(json.loads(row["metrics"])), extras=MappingProxyType(json.loads(row["extras"])),
            map=array, arrays=arrays, seconds=row["seconds"],
        )
