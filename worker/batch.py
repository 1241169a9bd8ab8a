"""Cached explanation requests: the data flow of DESIGN.md in one place.

For each request: compute every sample's item key, look them up in the store, run only the missing
samples as chunked jobs (``worker.dispatch``: on the Dask cluster, or in this process for session
models), store each chunk as it finishes (so an interrupted batch resumes where it stopped when it
is run again), then record the run and assemble the result from the store. An identical request
therefore runs zero model passes.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from data.base import Dataset
from data.classes import ClassMap
from explainers.base import ExplainError, Passes, Result
from explainers.registry import get_explainer
from explainers.runner import (Progress, check_compatible, keyed_hash, library_versions, parse_target, resolved_params,
                               run_fields)
from model_registry.base import ModelHandle
from store.keys import RunNotFound, item_key, run_key
from store.links import run_link
from store.runs import ItemRecord, Store, StoredRun
from worker import dispatch
from worker.jobs import Job, PassTime, predict_job, run_job, run_sanity_job, time_passes
from worker.samples import job_samples, outbound

CHUNK_SIZE = 16
"""Samples per job: small enough that progress moves and a lost worker loses little."""


@dataclass(frozen=True)
class Request:
    """One explainer over samples of a dataset, fully resolved (params validated, defaults filled;
    ``class_map``: how the dataset's labels map to the model's classes)."""

    model: ModelHandle
    dataset: Dataset
    sample_ids: tuple[int, ...]
    explainer_id: str
    params: dict
    target: str | int
    class_map: ClassMap

    def item_meta(self) -> dict[str, Any]:
        spec = get_explainer(self.explainer_id).spec
        return {"model_id": self.model.id, "weights_hash": self.model.weights_hash, "dataset_id": self.dataset.id,
                "explainer_id": spec.id, "explainer_version": spec.version, "params": self.params}

    def item_keys(self) -> list[str]:
        meta = self.item_meta()
        return [item_key(**meta, sample_id=i, sample_hash=keyed_hash(self.dataset, [i], self.class_map),
                         target=self.target)
                for i in self.sample_ids]

    def labels(self, ids: Sequence[int]) -> np.ndarray:
        """Labels of ``ids`` as the model's class indices (-1 where a class has no match)."""
        return self.class_map.labels(self.dataset.labels(ids))


def make_request(model: ModelHandle, dataset: Dataset, sample_ids: Sequence[int], explainer_id: str,
                 params: dict | None = None, target: str | int = "predicted") -> Request:
    """Validate everything that can be checked before any work: compatibility, ids, params, target."""
    explainer = get_explainer(explainer_id)
    reason = explainer.unsupported_reason(model)
    if reason:
        raise ExplainError(reason)
    check_compatible(model, dataset)
    ids = tuple(int(i) for i in dataset.check_ids(sample_ids))
    if not ids:
        raise ExplainError("no samples selected")
    target = parse_target(target, len(model.classes))
    class_map = dataset.class_map_for(model.classes)
    if target == "label":
        class_map.require(model.id, dataset.id)
    return Request(model, dataset, ids, explainer.spec.id, resolved_params(explainer, model, params).to_dict(), target,
                   class_map)


# -- conversions between results and stored items ------------------------------------------------
def _split_value(value: Any, i: int, n: int) -> tuple[str, Any]:
    """Where one extras value goes for sample ``i`` of ``n``: ("array", a) or ("scalar", s)."""
    if isinstance(value, np.ndarray):
        return "array", value[i] if value.ndim and value.shape[0] == n else value
    if isinstance(value, (np.generic, int, float, bool, str)) or value is None:
        return "scalar", value.item() if isinstance(value, np.generic) else value
    try:
        return "array", np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return "scalar", json.dumps(value, default=str)


def to_items(res: Result, keys: Sequence[str]) -> list[ItemRecord]:
    """One record per sample of ``res``: map, scalar metrics, scalar extras and the sample's slice of
    every per-sample extras array (batch-level arrays are kept whole with each sample)."""
    n = len(res.sample_ids)
    records = []
    for i, (sid, key) in enumerate(zip(res.sample_ids, keys)):
        arrays: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for name, value in res.extras.items():
            where, v = _split_value(value, i, n)
            (arrays if where == "array" else extras)[name] = v
        records.append(ItemRecord(
            item_key=key, sample_id=int(sid), label=int(res.labels[i]), target=int(res.targets[i]),
            prediction=int(res.predictions[i]), confidence=float(res.confidences[i]),
            metrics=res.metrics[i] if res.metrics else {},
            extras=extras, map=res.attributions[i], arrays=arrays, seconds=res.provenance.get("seconds", 0.0) / n,
        ))
    return records


