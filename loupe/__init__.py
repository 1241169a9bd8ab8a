"""Loupe's public Python API; the command line (``python -m loupe ...``) is :mod:`loupe.cli`.

Notebook use::

    import loupe
    loupe.models(); loupe.datasets(); loupe.explainers()
    ds = loupe.dataset("shapes"); ds.inputs([0, 1]); ds.labels([0, 1]); ds.masks([0, 1])
    m = loupe.model("shapes_cnn"); m.module; m.classes
    res = loupe.explain(model="shapes_cnn", dataset="shapes", samples=[0, 1, 2],
                        explainer="integrated_gradients", params={"n_steps": 32})
    res.attributions, res.targets, res.predictions, res.metrics, res.extras

Pages and the CLI go through these functions (background batches: :mod:`loupe.background`); none
of them branches on explainer names. Registering models and datasets (``add_entry``, ``save_upload``,
``max_upload_bytes``, ``manifest_path``, the manifest's kinds) and links (``base_url``,
``PAGE_OF_KIND``) come from the modules below, named here so callers need only this API.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from data.base import Dataset, DatasetError, parse_samples
from explainers.base import Analysis, ExplainError, Explainer, ParamError, Result
from explainers.registry import UnknownExplainer, all_analyses, all_explainers, get_explainer
from manifest import DATASET_KINDS, MODEL_KINDS, TASKS
from model_registry.base import ModelError, ModelHandle
from model_registry.uploads import RegistrationError, add_entry, max_upload_bytes, save_upload
from store.links import PAGE_OF_KIND, base_url
from store.paths import loupe_home, manifest_path

if TYPE_CHECKING:
    import pandas as pd

    from explainers.metric_info import MetricInfo
    from explainers.results.pathways import PathwaysResult
    from explainers.results.rules import RulesResult
    from explainers.results.sanity import SanityResult
    from explainers.runner import Progress
    from store.artifacts import Artifact
    from worker.batch import Estimate, Request

__all__ = [
    "DATASET_KINDS", "MODEL_KINDS", "PAGE_OF_KIND", "TASKS", "DatasetError", "ExplainError", "ModelError",
    "ParamError", "RegistrationError", "Result", "UnknownExplainer", "add_entry", "analysis", "artifact", "attacks",
    "base_url", "dataset", "datasets", "estimate", "explain", "explain_batch", "explainers", "export", "kind_of",
    "link", "loupe_home", "main", "manifest_path", "max_upload_bytes", "model", "models", "parse_samples", "pathways",
    "pathways_result", "predict", "request", "resolved_params", "result_rows", "rules", "rules_result", "run", "runs",
    "sanity", "sanity_check", "sanity_result", "save_upload", "stored", "user_errors",
]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user: the CLI prints them without a traceback."""
    from store.db import StoreUnavailable
    from store.files import StoreError
    from store.keys import InvalidKey, RunNotFound
    from store.schema import SchemaError
    from worker.cluster import ClusterError
    from worker.dispatch import BatchCancelled, JobFailed

    return (ModelError, DatasetError, ExplainError, ParamError, UnknownExplainer, InvalidKey, RunNotFound,
            StoreError, StoreUnavailable, SchemaError, JobFailed, BatchCancelled, ClusterError, RegistrationError)


# -- listings ------------------------------------------------------------------------------------
def models() -> list[dict]:
    """Every registered model (zoo + manifest) with its status ("ok" or "error" and the reason)."""
    from model_registry.registry import list_models

    return list_models()


def datasets() -> list[dict]:
    """Every registered dataset (built-in + manifest) with its status."""
    from data.registry import list_datasets

    return list_datasets()


def explainers() -> list[dict]:
    """Every registered explainer and analysis: id, title, paper, modalities, capabilities, output
    kind ("attribution" for per-sample maps; "rules", "pathways", "embedding" … for analyses) and
    its params schema."""
    methods: list[Explainer | Analysis] = [*all_explainers().values(), *all_analyses().values()]
    return [
        {
            "id": e.spec.id,
            "title": e.spec.title,
            "paper": e.spec.paper,
            "modalities": list(e.spec.modalities),
            "needs_gradients": e.spec.needs_gradients,
            "needs_layer": e.spec.needs_layer,
            "class_agnostic": e.spec.class_agnostic,
            "stochastic": e.spec.stochastic,
            "output": e.spec.output,
            "version": e.spec.version,
            "description": e.spec.description,
            "params": [{k: v for k, v in f.items() if v is not None} for f in e.Params.schema()],
        }
        for e in methods
    ]


