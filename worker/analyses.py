"""Cached analyses (rules, pathways, embeddings) on the cluster: one artifact per request.

The data flow of DESIGN.md for results that are not per-sample maps: the submitting process
validates the request and gathers the analysis's inputs (``Analysis.prepare``, no model passes),
looks the artifact key up in the store, and only on a miss runs ``Analysis.compute`` as one task
on a Dask worker (the model loaded there, cached on the worker's device). The submitter stores
what comes back, so an identical request never computes twice and a worker never opens the database.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from data.base import Dataset
from explainers.base import Analysis, ExplainError
from explainers.registry import get_analysis
from explainers.runner import library_versions
from model_registry.base import ModelHandle
from store.artifacts import Artifact
from store.keys import RunNotFound, array_digest, artifact_key
from store.links import run_link
from store.runs import Store
from worker import dispatch
from worker.jobs import ModelRef, load_model_on_worker, use_all_cores


@dataclass(frozen=True)
class AnalysisJob:
    """One analysis on one worker. ``analysis`` travels pickled by reference to its class, so any
    analysis defined in an importable module runs, registered or not."""

    model: ModelRef
    analysis: Analysis
    params: dict[str, Any]
    inputs: dict[str, Any]


def run_analysis_job(job: AnalysisJob, file_bytes: bytes | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Run on a worker: ``(info, arrays, device)``."""
    use_all_cores()
    model = load_model_on_worker(job.model, file_bytes)
    info, arrays = job.analysis.compute(model, job.analysis.Params.from_dict(job.params), job.inputs)
    return info, arrays, str(model.device)


def run_analysis(analysis: str | Analysis, model: ModelHandle, dataset: Dataset,
                 params: dict[str, Any] | None = None, *, store: Store | None = None) -> Artifact:
    """The stored artifact of ``analysis`` on ``model`` over ``dataset``, computed on a worker only
    when no identical request (same model weights, params and input arrays) is stored."""
    chosen = get_analysis(analysis) if isinstance(analysis, str) else analysis
    reason = chosen.unsupported_reason(model)
    if reason:
        raise ExplainError(reason)
    checked = chosen.Params.from_dict(params)
    prepared = chosen.prepare(model, dataset, checked)
    store = store or Store()
    meta: dict[str, Any] = {"kind": chosen.spec.output, "model_id": model.id, "weights_hash": model.weights_hash,
            "dataset_id": dataset.id, "analysis_id": chosen.spec.id, "analysis_version": chosen.spec.version,
            "params": checked.to_dict(), "inputs_hash": array_digest(prepared.inputs),
            "sample_ids": prepared.sample_ids}
    key = artifact_key(**{k: v for k, v in meta.items() if k != "sample_ids"})
    link = run_link(key, kind=meta["kind"])
    try:
        return replace(store.get_artifact(key), link=link, cached=True)
    except RunNotFound:
        pass
    store.check_writable()  # before any work whose result could not be saved
    started = time.perf_counter()
    job = AnalysisJob(dispatch.model_ref(model), chosen, checked.to_dict(), prepared.inputs)
    info, arrays, device = dispatch.run(model, run_analysis_job, job, where=f"{chosen.spec.id} on {model.id}",
                                        retry="run it again")
    store.put_artifact({**meta, "seconds": time.perf_counter() - started, "device": device,
                        "versions": library_versions()}, info, arrays)
    return replace(store.get_artifact(key), link=link, cached=False)