def from_items(items: Sequence[ItemRecord]) -> Result:
    """A :class:`Result` assembled from stored records (in request order)."""
    extras: dict[str, Any] = {}
    for name in items[0].arrays:
        values = [np.asarray(rec.arrays[name]) for rec in items if name in rec.arrays]
        if len(values) == len(items) and len({v.shape for v in values}) == 1:
            extras[name] = np.stack(values)
    for name, value in items[0].extras.items():
        scalars = [rec.extras.get(name) for rec in items]
        extras[name] = value if all(v == value for v in scalars) else np.asarray(scalars)
    return Result(
        attributions=np.stack([np.asarray(rec.map) for rec in items]),
        extras=extras,
        sample_ids=[rec.sample_id for rec in items],
        targets=np.array([rec.target for rec in items], dtype=np.int64),
        predictions=np.array([rec.prediction for rec in items], dtype=np.int64),
        confidences=np.array([rec.confidence for rec in items], dtype=np.float32),
        labels=np.array([rec.label for rec in items], dtype=np.int64),
        metrics=[dict(rec.metrics) for rec in items],
    )


# -- execution -----------------------------------------------------------------------------------
def _job(req: Request, ids: Sequence[int], batch_size: int) -> Job:
    ds = req.dataset
    return Job(
        model=dispatch.model_ref(req.model),
        dataset_id=ds.id, task=ds.task, classes=tuple(req.model.classes), sample_ids=tuple(ids), y=req.labels(ids),
        explainer_id=req.explainer_id, params=req.params, target=req.target, batch_size=batch_size,
    )


def _where(job: Job) -> str:
    return f"samples {job.sample_ids[0]}…{job.sample_ids[-1]} ({job.explainer_id} on {job.model.model_id})"


_RESUME = "finished chunks are stored, run the same request again to resume"


def _compute(req: Request, missing: Sequence[int], keys: dict[int, str], store: Store, batch_size: int,
             chunk_size: int, on_chunk: Callable[[int], None], cancel: threading.Event | None) -> int:
    """Run the missing samples, storing each chunk as it finishes; returns the model passes run."""
    jobs = [_job(req, missing[s:s + chunk_size], batch_size) for s in range(0, len(missing), chunk_size)]
    meta = req.item_meta()
    passes = 0

    def store_chunk(job: Job, done: tuple[Result, int]) -> None:
        nonlocal passes
        res, n_passes = done
        passes += n_passes
        store.put_items({**meta, "device": res.provenance.get("device")},
                        to_items(res, [keys[i] for i in job.sample_ids]))
        on_chunk(len(job.sample_ids))

    dispatch.run_each(req.model, run_job, jobs, where=_where, retry=_RESUME, on_result=store_chunk, cancel=cancel,
                      inputs=lambda job, client: job_samples(req.dataset, job.sample_ids, client))
    return passes


def _run_fields(req: Request) -> dict[str, Any]:
    """What the stored run of ``req`` is keyed by (``store.keys.run_key``)."""
    return run_fields(req.model, req.dataset, req.sample_ids, req.explainer_id, req.params, req.target)


def _finish(req: Request, stored: StoredRun, meta: dict[str, Any]) -> Result:
    res = from_items(stored.items)
    return replace(res, key=stored.key, link=run_link(stored.key), cached=meta["computed"] == 0,
                   provenance={**stored.meta, "explainer": req.explainer_id, "model": req.model.id,
                               "dataset": req.dataset.id, **meta})


def _record(req: Request, fields: dict[str, Any], keys: Sequence[str], store: Store, seconds: float) -> StoredRun:
    """Record the run of ``req`` (keyed by ``fields``) over its stored items and return it as stored."""
    meta = {**fields, "kind": "attribution", "status": "done", "seconds": seconds, "device": str(req.model.device),
            "versions": library_versions()}
    return store.get_run(store.put_run(meta, list(keys)))


def find_stored(req: Request, store: Store | None = None) -> Result | None:
    """The stored result of ``req`` without any model pass, or None when a sample of it was never
    explained. Samples are stored one by one, so a request over samples that other runs computed
    (#0 of a run over #0, #3, #9) is answered from them: its run is recorded over the stored items
    (a share link needs it), unless the store is read-only, where None is returned."""
    from store import db

    store = store or Store()
    fields = _run_fields(req)
    try:
        stored = store.get_run(run_key(**fields))
    except RunNotFound:
        keys = req.item_keys()
        if len(store.lookup(keys)) < len(set(keys)) or not db.writable(store.path):
            return None
        stored = _record(req, fields, keys, store, 0.0)
    return _finish(req, stored, {"computed": 0, "reused": len(req.sample_ids), "passes": 0})


