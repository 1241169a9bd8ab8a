"""Batches that run in the background of the app process, so a page can watch, cancel and resume
them across reruns.

A batch is one :class:`BatchSpec` (model, dataset slice, explainers with their params, target).
Its id hashes the spec, so starting the same spec again is a resume: every finished chunk is
already in the store (worker/batch.py) and only the rest runs. A client of the public API
(:func:`loupe.request`, :func:`loupe.export`), so it lives in the ``loupe`` package. Each batch has a record,
``$LOUPE_HOME/batches/<id>.json`` (written atomically), holding its status, progress and the run
keys finished so far.

Several app processes may share one ``LOUPE_HOME`` (a lab behind a reverse proxy), so a batch
belongs to the process that runs it, and the others see it through the files: the running thread
holds an exclusive ``flock`` on ``batches/<id>.lock`` from before its record says "running" until
after its record says how it ended. A record marked "running" whose lock nobody holds (its process
was killed or restarted; the kernel drops the lock with the process) reads as "interrupted";
starting a batch whose lock another process holds returns its record instead of running it twice;
and cancelling writes ``batches/<id>.cancel``, which the running thread reads as each chunk is
stored, so any process can cancel any batch.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

EXPORT_FORMATS = {"csv": "to_csv", "parquet": "to_parquet"}
"""Export format -> the DataFrame writer that produces it."""
_THREADS: dict[str, tuple[threading.Thread, threading.Event]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BatchSpec:
    """What a batch explains: ``explainers`` maps explainer id -> params (non-default values)."""

    model: str
    dataset: str
    samples: str
    explainers: dict[str, dict[str, Any]]
    target: str = "predicted"

    @property
    def id(self) -> str:
        """16 hex digits of the SHA-256 of the spec's canonical JSON."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BatchRecord:
    """A batch's state: ``status`` is running, done, cancelled, failed or interrupted; progress counts
    samples over all explainers."""

    id: str
    spec: BatchSpec
    status: str
    done: int = 0
    total: int = 0
    run_keys: tuple[str, ...] = ()
    error: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


def _folder() -> Path:
    from store.paths import loupe_home

    return loupe_home() / "batches"


def _write(record: BatchRecord) -> BatchRecord:
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{record.id}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(asdict(replace(record, updated=time.time())), default=str))
    os.replace(tmp, folder / f"{record.id}.json")
    return record


