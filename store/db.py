"""Connections to the Loupe DuckDB file that several processes can share.

A DuckDB file admits one read-write process at a time; a second process's ``connect`` fails with
an ``IOException`` "Could not set lock on file" (notes/stack.md §1a). The Streamlit app and a CLI
batch must both read and write the cache, so every operation opens a short-lived connection,
retries the open with jittered back-off while another process holds the lock, does its work in one
transaction, and closes, which releases the lock (stack.md §1d, §1e.3). No connection is kept
between operations, so neither process can starve the other for longer than one operation.

Threads of one process share DuckDB's instance (a second ``connect`` to the same path reuses it),
so they never hit the file lock; they can hit each other's transactions instead (duplicate primary
key or write-write conflict on an idempotent insert, stack.md §1a). :func:`write` rolls back and
re-runs the transaction; the inserts are ``INSERT OR IGNORE``, so the re-run skips what the other
thread committed and stores the rest: "already stored" never loses a row.

Measured here (bench/store.py, duckdb 2.0.1, 2 shared CPU cores, small rows, maps in .npy files;
single runs, expect ±30 %):

* connect cost: ``duckdb.connect`` 13 ms + ``close`` 2 ms, the same for ``:memory:``: it is the
  instance start-up, not the file. A query on an open connection takes 0.5 ms.
* per-write latency, one process: ``put_items`` of 64 items (64×64 maps + curves) 36 ms median,
  ``put_run`` 26 ms median (connect + transaction + close; the .npy/.npz writes are ~0.2 ms each).
* two writer processes on one file, each storing 50 runs of 16 items (put_items + put_run, plus a
  get_run and a list_runs between writes): no error, every row once, 10.8 s wall for 400
  operations (37 ops/s together vs 45 ops/s for one process alone), 211 + 174 lock retries,
  median wait for the lock per connection 0 ms, worst 0.74 s.
* cached lookup of one stored run (100 items): 21 ms cold (a fresh process: connect + 3 queries +
  100 ``np.load``), 0.05 ms warm. Warm reads come from :mod:`store.runs`' in-process memo of
  immutable records, not from a held connection, because a held connection would lock every other
  process out of the file.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

T = TypeVar("T")

LOCK_TIMEOUT_S = 30.0
"""How long an operation waits for another process to release the file before giving up."""
CONFLICT_ATTEMPTS = 8
"""How often a transaction is re-run after colliding with another thread's transaction."""
_LOCK_MESSAGE = "could not set lock"
_CONFLICT_MESSAGES = ("primary key", "duplicate key", "conflict")


class StoreBusy(RuntimeError):
    """Another process held the database for longer than :data:`LOCK_TIMEOUT_S`."""


@dataclass
class LockStats:
    """Counters for this process (read by bench/store.py and the concurrency tests)."""

    connects: int = 0
    lock_retries: int = 0
    lock_wait_s: float = 0.0
    max_lock_wait_s: float = 0.0
    conflict_retries: int = 0


STATS = LockStats()


def _backoff(attempt: int) -> None:
    """Sleep 2–20 ms times the attempt number (capped at 10): jitter keeps two waiting processes
    from retrying in lock step."""
    time.sleep(random.uniform(0.002, 0.02) * min(attempt, 10))


def _create(path: Path) -> None:
    """Create an empty database file atomically: build it under a temporary name, then hard-link
    it into place. Two processes opening a missing file at once otherwise race, and the loser
    reads a half-written header ("exists, but it is not a valid DuckDB database file": seen in
    tests/test_store_concurrency.py before this existed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        duckdb.connect(str(tmp)).close()
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process or thread created it first
    finally:
        tmp.unlink(missing_ok=True)


def connect(path: Path, timeout: float = LOCK_TIMEOUT_S) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-write (creating it if missing), retrying while another process holds
    its lock.

    Always read-write: DuckDB refuses a read-only and a read-write connection to the same file
    within one process, and the app's threads read and write. Raises :class:`StoreBusy` after
    ``timeout`` seconds.
    """
    if not path.exists():
        _create(path)
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if _LOCK_MESSAGE not in str(exc).lower():
                raise
            waited = time.monotonic() - started
            if waited > timeout:
                raise StoreBusy(
                    f"the Loupe database {path} is busy: another process has held it for {waited:.0f} s "
                    f"(DuckDB: {exc}); try again when that process has finished"
                ) from None
            attempt += 1
            STATS.lock_retries += 1
            _backoff(attempt)
            continue
        # Only registered tables may be read: without this, a query naming a missing table would
        # silently scan a Python variable of that name (DuckDB's replacement scans).
        con.execute("SET python_enable_replacements = false")
        waited = time.monotonic() - started
        STATS.connects += 1
        STATS.lock_wait_s += waited
        STATS.max_lock_wait_s = max(STATS.max_lock_wait_s, waited)
        return con


@contextmanager
def connection(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection: open with retry, always closed (which releases the file lock)."""
    con = connect(path, timeout)
    try:
        yield con
    finally:
        con.close()


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already rolled back)."""
    try:
        con.rollback()
    except duckdb.TransactionException:
        pass


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN … COMMIT, rolled back when the body or the commit raises."""
    con.begin()
    try:
        yield con
        con.commit()
    except BaseException:
        _rollback(con)
        raise


def _is_conflict(exc: duckdb.Error) -> bool:
    """A collision with a concurrent transaction on the same rows (not a real constraint bug)."""
    text = str(exc).lower()
    return any(m in text for m in _CONFLICT_MESSAGES)


def write(con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run ``work(con)`` in a transaction; re-run it when it collides with another thread's
    transaction. ``work`` must be idempotent (``INSERT OR IGNORE``)."""
    attempt = 1
    while True:
        try:
            with transaction(con):
                return work(con)
        except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
            if attempt >= CONFLICT_ATTEMPTS or not _is_conflict(exc):
                raise
            STATS.conflict_retries += 1
            _backoff(attempt)
            attempt += 1
