"""Stored analysis results (rules, pathway graphs, embeddings): one *artifact* per request.

An artifact is a row of ``artifacts`` (small metadata only, like every table here) and one ``.npz``
beside the database holding its named arrays plus its JSON ``info`` (rule texts, layer names …) as
the 0-d string array ``__info__``; one file, written atomically, so a reader sees all of it or
nothing. Keys come from :func:`store.keys.artifact_key`; rows are insert-only like runs, and share
links use the same ``?run=<key>`` form (:meth:`store.runs.Store.kind_of` says which page opens it).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from store import db, schema
from store.database import Database
from store.files import StoreError, artifact_file, atomic_write
from store.keys import RunNotFound, artifact_key, canonical_json, check_key

_INFO = "__info__"
_REQUIRED = ("kind", "model_id", "weights_hash", "dataset_id", "analysis_id", "analysis_version", "params",
             "inputs_hash", "sample_ids")


@dataclass(frozen=True)
class Artifact:
    """One stored analysis result. ``meta`` holds the ``artifacts`` columns (JSON decoded) and
    ``sample_ids``; ``arrays`` are read-only; ``link`` and ``cached`` are set by the API."""

    key: str
    kind: str
    meta: dict[str, Any]
    info: dict[str, Any]
    arrays: Mapping[str, np.ndarray]
    link: str | None = None
    cached: bool = False


class Artifacts:
    """Artifact reads and writes on one :class:`~store.database.Database` (a
    :class:`store.runs.Store` holds one, on its own database: same file, same lock)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def put(self, meta: Mapping[str, Any], info: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
        """Store an analysis result and return its key (computed from ``meta``; idempotent).
        ``meta`` needs the key fields, ``sample_ids`` and optionally seconds, device, versions."""
        missing = [name for name in _REQUIRED if name not in meta]
        if missing:
            raise ValueError(f"artifact metadata lacks {missing}")
        if _INFO in arrays:
            raise ValueError(f"an artifact array may not be called {_INFO!r}")
        key = artifact_key(**{name: meta[name] for name in _REQUIRED if name != "sample_ids"})
        payload = {name: np.asarray(a) for name, a in arrays.items()}
        payload[_INFO] = np.array(canonical_json({**info, "sample_ids": [int(i) for i in meta["sample_ids"]]}))
        rel = artifact_file(key)
        self.database.check_writable()
        with db.guard(self.database.path):
            atomic_write(self.database.root / rel, lambda f: np.savez(f, allow_pickle=False, **payload))
        row = {**{name: meta[name] for name in _REQUIRED if name != "sample_ids"}, "key": key, "path": rel,
               "params": canonical_json(dict(meta["params"])), "n_samples": len(meta["sample_ids"]),
               "created": meta.get("created") or schema.utc_now(), "seconds": meta.get("seconds"),
               "device": meta.get("device"), "versions": canonical_json(dict(meta.get("versions") or {}))}
        values = [row[name] for name in schema.ARTIFACT_COLUMNS]
        with self.database.open(write=True) as con, db.transaction(con):
            con.execute(f"INSERT OR IGNORE INTO artifacts VALUES ({', '.join('?' * len(values))})", values).fetchall()
        return key

    def get(self, key: str) -> Artifact:
        """The artifact stored under ``key``: InvalidKey if malformed, RunNotFound if unknown."""
        key = check_key(key)
        with self.database.open() as con:
            rows = con.execute(f"SELECT {', '.join(schema.ARTIFACT_COLUMNS)} FROM artifacts WHERE key = ?",
                               [key]).fetchall()
        if not rows:
            raise RunNotFound(f"no stored analysis result with key {key}")
        meta = _decode(rows[0])
        try:
            with np.load(self.database.root / meta["path"], allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as err:
            raise StoreError(f"the file of stored result {key} is missing or unreadable: {err}") from None
        info = json.loads(str(arrays.pop(_INFO)))
        meta["sample_ids"] = info.pop("sample_ids")
        for array in arrays.values():
            array.setflags(write=False)
        return Artifact(key, meta["kind"], meta, info, arrays)

    def find(self, kind: str | None = None, model: str | None = None, dataset: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Artifact metadata, newest first, filtered by kind, model and dataset id."""
        filters = {"kind": kind, "model_id": model, "dataset_id": dataset}
        clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
        args = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.database.open() as con:
            rows = con.execute(f"SELECT {', '.join(schema.ARTIFACT_COLUMNS)} FROM artifacts{where} "
                               "ORDER BY created DESC, key LIMIT ?", [*args, int(limit)]).fetchall()
        return [_decode(row) for row in rows]


def _decode(values: tuple) -> dict[str, Any]:
    meta = dict(zip(schema.ARTIFACT_COLUMNS, values))
    for name in schema.ARTIFACT_JSON_COLUMNS:
        meta[name] = json.loads(meta[name])
    return meta