def explain_cached(req: Request, *, store: Store | None = None, batch_size: int = 16, chunk_size: int = CHUNK_SIZE,
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> Result:
    """Serve ``req`` from the store, computing only what is missing on the cluster.

    A stored run is returned after one lookup; otherwise stored samples are reused, the rest run as
    chunk jobs and are stored as they finish, and the run is recorded last."""
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExplainError(f"{name} must be an integer ≥ 1, got {value!r}")
    store = store or Store()
    started = time.perf_counter()
    fields = _run_fields(req)
    try:
        stored = store.get_run(run_key(**fields))
        if progress:
            progress(len(req.sample_ids), len(req.sample_ids))
        return _finish(req, stored, {"computed": 0, "reused": len(req.sample_ids), "passes": 0})
    except RunNotFound:
        pass
    store.check_writable()  # before any work whose result could not be saved
    keys = dict(zip(req.sample_ids, req.item_keys()))
    found = store.lookup(list(keys.values()))
    missing = [i for i in req.sample_ids if keys[i] not in found]
    done = len(req.sample_ids) - len(missing)
    if progress:
        progress(done, len(req.sample_ids))

    def on_chunk(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(req.sample_ids))

    passes = _compute(req, missing, keys, store, batch_size, chunk_size, on_chunk, cancel) if missing else 0
    stored = _record(req, fields, [keys[i] for i in req.sample_ids], store, time.perf_counter() - started)
    return _finish(req, stored, {"computed": len(missing), "reused": len(found), "passes": passes})


def sanity_check(req: Request, seed: int = 0) -> np.ndarray:
    """Adebayo et al.'s model-randomisation check for ``req`` on the cluster (not cached): one
    Spearman correlation per sample between |map| of the trained and of a re-initialised model."""
    job = _job(req, req.sample_ids, len(req.sample_ids))
    return dispatch.run(req.model, run_sanity_job, job, seed, where=_where(job), retry=_RESUME,
                        inputs=lambda client: job_samples(req.dataset, job.sample_ids, client))


def predict(model: ModelHandle, dataset: Dataset, sample_ids: Sequence[int]) -> np.ndarray:
    """Class probabilities of ``sample_ids`` (N×classes), computed on the worker."""
    check_compatible(model, dataset)
    samples = dataset.samples(sample_ids)
    return dispatch.run(model, predict_job, dispatch.model_ref(model), where=f"predict_job for {model.id}",
                        retry="try again", inputs=lambda client: outbound({"x": samples}, client))


_PASS_TIMES: dict[tuple[str, str], PassTime] = {}


def pass_time(model: ModelHandle) -> PassTime:
    """The model's measured seconds per forward and backward row on the worker's device (a job on
    the cluster, or in this process for session models), cached per model for this process."""
    key = (model.id, model.weights_hash)
    if key in _PASS_TIMES:
        return _PASS_TIMES[key]
    _PASS_TIMES[key] = dispatch.run(model, time_passes, dispatch.model_ref(model), where=f"time_passes for {model.id}",
                                    retry="try again")
    return _PASS_TIMES[key]


@dataclass(frozen=True)
class Estimate:
    """What running a request would cost: the samples not in the store yet, their model passes, and
    the seconds those passes take at the worker's measured pass time (a (low, high) range)."""

    explainer_id: str
    n_samples: int
    n_cached: int
    passes: Passes
    seconds: tuple[float, float]
    device: str


def estimate(req: Request) -> Estimate:
    """The cost preview of ``req``: only samples missing from the store count."""
    from explainers.runner import sample_passes

    found = Store().lookup(req.item_keys())
    missing = len(req.sample_ids) - len(found)
    passes = sample_passes(req.model, req.explainer_id, req.params).times(missing)
    timing = pass_time(req.model) if missing else None
    seconds = tuple(
        0.0 if timing is None else passes.forward[i] * timing.forward_s + passes.backward[i] * timing.backward_s
        for i in (0, 1)
    )
    return Estimate(req.explainer_id, len(req.sample_ids), len(found), passes, seconds,  # type: ignore[arg-type]
                    timing.device if timing else str(req.model.device))
