"""Cached analyses (rules, pathways, embeddings) on the cluster: one artifact per request.

The data flow of DESIGN.md for results that are not per-sample maps: the submitting process
validates the request and gathers the analysis's inputs (``Analysis.prepare``, no model passes;
samples by reference, ``data.base.Samples``), looks the artifact key up in the store, and only on a
miss runs ``Analysis.compute`` as one task on a Dask worker (the model loaded there, cached on the
worker's device; samples read there or shipped beside the graph, ``worker.samples``). The submitter
stores what comes back, so an identical request never computes twice and a worker never opens the
database.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from data.base import Dataset, Samples
from data.lazy import Rows
from explainers.base import Analysis, ExplainError
from explainers.registry import get_analysis
from explainers.runner import library_versions, resolved_params
from model_registry.base import ModelHandle
from store.artifacts import Artifact
from store.keys import RunNotFound, array_digest, artifact_key
from store.links import run_link
from store.runs import Store
from worker import dispatch
from worker.jobs import ModelRef, load_model_on_worker, use_all_cores
from worker.samples import inbound, outbound


@dataclass(frozen=True)
class AnalysisJob:
    """One analysis on one worker. ``analysis`` travels pickled by reference to its class, so any
    analysis defined in an importable module runs, registered or not. The inputs travel apart
    (:func:`run_analysis_job`), so that their samples and arrays stay out of the task graph."""

    model: ModelRef
    analysis: Analysis
    params: dict[str, Any]


def run_analysis_job(job: AnalysisJob, inputs: dict[str, Any], file_bytes: bytes | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Run on a worker: ``(info, arrays, device)``; samples in ``inputs`` are read here."""
    use_all_cores()
    model = load_model_on_worker(job.model, file_bytes)
    info, arrays = job.analysis.compute(model, job.analysis.Params.from_dict(job.params), inbound(inputs))
    return info, arrays, str(model.device)


def digestible(inputs: dict[str, Any]) -> dict[str, Any]:
    """What the artifact key covers: in-memory samples as their array (the key they had before
    samples travelled by reference), file-backed ones by dataset, ids and content hash (no decoding)."""
    out = {}
    for name, value in inputs.items():
        if isinstance(value, Samples) and isinstance(value.dataset.eval.x, Rows):
            value = {"dataset": value.dataset.id, "sample_ids": list(value.ids),
                     "content_hash": value.dataset.content_hash(value.ids)}
        elif isinstance(value, Samples):
            value = np.asarray(value)
        out[name] = value
    return out


@dataclass(frozen=True)
class _Lookup:
    """A validated analysis request: what it runs, its store key and where it is stored."""

    analysis: Analysis
    params: Any
    inputs: dict[str, Any]
    meta: dict[str, Any]
    key: str
    link: str
    store: Store
    found: Artifact | None


def _lookup(analysis: str | Analysis, model: ModelHandle, dataset: Dataset, params: dict[str, Any] | None,
            store: Store | None) -> _Lookup:
    """Validate the request (params resolved: the values used), key it and look it up in the store."""
    chosen = get_analysis(analysis) if isinstance(analysis, str) else analysis
    reason = chosen.unsupported_reason(model)
    if reason:
        raise ExplainError(reason)
    checked = resolved_params(chosen, model, params)
    prepared = chosen.prepare(model, dataset, checked)
    store = store or Store()
    meta: dict[str, Any] = {"kind": chosen.spec.output, "model_id": model.id, "weights_hash": model.weights_hash,
            "dataset_id": dataset.id, "analysis_id": chosen.spec.id, "analysis_version": chosen.spec.version,
            "params": checked.to_dict(), "inputs_hash": array_digest(digestible(prepared.inputs)),
            "sample_ids": prepared.sample_ids}
    key = artifact_key(**{k: v for k, v in meta.items() if k != "sample_ids"})
    link = run_link(key, kind=meta["kind"])
    try:
        found: Artifact | None = replace(store.get_artifact(key), link=link, cached=True)
    except RunNotFound:
        found = None
    return _Lookup(chosen, checked, prepared.inputs, meta, key, link, store, found)


def stored_analysis(analysis: str | Analysis, model: ModelHandle, dataset: Dataset,
                    params: dict[str, Any] | None = None, *, store: Store | None = None) -> Artifact | None:
    """The stored artifact of this request, or None when it is not stored (nothing runs): pages use
    it to show a stored result without starting work."""
    return _lookup(analysis, model, dataset, params, store).found


def run_analysis(analysis: str | Analysis, model: ModelHandle, dataset: Dataset,
                 params: dict[str, Any] | None = None, *, store: Store | None = None) -> Artifact:
    """The stored artifact of ``analysis`` on ``model`` over ``dataset``, computed on a worker only
    when no identical request (same model weights, params and input arrays) is stored."""
    req = _lookup(analysis, model, dataset, params, store)
    if req.found is not None:
        return req.found
    req.store.check_writable()  # before any work whose result could not be saved
    started = time.perf_counter()
    job = AnalysisJob(dispatch.model_ref(model), req.analysis, req.params.to_dict())
    info, arrays, device = dispatch.run(model, run_analysis_job, job, where=f"{req.analysis.spec.id} on {model.id}",
                                        retry="run it again", inputs=lambda client: outbound(req.inputs, client))
    req.store.put_artifact({**req.meta, "seconds": time.perf_counter() - started, "device": device,
                            "versions": library_versions()}, info, arrays)
    return replace(req.store.get_artifact(req.key), link=req.link, cached=False)
