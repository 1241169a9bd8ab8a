"""Connections to the Loupe DuckDB file that several processes (and threads) can share.

A DuckDB file admits one read-write process at a time; a second process's ``connect`` fails with
an ``IOException`` "Could not set lock on file" (notes/stack.md §1a). The Streamlit app and a CLI
batch must both read and write the cache, so every operation is short (stack.md §1d, §1e.3):

1. take this operation's *turn*: an exclusive ``flock`` on ``<db>.lock``, polled every 0.5–3 ms;
2. ``duckdb.connect`` (retried with jittered back-off if a non-Loupe process holds the file);
3. one transaction; 4. ``close`` (which checkpoints and releases DuckDB's lock); 5. end the turn.

No connection is kept between operations, so no process locks the others out for longer than one
operation, and a lock error never reaches a caller (:class:`StoreBusy`, with a plain message, only
after :data:`LOCK_TIMEOUT_S`). Separate ``open`` calls take separate ``flock`` locks, so threads of
one process queue on the turn too and never run conflicting transactions (without it, stack.md
§1a saw duplicate-key aborts on concurrent ``INSERT OR IGNORE``; tests/test_store_concurrency.py
reproduced them, 15 in 3 runs of its thread test, before the turn lock).

The measurements behind this design (connect and close costs, per-operation latency, two writer
processes with and without the turn, warm and cold lookups of a stored run) are in
``bench/results/design_measurements.md``; ``python -m bench.store`` measures them again.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb

LOCK_TIMEOUT_S = 30.0
"""How long an operation waits for another process to release the file before giving up."""
_LOCK_MESSAGE = "could not set lock"


class StoreUnavailable(RuntimeError):
    """The database cannot be used as asked (busy, read-only, disk full); the message says why and
    what to do. Nothing stored before is touched."""


class StoreBusy(StoreUnavailable):
    """Another process held the database for longer than :data:`LOCK_TIMEOUT_S`."""


class StoreReadOnly(StoreUnavailable):
    """The database file or its folder is not writable: stored results open, new ones cannot be saved."""


class StoreFull(StoreUnavailable):
    """A write failed because the disk is full (ENOSPC) or a file-size limit was hit (EFBIG)."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
_FULL_TEXT = ("no space left on device", "file too large", "disk quota exceeded")
_READ_ONLY_TEXT = ("permission denied", "read-only file system", "attached in read-only mode")


def storage_error(path: Path, err: BaseException) -> StoreUnavailable | None:
    """The user-facing error for an OS or DuckDB failure caused by the filesystem (full disk, file
    size limit, read-only file or folder), or None for anything else. Matched by errno for
    ``OSError`` and by the message for DuckDB, which reports the OS error only as text."""
    text = str(err).lower()
    code = err.errno if isinstance(err, OSError) else None
    if code in _FULL_ERRNOS or any(t in text for t in _FULL_TEXT):
        return StoreFull(f"cannot save to the Loupe database in {path.parent}: the disk is full or a file-size "
                         f"limit was reached ({_first_line(err)}); free space or set LOUPE_HOME to another disk. "
                         "Results stored before are intact.")
    if code in _READ_ONLY_ERRNOS or any(t in text for t in _READ_ONLY_TEXT):
        return _read_only(path, _first_line(err))
    return None


def _read_only(path: Path, why: str) -> StoreReadOnly:
    return StoreReadOnly(f"the Loupe database {path} is read-only ({why}): stored results can be opened, but "
                         "new results cannot be saved; make it and its folder writable or set LOUPE_HOME to a "
                         "writable folder")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def writable(path: Path) -> bool:
    """Whether this process may write ``path`` and create files beside it (DuckDB's WAL); for a
    file not created yet, whether its nearest existing folder admits new files."""
    if path.exists():
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable(path: Path) -> None:
    """Raise :class:`StoreReadOnly` before any work when the database cannot be written."""
    if not writable(path):
        raise _read_only(path, "permission denied or read-only file system")


@contextmanager
def guard(path: Path) -> Iterator[None]:
    """Turn filesystem failures (full disk, read-only) inside the block into :class:`StoreUnavailable`."""
    try:
        yield
    except (OSError, duckdb.Error) as err:
        mapped = storage_error(path, err)
        if mapped is None:
            raise
        raise mapped from err


@dataclass
class LockStats:
    """Counters for this process (read by bench/store.py and the concurrency tests): connections
    opened, refused DuckDB connects, polls of a busy turn lock, and the longest time from asking
    for a connection to having it open."""

    connects: int = 0
    lock_retries: int = 0
    max_lock_wait_s: float = 0.0
    turn_waits: int = 0


STATS = LockStats()


def _backoff(attempt: int) -> None:
    """Sleep 2–20 ms times the attempt number (capped at 10): jitter keeps two waiting processes
    from retrying in lock step."""
    time.sleep(random.uniform(0.002, 0.02) * min(attempt, 10))


def connect(path: Path, timeout: float = LOCK_TIMEOUT_S, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (read-write, creating it if missing, unless ``read_only``), retrying while
    another process holds its lock; raises :class:`StoreBusy` after ``timeout`` seconds.

    Read-write whenever the file is writable: DuckDB refuses a read-only and a read-write
    connection to the same file within one process, and the app's threads read and write (one
    connection at a time, see :func:`connection`). Call it through :func:`connection`:
    its turn lock also serialises creating the file (two processes creating it at once race, and
    the loser reads a half-written header: "exists, but it is not a valid DuckDB database file",
    seen in tests/test_store_concurrency.py before the turn lock).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
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
        STATS.connects += 1
        return con


def _lock_file(path: Path) -> BinaryIO | None:
    """``<path>.lock`` opened for ``flock`` (which needs no write access), or None when a
    read-only folder holds none: then readers go without the turn, as nobody can write."""
    lock = path.with_name(path.name + ".lock")
    for mode in ("a+b", "rb"):
        try:
            return open(lock, mode)
        except OSError:
            continue
    return None


@contextmanager
def _turn(path: Path, timeout: float) -> Iterator[None]:
    """Hold ``<path>.lock`` (an exclusive ``flock``) for the duration of one operation, so Loupe
    processes queue on a cheap lock instead of polling DuckDB's (a refused ``duckdb.connect`` costs
    thousands of times the CPU of a refused ``flock``, so waiters can poll the flock every few ms)."""
    started = time.monotonic()
    handle = _lock_file(path)
    if handle is None:
        yield
        return
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    raise StoreBusy(f"the Loupe database {path} is busy: another Loupe process has held it "
                                    f"for {timeout:g} s; try again when it has finished") from None
                STATS.turn_waits += 1
                time.sleep(random.uniform(0.0005, 0.003))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def connection(path: Path, timeout: float = LOCK_TIMEOUT_S, write: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection: wait for this process's turn, open with retry, always closed
    (which releases the file lock). A reader (``write=False``) of a file it may not write opens it
    read-only, so stored results stay readable; a writer gets :class:`StoreReadOnly` up front.
    Full-disk and permission failures inside become :class:`StoreUnavailable`."""
    started = time.monotonic()
    if write:
        check_writable(path)
    read_only = not write and path.exists() and not writable(path)
    with guard(path), _turn(path, timeout):
        con = connect(path, timeout, read_only)
        waited = time.monotonic() - started
        STATS.max_lock_wait_s = max(STATS.max_lock_wait_s, waited)
        try:
            yield con
        finally:
            con.close()  # a checkpoint that fails here for lack of space leaves the commit in the WAL


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