def metric_info(name: str) -> MetricInfo:
    """What the metric ``name`` means: label, direction (``arrow`` ↑/↓, ``higher_is_better``), a
    one-line ``help``, and ``format(value)`` (``explainers.metric_info.MetricInfo``)."""
    from explainers.metric_info import metric_info as info

    return info(name)


def metric_order(names: Sequence[str]) -> list[str]:
    """Metric names in display order (the faithfulness metrics first, as ``metric_info`` lists them)."""
    from explainers.metric_info import in_display_order

    return in_display_order(list(names))


AGREEMENT_MEASURES = ("spearman", "topk_iou")
"""Ways to measure how much two explainers agree on a sample (see :func:`agreement`)."""


def agreement(a: np.ndarray, b: np.ndarray, measure: str = "spearman") -> np.ndarray:
    """Per-sample agreement of two batches of maps (same shape): ``spearman`` (rank correlation over
    all units) or ``topk_iou`` (IoU of the top 10% units by |value|); see explainers/evaluation.py."""
    from explainers.evaluation import spearman, topk_iou

    measures = {"spearman": spearman, "topk_iou": topk_iou}
    if measure not in measures:
        raise ValueError(f"measure must be one of {list(measures)}, got {measure!r}")
    return measures[measure](a, b)


# -- handles -------------------------------------------------------------------------------------
def _model(model_id: str) -> ModelHandle:
    from model_registry.registry import get_model

    return get_model(model_id)


def _dataset(dataset_id: str) -> Dataset:
    from data.registry import get_dataset

    return get_dataset(dataset_id)


def model(model_id: str) -> ModelHandle:
    """The model handle: ``.module`` (nn.Module in eval mode), ``.classes``, ``.input_shape`` …"""
    return _model(model_id)


def dataset(dataset_id: str) -> Dataset:
    """The dataset handle: ``.classes``, ``.inputs(ids)``, ``.labels(ids)``, ``.masks(ids)`` …"""
    return _dataset(dataset_id)


# -- explaining (cached, on the cluster) ---------------------------------------------------------
def request(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str,
            params: dict[str, Any] | None = None, target: str | int = "predicted") -> Request:
    """The validated request an ``explain`` call runs (a ``worker.batch.Request``): every check
    (ids, compatibility, params, target) is made here, before any work."""
    from worker.batch import make_request

    get_explainer(explainer)
    handle, ds = _model(model), _dataset(dataset)
    ids = parse_samples(samples, len(ds))
    if not ids:
        raise DatasetError(f"the sample selection {samples!r} is empty")
    return make_request(handle, ds, ids, explainer, params, target)


