"""The DuckDB schema and its migrations.

The file records its version in ``schema_version``. :data:`MIGRATIONS` is an ordered list: each
entry brings the file from ``version - 1`` to ``version`` in one transaction. Later result kinds
(rules, pathways, embeddings) append a migration that adds their tables, so a file written by an
older Loupe is upgraded in place on first open and nothing already stored is touched. A file whose
version is newer than this code knows is refused rather than misread.

Tables hold small rows only (DuckDB appends of 200 KB rows get slower with every write:
notes/stack.md §1b); attribution maps live in ``.npy`` files beside the database. JSON columns are
stored as VARCHAR holding canonical JSON and parsed in Python.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from store.db import transaction


_LOCK = threading.Lock()


class SchemaError(RuntimeError):
    """The database file cannot be used by this version of Loupe; the message says why."""


@dataclass(frozen=True)
class Migration:
    """Statements that take the schema from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "attribution runs, per-sample items and run membership",
    (
        """CREATE TABLE schema_version (
            version INTEGER PRIMARY KEY,
            description VARCHAR NOT NULL,
            applied TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE runs (
            key VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            model_id VARCHAR NOT NULL,
            weights_hash VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            sample_ids VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            explainer_id VARCHAR NOT NULL,
            explainer_version VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            created TIMESTAMP NOT NULL,
            seconds DOUBLE,
            device VARCHAR,
            versions VARCHAR NOT NULL,
            n_samples INTEGER NOT NULL
        )""",
        """CREATE TABLE items (
            item_key VARCHAR PRIMARY KEY,
            model_id VARCHAR NOT NULL,
            weights_hash VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            sample_id BIGINT NOT NULL,
            explainer_id VARCHAR NOT NULL,
            explainer_version VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            label BIGINT,
            target BIGINT,
            prediction BIGINT,
            confidence DOUBLE,
            metrics VARCHAR NOT NULL,
            extras VARCHAR NOT NULL,
            map_path VARCHAR,
            map_shape INTEGER[],
            array_names VARCHAR[] NOT NULL,
            seconds DOUBLE,
            device VARCHAR,
            created TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE run_items (
            run_key VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            item_key VARCHAR NOT NULL,
            PRIMARY KEY (run_key, position)
        )""",
    ),
)

_V2 = Migration(
    2,
    "artifacts: one stored result per analysis request (rules, pathways, embeddings)",
    (
        """CREATE TABLE artifacts (
            key VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            model_id VARCHAR NOT NULL,
            weights_hash VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            analysis_id VARCHAR NOT NULL,
            analysis_version VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            inputs_hash VARCHAR NOT NULL,
            n_samples INTEGER NOT NULL,
            created TIMESTAMP NOT NULL,
            seconds DOUBLE,
            device VARCHAR,
            versions VARCHAR NOT NULL,
            path VARCHAR NOT NULL
        )""",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)
"""Every migration, oldest first; versions are 1, 2, … without gaps."""

RUN_COLUMNS = (
    "key", "kind", "model_id", "weights_hash", "dataset_id", "sample_ids", "content_hash", "explainer_id",
    "explainer_version", "params", "target", "status", "created", "seconds", "device", "versions", "n_samples",
)
ITEM_COLUMNS = (
    "item_key", "model_id", "weights_hash", "dataset_id", "sample_id", "explainer_id", "explainer_version",
    "params", "label", "target", "prediction", "confidence", "metrics", "extras", "map_path", "map_shape",
    "array_names", "seconds", "device", "created",
)
RUN_JSON_COLUMNS = ("sample_ids", "params", "target", "versions")
"""Run columns that hold canonical JSON text."""
ARTIFACT_COLUMNS = (
    "key", "kind", "model_id", "weights_hash", "dataset_id", "analysis_id", "analysis_version", "params",
    "inputs_hash", "n_samples", "created", "seconds", "device", "versions", "path",
)
ARTIFACT_JSON_COLUMNS = ("params", "versions")


def utc_now() -> datetime:
    """Now in UTC without tzinfo: what the TIMESTAMP columns hold."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The file's schema version; 0 for a new, empty file. (Results are always read to the end:
    DuckDB 2.0 refuses other work on a connection with an unfinished result, e.g. after
    ``fetchone``.)"""
    try:
        (version,), = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
    except duckdb.CatalogException:  # no schema_version table: a new file
        return 0
    return int(version)


def _check_order(migrations: tuple[Migration, ...]) -> None:
    """Versions must be 1..n in order, so "the file is at version v" has one meaning."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migrations must be numbered 1..n in order, got {versions}")


def migrate(con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...] | None = None) -> int:
    """Apply the migrations the file lacks, each in its own transaction; return the new version.

    ``migrations`` defaults to :data:`MIGRATIONS` (read at call time, so a later kind's migration
    appended to it is picked up). Other processes cannot open the file meanwhile (DuckDB's file
    lock); threads of this process are serialised by a lock, so two never create the same table.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    _check_order(migrations)
    with _LOCK:
        return _apply(con, migrations)


def _apply(con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...]) -> int:
    """Body of :func:`migrate`, run under its lock."""
    current = schema_version(con)
    if current > len(migrations):
        raise SchemaError(
            f"the Loupe database is at schema version {current}, but this code knows versions up to "
            f"{len(migrations)}: it was written by a newer Loupe; upgrade Loupe or use another LOUPE_HOME"
        )
    for migration in migrations[current:]:
        with transaction(con):
            for statement in migration.statements:
                con.execute(statement).fetchall()
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.description, utc_now()],
            ).fetchall()
    return len(migrations)
