"""Batches that run in the background of the app process, so a page can watch, cancel and resume
them across reruns.

A batch is one :class:`BatchSpec` (model, dataset slice, explainers with their params, target).
Its id hashes the spec, so starting the same spec again is a resume: every finished chunk is
already in the store (worker/batch.py) and only the rest runs. A client of the public API
(:func:`loupe.request`, :func:`loupe.export`), so it lives in the ``loupe`` package. Each batch has a record,
``$LOUPE_HOME/batches/<id>.json`` (written atomically), holding its status, progress and the run
keys finished so far; a record still marked "running" whose thread is not alive in this process
(the app was restarted) reads as "interrupted".
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

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


def _read(path: Path) -> BatchRecord:
    data = json.loads(path.read_text())
    record = BatchRecord(**{**data, "spec": BatchSpec(**data["spec"]), "run_keys": tuple(data["run_keys"])})
    alive = record.id in _THREADS and _THREADS[record.id][0].is_alive()
    return replace(record, status="interrupted") if record.status == "running" and not alive else record


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


def _run(record: BatchRecord, requests: list[Any], cancel: threading.Event) -> None:
    """The batch thread: one cached explanation per explainer, the record updated as chunks finish."""
    from worker.batch import explain_cached
    from worker.dispatch import BatchCancelled

    keys: list[str] = []
    offset = 0
    try:
        for req in requests:
            def progress(done: int, _total: int, base: int = offset) -> None:
                _write(replace(record, done=base + done, run_keys=tuple(keys)))

            keys.append(explain_cached(req, progress=progress, cancel=cancel).key)  # type: ignore[arg-type]
            offset += len(req.sample_ids)
        _write(replace(record, status="done", done=record.total, run_keys=tuple(keys)))
    except BatchCancelled:
        _write(replace(record, status="cancelled", done=offset, run_keys=tuple(keys)))
    except Exception as err:  # noqa: BLE001 - the record carries the message to the page
        _write(replace(record, status="failed", run_keys=tuple(keys), error=f"{type(err).__name__}: {err}"))


def start(spec: BatchSpec) -> BatchRecord:
    """Validate every request of ``spec`` (user errors raise here, before any work), then run it in
    a background thread. Starting a batch that is already running returns its record; starting a
    finished, cancelled or interrupted one resumes it from the store."""
    if not spec.explainers:
        from explainers.base import ExplainError

        raise ExplainError("choose at least one explainer")
    requests = _requests(spec)
    with _LOCK:
        running = _THREADS.get(spec.id)
        if running and running[0].is_alive():
            return batch(spec.id)
        total = sum(len(r.sample_ids) for r in requests)
        try:
            created = batch(spec.id).created
        except KeyError:
            created = time.time()
        record = _write(BatchRecord(spec.id, spec, "running", 0, total, created=created))
        cancel = threading.Event()
        thread = threading.Thread(target=_run, args=(record, requests, cancel), name=f"loupe-batch-{spec.id}",
                                  daemon=True)
        _THREADS[spec.id] = (thread, cancel)
        thread.start()
    return record


def cancel(batch_id: str) -> None:
    """Ask a running batch to stop; finished chunks stay stored and a restart resumes from them."""
    with _LOCK:
        running = _THREADS.get(batch_id)
    if running:
        running[1].set()


def wait(batch_id: str, timeout: float | None = None) -> BatchRecord:
    """Block until the batch's thread ends (or ``timeout``); returns its record."""
    with _LOCK:
        running = _THREADS.get(batch_id)
    if running:
        running[0].join(timeout)
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