def explain(
    model: str,
    dataset: str,
    samples: str | Sequence[int] | int | None,
    explainer: str,
    params: dict[str, Any] | None = None,
    target: str | int = "predicted",
    batch_size: int = 16,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Result:
    """Explain ``samples`` of ``dataset`` on ``model`` with ``explainer``.

    Served from the cache when stored; otherwise run on the Dask cluster (embedded by default),
    stored, and returned. ``target`` is "predicted" (default), "label" or a class index;
    ``batch_size`` never changes results; ``progress(done, total)`` is called as chunks finish and
    setting the ``cancel`` event (threading.Event) stops the work (finished chunks stay stored).
    The result has ``key``, ``link`` and ``cached``.
    """
    from worker.batch import explain_cached

    req = request(model, dataset, samples, explainer, params, target)
    return explain_cached(req, batch_size=batch_size, progress=progress, cancel=cancel)


def explain_batch(
    model: str,
    dataset: str,
    samples: str | Sequence[int] | int | None,
    explainers: dict[str, dict[str, Any] | None] | Sequence[str],
    target: str | int = "predicted",
    batch_size: int = 16,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[Result]:
    """Several explainers over one slice (``explainers``: ids, or id -> params). Requests are all
    validated before any work starts; each is stored as it finishes, so rerunning an interrupted
    batch resumes it."""
    from worker.batch import explain_cached

    chosen = dict(explainers) if isinstance(explainers, dict) else {e: None for e in explainers}
    reqs = [request(model, dataset, samples, e, p, target) for e, p in chosen.items()]
    total = sum(len(r.sample_ids) for r in reqs)
    results: list[Result] = []
    for req in reqs:
        offset = sum(len(r.sample_ids) for r in results)
        report = (lambda done, _n, o=offset: progress(o + done, total)) if progress else None
        results.append(explain_cached(req, batch_size=batch_size, progress=report, cancel=cancel))
    return results


def stored(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str,
           params: dict[str, Any] | None = None, target: str | int = "predicted") -> Result | None:
    """The stored result of this ``explain`` request, or None when a sample of it was never explained;
    never computes. Samples stored by other runs count: the run is recorded over them."""
    from worker.batch import find_stored

    return find_stored(request(model, dataset, samples, explainer, params, target))


def predict(model: str, dataset: str, samples: str | Sequence[int] | int | None) -> list[dict]:
    """Per sample: id, label and predicted class (both indices of the model's classes; label -1 when
    the sample's class is not one of the model's), and the prediction's probability, computed on the worker."""
    from worker.batch import predict as predict_on_worker

    handle, ds = _model(model), _dataset(dataset)
    ids = parse_samples(samples, len(ds))
    probs = predict_on_worker(handle, ds, ids)
    labels = ds.model_labels(handle.classes, ids)
    return [{"sample_id": i, "label": int(labels[k]), "prediction": int(probs[k].argmax()),
             "confidence": float(probs[k].max())} for k, i in enumerate(ids)]


def estimate(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str,
             params: dict[str, Any] | None = None, target: str | int = "predicted") -> Estimate:
    """The cost preview of an ``explain`` call without running it: samples already stored, the model
    passes the rest need (``Explainer.passes`` plus prediction and metrics) and the seconds they take
    at the model's pass time measured on the worker (``worker.batch.Estimate``)."""
    from worker.batch import estimate as estimate_request

    return estimate_request(request(model, dataset, samples, explainer, params, target))


def sanity_check(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str, params: dict[str, Any] | None = None,
                 target: str | int = "predicted", seed: int = 0) -> np.ndarray:
    """Model-randomisation sanity check (Adebayo et al., NeurIPS 2018): per-sample Spearman
    correlation between |map| on the trained model and on a re-initialised copy. Values near 1 mean
    the explanation ignores what the model learned."""
    from worker.batch import sanity_check as run_check

    return run_check(request(model, dataset, samples, explainer, params, target), seed)


def resolved_params(model: str, explainer: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters an explainer or analysis would run with on ``model``: ``params`` validated,
    the preset applied (``preset``: "loupe" by default, or "paper"; a value set in ``params`` wins)
    and every auto value (e.g. a 0 meaning "by image size") replaced by the value used. This is what
    the store keys and shows; forms display it."""
    from explainers.runner import resolved_params as resolve

    method: Explainer[Any] | Analysis[Any] = all_analyses().get(explainer) or get_explainer(explainer)
    return resolve(method, _model(model), params).to_dict()


def sanity(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str,
           params: dict[str, Any] | None = None, target: str | int = "predicted", seed: int = 0,
           threshold: float = 0.7, compute: bool = True) -> SanityResult | None:
    """Cascading model-randomisation sanity check (Adebayo et al., NeurIPS 2018; ``sanity_check``)
    of ``explainer`` (with ``params``) on ``samples``: the model's layers are randomised from the
    output down and the samples re-explained at every stage. Cached like every analysis; returns an
    ``explainers.results.sanity.SanityResult`` with per-layer Spearman of |map| (and SSIM for
    images), the maps, a pass/fail ``verdict``, ``key``, ``link`` and ``cached``; with
    ``compute=False``, None when this check is not stored yet (nothing runs)."""
    from explainers.results.sanity import SanityResult
    from explainers.sanity import request as sanity_request
    from worker.analyses import run_analysis, stored_analysis

    ids = parse_samples(samples, len(_dataset(dataset)))
    if not ids:
        raise DatasetError(f"the sample selection {samples!r} is empty")
    chosen = sanity_request(explainer, params, ids, target, seed, threshold)
    if not compute:
        found = stored_analysis("sanity_check", _model(model), _dataset(dataset), chosen)
        return None if found is None else SanityResult(found)
    return SanityResult(run_analysis("sanity_check", _model(model), _dataset(dataset), chosen))


def sanity_result(key: str) -> SanityResult:
    """The stored sanity check behind a share link (``?run=<key>``)."""
    from explainers.results.sanity import SanityResult

    return SanityResult.from_artifact(artifact(key))


def analysis(analysis_id: str, model: str, dataset: str, params: dict[str, Any] | None = None) -> Artifact:
    """Run a registered analysis (an entry of ``explainers()`` whose output is not "attribution")
    on ``model`` over ``dataset``: served from the store when an identical request is stored,
    otherwise computed on the Dask cluster and stored. Returns a ``store.artifacts.Artifact``
    (``info``, ``arrays``, ``meta``, ``key``, ``link``, ``cached``)."""
    from worker.analyses import run_analysis

    return run_analysis(analysis_id, _model(model), _dataset(dataset), params)


def rules(model: str, dataset: str, k: int | None = None, max_leaves: int = 16, seed: int = 0,
          params: dict[str, Any] | None = None) -> RulesResult:
    """Surrogate rule extraction (``surrogate_rules``; Karim et al., DSAA 2023) for a tabular model,
    torch or any black box with predict_proba: top-k features, a decision-tree surrogate with its
    held-out fidelity, global rules, and per-sample local rules and counterfactuals. ``k=None``
    picks k from the fidelity-versus-k curve; ``params`` sets the other parameters. Cached like
    every analysis; returns an ``explainers.results.rules.RulesResult``."""
    from explainers.results.rules import RulesResult

    chosen = {**(params or {}), "k": k or 0, "max_leaves": max_leaves, "seed": seed}
    return RulesResult(analysis("surrogate_rules", model, dataset, chosen))


def pathways(model: str, dataset: str, original: str | int, target: str | int, attack: str = "pgd_l2",
             strengths: str | Sequence[float] | None = None, images: int = 32, **params: Any) -> PathwaysResult:
    """Bluff activation pathways (``bluff_pathways``) of a targeted attack from class ``original`` to
    ``target`` (names or indices) on ``model`` over ``dataset``: cached like every analysis. Returns
    an ``explainers.results.pathways.PathwaysResult`` with ``layers``, ``nodes``, ``edges``, ``success_rate``,
    ``highlight(criterion, strength, neurons_pct, connections_pct)``, ``key``, ``link``, ``cached``.
    ``strengths``: the grid (None: the attack's default 10); ``params``: steps, correct_only, top_k …"""
    from explainers.results.pathways import PathwaysResult

    classes = _model(model).classes
    grid = strengths if strengths is None or isinstance(strengths, str) else ",".join(map(str, strengths))
    chosen = {"original": _class_index(original, classes), "target": _class_index(target, classes),
              "attack": attack, "strengths": grid or "", "images": images, **params}
    return PathwaysResult.from_artifact(analysis("bluff_pathways", model, dataset, chosen))


def pathways_result(key: str) -> PathwaysResult:
    """The stored pathways result behind a share link (``?run=<key>``)."""
    from explainers.results.pathways import PathwaysResult

    return PathwaysResult.from_artifact(artifact(key))


def rules_result(key: str) -> RulesResult:
    """The stored surrogate-rules result behind a share link (``?run=<key>``)."""
    from explainers.results.rules import RulesResult

    return RulesResult.from_artifact(artifact(key))


def attacks() -> dict[str, str]:
    """The attacks ``pathways`` can run: id -> title (targeted, from the Adversarial Robustness Toolbox)."""
    from explainers.pathways import ATTACKS

    return {name: attack.title for name, attack in ATTACKS.items()}


def _class_index(name: str | int, classes: Sequence[str]) -> int:
    """A class given by name or index (as a number or a numeric string)."""
    if isinstance(name, str) and name in classes:
        return list(classes).index(name)
    try:
        return int(name)
    except (TypeError, ValueError):
        raise ParamError(f"unknown class {name!r}; classes: {list(classes)}") from None


def artifact(key: str) -> Artifact:
    """The stored analysis result with this key (as its share link carries it)."""
    from dataclasses import replace

    from store.links import parse_run_param, run_link
    from store.runs import Store

    found = Store().get_artifact(parse_run_param(key))
    return replace(found, link=run_link(found.key, kind=found.kind), cached=True)


def kind_of(key: str) -> str:
    """What a share link names: "attribution" (open with :func:`run`) or an analysis kind (open
    with :func:`artifact`); InvalidKey / RunNotFound else."""
    from store.links import parse_run_param
    from store.runs import Store

    return Store().kind_of(parse_run_param(key))


# -- stored runs ---------------------------------------------------------------------------------
def run(key: str) -> Result:
    """The stored run with this key (as a share link carries it); InvalidKey / RunNotFound else."""
    from store.links import parse_run_param, run_link
    from store.runs import Store
    from worker.batch import from_items

    stored = Store().get_run(parse_run_param(key))
    res = from_items(stored.items)
    res.key, res.link, res.cached, res.provenance = stored.key, run_link(stored.key), True, dict(stored.meta)
    return res


def runs(model: str | None = None, dataset: str | None = None, explainer: str | None = None,
         limit: int = 100) -> list[dict]:
    """Stored runs, newest first, filtered by model, dataset and explainer id."""
    from store.links import run_link
    from store.runs import Store

    return [{**r, "link": run_link(r["key"])} for r in Store().list_runs(model, dataset, explainer, limit)]


def recent(limit: int = 10) -> list[dict]:
    """The newest stored results of every kind, newest first: explanations (kind "attribution"),
    rules, pathways, embeddings and any other analysis. Each: kind, key, link (to the page of its
    kind), what (explainer or analysis id), model, dataset, samples, created."""
    from store.links import run_link
    from store.runs import Store

    store = Store()
    rows = [{"kind": r["kind"], "key": r["key"], "what": r["explainer_id"], "model": r["model_id"],
             "dataset": r["dataset_id"], "samples": r["n_samples"], "created": r["created"]}
            for r in store.list_runs(limit=limit)]
    rows += [{"kind": a["kind"], "key": a["key"], "what": a["analysis_id"], "model": a["model_id"],
              "dataset": a["dataset_id"], "samples": a["n_samples"], "created": a["created"]}
             for a in store.list_artifacts(limit=limit)]
    rows.sort(key=lambda r: (r["created"], r["key"]), reverse=True)
    return [{**r, "link": run_link(r["key"], kind=r["kind"])} for r in rows[:limit]]


def link(key: str) -> str:
    """The permanent URL of a stored run or analysis result (``LOUPE_BASE_URL`` + the page of its
    kind + ``?run=<key>``)."""
    from store.links import parse_run_param, run_link
    from store.runs import Store

    key = parse_run_param(key)
    return run_link(key, kind=Store().kind_of(key))


def export(run: str | None = None, *, model: str | None = None, dataset: str | None = None,
           explainer: str | None = None, k: int = 5, csv: str | None = None, parquet: str | None = None,
           maps: str | None = None) -> pd.DataFrame:
    """Export one run (by key) or all stored runs matching the filters: a DataFrame with run key,
    link, ids, label/target/prediction with their class names, confidence, params, every metric and
    the top-k attributed units; also written to ``csv`` / ``parquet`` and the maps to ``maps``
    (.npz) when given."""
    from store.export import export as export_table
    from store.runs import Store

    return export_table(Store(), run, model=model, dataset=dataset, explainer=explainer, k=k, csv=csv,
                        parquet=parquet, maps=maps, model_classes=_model_classes())


def _model_classes() -> dict[str, list[str]]:
    """Model id -> class names, for every model whose listing knows them (no model is loaded)."""
    return {row["id"]: list(row["classes"]) for row in models() if isinstance(row.get("classes"), (list, tuple))}


def result_rows(res: Result) -> list[dict]:
    """One flat dict per sample: ids, label, target, prediction, confidence and every scalar metric."""
    rows = []
    for i, sid in enumerate(res.sample_ids):
        metrics = res.metrics[i] if res.metrics else {}
        rows.append({
            "sample_id": int(sid),
            "label": int(res.labels[i]),
            "target": int(res.targets[i]),
            "prediction": int(res.predictions[i]),
            "confidence": float(res.confidences[i]),
            **{k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)},
        })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in this process (``python -m loupe`` with ``argv``); returns its exit code."""
    from loupe.cli import main as cli_main

    return cli_main(argv)
