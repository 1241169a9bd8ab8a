"""The files beside the database: where an item's map and arrays and an artifact's arrays live
(relative to the database's folder), and how they are written.

Every file is named by a content key, so a name always holds the same bytes: a write publishes a
complete file under that name once (:func:`atomic_write`), and a reader never sees half a file.
"""
from __future__ import annotations

import fcntl
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class StoreError(RuntimeError):
    """The store's files are inconsistent (e.g. a map file was deleted); the message says which."""


def map_file(key: str) -> str:
    """An item's map (``.npy``), relative to the database's folder."""
    return f"maps/{key[:2]}/{key}.npy"


def arrays_file(key: str) -> str:
    """An item's other arrays (``.npz``), relative to the database's folder."""
    return f"maps/{key[:2]}/{key}.npz"


def artifact_file(key: str) -> str:
    """An artifact's arrays and info (``.npz``), relative to the database's folder."""
    return f"artifacts/{key[:2]}/{key}.npz"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via a temporary file and ``os.replace``. Skipped when the file exists: the name is a
    content key, so an existing file already holds this content. The bytes are built in memory and
    written by Python's file object, so a full disk raises ``OSError`` with its errno (numpy's
    own file writes report only "n requested and m written")."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    buffer = io.BytesIO()
    write(buffer)
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock`` (created if missing) for the block, so that a
    read-modify-write of a file that is not content-keyed (such as the manifest) by several app
    processes on one ``LOUPE_HOME``, or by several threads (each call opens its own descriptor),
    happens one at a time and no writer overwrites another's change. Waits for the holder; closing
    releases it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
