"""One Loupe database: the DuckDB file, the folder of files beside it, and short-lived connections
to it with the schema migrated. :class:`store.runs.Store` and its artifact table
(:class:`store.artifacts.Artifacts`) each hold the same :class:`Database`."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from store import db, schema
from store.paths import loupe_home


class Database:
    """The DuckDB file (default ``$LOUPE_HOME/loupe.duckdb``) and the folder beside it. The
    constructor only resolves paths (for the default, ``loupe_home()`` creates LOUPE_HOME); every
    :meth:`open` is one short-lived connection (store.db)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else loupe_home() / "loupe.duckdb"
        self.root = self.path.parent
        self.id = os.path.abspath(self.path)
        """The absolute path: what this process's memo of read records is keyed by."""

    @contextmanager
    def open(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the schema migrated to the current version (read-only when reading
        a file this process may not write; see :func:`store.db.connection`)."""
        with db.guard(self.path):
            self.root.mkdir(parents=True, exist_ok=True)
        with db.connection(self.path, write=write) as con:
            schema.migrate(con)
            yield con

    def check_writable(self) -> None:
        """Raise :class:`store.db.StoreReadOnly` when new results could not be saved here (callers
        check before computing them, so no work is thrown away)."""
        db.check_writable(self.path)