def _claim(batch_id: str) -> IO[bytes] | None:
    """The batch's lock file, locked by this call (the caller owns the batch until it closes the
    file), or None when a thread of any process holds it: the batch is running there."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{batch_id}.lock", "a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _running(batch_id: str) -> bool:
    """Whether a thread of some process is running the batch (holds its lock)."""
    handle = _claim(batch_id)
    if handle is None:
        return True
    handle.close()  # closing the only descriptor of the lock releases it
    return False


def _read(path: Path) -> BatchRecord:
    data = json.loads(path.read_text())
    record = BatchRecord(**{**data, "spec": BatchSpec(**data["spec"]), "run_keys": tuple(data["run_keys"])})
    if record.status == "running" and not _running(record.id):
        return replace(record, status="interrupted")
    return record


def batch(batch_id: str) -> BatchRecord:
    """The record of ``batch_id``; KeyError when there is none."""
    path = _folder() / f"{batch_id}.json"
    if not path.is_file():
        raise KeyError(f"no batch with id {batch_id!r}")
    return _read(path)


def list_batches() -> list[BatchRecord]:
    """Every recorded batch, newest first."""
    folder = _folder()
    records = [_read(p) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: r.created, reverse=True)


def _requests(spec: BatchSpec) -> list[Any]:
    import loupe

    return [loupe.request(spec.model, spec.dataset, spec.samples, e, p, spec.target) for e, p in spec.explainers.items()]


def _cancel_marker(batch_id: str) -> Path:
    return _folder() / f"{batch_id}.cancel"


def _run(record: BatchRecord, requests: list[Any], cancel: threading.Event, lock: IO[bytes]) -> None:
    """The batch thread: one cached explanation per explainer, the record updated as chunks finish
    (and a cancel marker from any process turned into ``cancel``); the batch's lock, taken by
    :func:`start`, is released after the final record is written."""
    from worker.batch import explain_cached
    from worker.dispatch import BatchCancelled

    keys: list[str] = []
    offset = 0
    try:
        for req in requests:
            def progress(done: int, _total: int, base: int = offset) -> None:
                if _cancel_marker(record.id).exists():
                    cancel.set()
                _write(replace(record, done=base + done, run_keys=tuple(keys)))

            keys.append(explain_cached(req, progress=progress, cancel=cancel).key)  # type: ignore[arg-type]
            offset += len(req.sample_ids)
        _write(replace(record, status="done", done=record.total, run_keys=tuple(keys)))
    except BatchCancelled:
        _write(replace(record, status="cancelled", done=offset, run_keys=tuple(keys)))
    except Exception as err:  # noqa: BLE001 - the record carries the message to the page
        _write(replace(record, status="failed", run_keys=tuple(keys), error=f"{type(err).__name__}: {err}"))
    finally:
        lock.close()


def start(spec: BatchSpec) -> BatchRecord:
    """Validate every request of ``spec`` (user errors raise here, before any work), then run it in
    a background thread. Starting a batch that is already running, in this process or another one
    on the same ``LOUPE_HOME``, returns its record; starting a finished, cancelled or interrupted one
    resumes it from the store."""
    if not spec.explainers:
        from explainers.base import ExplainError

        raise ExplainError("choose at least one explainer")
    requests = _requests(spec)
    with _LOCK:
        lock = _claim(spec.id)
        if lock is None:
            return batch(spec.id)
        try:
            total = sum(len(r.sample_ids) for r in requests)
            try:
                created = batch(spec.id).created
            except KeyError:
                created = time.time()
            _cancel_marker(spec.id).unlink(missing_ok=True)  # a cancel of an earlier run
            record = _write(BatchRecord(spec.id, spec, "running", 0, total, created=created))
            cancel = threading.Event()
            thread = threading.Thread(target=_run, args=(record, requests, cancel, lock),
                                      name=f"loupe-batch-{spec.id}", daemon=True)
            _THREADS[spec.id] = (thread, cancel)
            thread.start()
        except BaseException:
            lock.close()
            raise
    return record


def cancel(batch_id: str) -> None:
    """Ask a running batch to stop, in whichever process runs it; finished chunks stay stored and a
    restart resumes from them."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    _cancel_marker(batch_id).touch()
    with _LOCK:
        running = _THREADS.get(batch_id)
    if running:
        running[1].set()


def wait(batch_id: str, timeout: float | None = None, poll: float = 0.2) -> BatchRecord:
    """Block until the batch stops running (or ``timeout`` seconds pass); returns its record. A
    batch of this process is joined; one that another process runs is polled."""
    with _LOCK:
        running = _THREADS.get(batch_id)
    if running:
        running[0].join(timeout)
        return batch(batch_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while _running(batch_id) and (deadline is None or time.monotonic() < deadline):
        time.sleep(poll)
    return batch(batch_id)


def export(batch_id: str, fmt: str = "csv") -> bytes:
    """The export table (store/export.py columns) of every finished run of the batch, as CSV or
    Parquet bytes."""
    import io

    import pandas as pd

    import loupe

    record = batch(batch_id)
    if not record.run_keys:
        raise ValueError(f"batch {batch_id} has no finished runs to export yet")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    frame = pd.concat([loupe.export(key) for key in record.run_keys], ignore_index=True)
    buffer = io.BytesIO()
    getattr(frame, EXPORT_FORMATS[fmt])(buffer, index=False)
    return buffer.getvalue()
