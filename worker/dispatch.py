"""Where a job runs, and how its failure reads: every job submission goes through here.

A job for a model that only this process knows (registered from a notebook, ``source ==
"session"``) runs in this process, seeded with the live handle, because a worker cannot load it by
id. Every other job is a Dask task on the cluster (``worker.cluster``): it asks for one GPU when
the workers advertise GPU resources, and it gets the manifest model's file as bytes when the
workers may not see that file (an external cluster, ``LOUPE_SCHEDULER``). A task that raised or
whose worker died becomes one clear error (:func:`failure`); user errors pass through unchanged.

The job functions follow one signature: ``fn(*args, file_bytes=None)``, the shipped model file
last (see ``worker.jobs``).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from model_registry.base import ModelHandle
from worker.jobs import ModelRef, remember

J = TypeVar("J")
R = TypeVar("R")


class BatchCancelled(RuntimeError):
    """The user cancelled; finished chunks are stored and a rerun resumes from them."""


class JobFailed(RuntimeError):
    """A job failed on the cluster (its worker died or it raised); the message says which."""


def model_ref(model: ModelHandle) -> ModelRef:
    """How a worker finds ``model``: zoo models travel by id; manifest models also carry their entry."""
    from model_registry.registry import current_manifest

    entry = current_manifest().model(model.id) if model.source == "manifest" else None
    return ModelRef(model.id, model.weights_hash, entry)


def in_process(model: ModelHandle) -> bool:
    """Models registered in this process only (e.g. from a notebook) cannot be loaded by a worker."""
    return model.source == "session"


def failure(err: BaseException, where: str, retry: str) -> BaseException:
    """A clear message for a failed task running ``where``: user errors pass through unchanged; a
    dead worker or any other exception becomes JobFailed, ending with the ``retry`` advice."""
    from distributed import KilledWorker

    from data.base import DatasetError
    from explainers.base import ExplainError, ParamError
    from model_registry.base import ModelError

    if isinstance(err, KilledWorker):
        return JobFailed(f"the worker running {where} died (out of memory or killed); {retry}")
    if isinstance(err, (ModelError, DatasetError, ExplainError, ParamError)):
        return err
    return JobFailed(f"the job for {where} failed: {type(err).__name__}: {err}")


def _cluster(model: ModelHandle) -> tuple[Any, dict[str, Any]]:
    """The Dask client and the submit options of a job for ``model``: ``resources`` (one GPU when
    the workers advertise them) and the manifest model's file bytes when the workers need them
    (scattered once: Dask keys them by content hash, so resubmitting reuses them)."""
    from worker.cluster import get_client, uses_gpu_resources

    client = get_client()
    ref = model_ref(model)
    shipped = None
    if ref.entry is not None and os.environ.get("LOUPE_SCHEDULER"):
        shipped = client.scatter(ref.entry.path.read_bytes(), hash=True, broadcast=False)
    return client, {"resources": {"GPU": 1} if uses_gpu_resources(client) else None, "file_bytes": shipped}


def run(model: ModelHandle, fn: Callable[..., R], *args: Any, where: str, retry: str,
        inputs: Callable[[Any], dict[str, Any]] | None = None) -> R:
    """``fn(*args)`` as one job for ``model``, in this process or on the cluster (see the module
    docstring); a failure becomes :func:`failure` ``(err, where, retry)``. ``inputs(client)``, when
    given, builds the job's samples as its last argument: ``client`` is None in this process, else
    the Dask client, so samples can travel by reference or beside the task graph (``worker.samples``)."""
    if in_process(model):
        remember(model)
        return fn(*args, *_inputs(inputs, None))
    client, options = _cluster(model)
    future = client.submit(fn, *args, *_inputs(inputs, client), file_bytes=options["file_bytes"], pure=False,
                           resources=options["resources"])
    try:
        return future.result()
    except Exception as err:  # re-raised with context
        raise failure(err, where, retry) from err
    finally:
        if not future.done():
            client.cancel([future])


def _inputs(inputs: Callable[[Any], dict[str, Any]] | None, client: Any) -> tuple[dict[str, Any], ...]:
    return () if inputs is None else (inputs(client),)


def run_each(model: ModelHandle, fn: Callable[..., R], jobs: Sequence[J], *, where: Callable[[J], str], retry: str,
             on_result: Callable[[J, R], None], cancel: threading.Event | None = None,
             inputs: Callable[[J, Any], dict[str, Any]] | None = None) -> None:
    """``fn(job)`` for every job, all submitted at once; ``on_result(job, result)`` is called in
    this thread as each one finishes. Setting ``cancel`` raises :class:`BatchCancelled` before the
    next result is taken (the jobs not yet done are cancelled); a failure raises
    :func:`failure` ``(err, where(job), retry)``. ``inputs(job, client)``, when given, builds each
    job's samples as its second argument (as in :func:`run`)."""
    if in_process(model):
        remember(model)
        for job in jobs:
            _check(cancel)
            on_result(job, fn(job, *_inputs(None if inputs is None else partial(inputs, job), None)))
        return
    from distributed import as_completed

    client, options = _cluster(model)
    futures = {client.submit(fn, job, *_inputs(None if inputs is None else partial(inputs, job), client),
                             file_bytes=options["file_bytes"], pure=False, resources=options["resources"]): job
               for job in jobs}
    try:
        for future in as_completed(futures, loop=client.loop):
            _check(cancel)
            job = futures[future]
            try:
                result = future.result()
            except Exception as err:  # re-raised with context
                raise failure(err, where(job), retry) from err
            on_result(job, result)
    finally:
        client.cancel([f for f in futures if not f.done()])


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BatchCancelled("cancelled; finished chunks are stored, run it again to resume")
