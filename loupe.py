"""Loupe's public Python API and CLI (``python -m loupe ...``).

Notebook use::

    import loupe
    loupe.models(); loupe.datasets(); loupe.explainers()
    ds = loupe.dataset("shapes"); ds.inputs([0, 1]); ds.labels([0, 1]); ds.masks([0, 1])
    m = loupe.model("shapes_cnn"); m.module; m.classes
    res = loupe.explain(model="shapes_cnn", dataset="shapes", samples=[0, 1, 2],
                        explainer="integrated_gradients", params={"n_steps": 32})
    res.attributions, res.targets, res.predictions, res.metrics, res.extras

Pages, the CLI and workers all go through these functions; none of them branches on explainer names.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from data.base import Dataset, DatasetError
from explainers.base import ParamError, Result
from explainers.registry import UnknownExplainer, all_analyses, all_explainers, get_explainer
from explainers.runner import ExplainError
from model_registry.base import ModelError, ModelHandle

def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for the user: the CLI prints them without a traceback."""
    from model_registry.uploads import RegistrationError
    from store.db import StoreUnavailable
    from store.keys import InvalidKey
    from store.runs import RunNotFound, StoreError
    from store.schema import SchemaError
    from worker.batch import BatchCancelled, JobFailed
    from worker.cluster import ClusterError

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
        for e in [*all_explainers().values(), *all_analyses().values()]
    ]


def metric_info(name: str):
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


def parse_samples(spec: str | Sequence[int] | None, n: int) -> list[int]:
    """Sample ids from ``"all"``, ``"a:b[:step]"``, ``"1,4,7"``, an int, or a list of ints."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(range(n))
    if isinstance(spec, (int, np.integer)):
        return [int(spec)]
    if not isinstance(spec, str):
        return [int(i) for i in spec]
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            if len(parts) > 3:
                raise ValueError
            return list(range(n))[slice(*parts)]
        return [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise DatasetError(f"samples must look like 'all', '0:16', '0:100:5' or '1,4,7'; got {spec!r}") from None


# -- explaining (cached, on the cluster) ---------------------------------------------------------
def _request(model: str, dataset: str, samples, explainer: str, params, target):
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
    progress=None,
    cancel=None,
) -> Result:
    """Explain ``samples`` of ``dataset`` on ``model`` with ``explainer``.

    Served from the cache when stored; otherwise run on the Dask cluster (embedded by default),
    stored, and returned. ``target`` is "predicted" (default), "label" or a class index;
    ``batch_size`` never changes results; ``progress(done, total)`` is called as chunks finish and
    setting the ``cancel`` event (threading.Event) stops the work (finished chunks stay stored).
    The result has ``key``, ``link`` and ``cached``.
    """
    from worker.batch import explain_cached

    req = _request(model, dataset, samples, explainer, params, target)
    return explain_cached(req, batch_size=batch_size, progress=progress, cancel=cancel)


def explain_batch(
    model: str,
    dataset: str,
    samples: str | Sequence[int] | int | None,
    explainers: dict[str, dict[str, Any] | None] | Sequence[str],
    target: str | int = "predicted",
    batch_size: int = 16,
    progress=None,
    cancel=None,
) -> list[Result]:
    """Several explainers over one slice (``explainers``: ids, or id -> params). Requests are all
    validated before any work starts; each is stored as it finishes, so rerunning an interrupted
    batch resumes it."""
    from worker.batch import explain_cached

    chosen = dict(explainers) if isinstance(explainers, dict) else {e: None for e in explainers}
    reqs = [_request(model, dataset, samples, e, p, target) for e, p in chosen.items()]
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

    return find_stored(_request(model, dataset, samples, explainer, params, target))


def predict(model: str, dataset: str, samples: str | Sequence[int] | int | None) -> list[dict]:
    """Per sample: id, label, predicted class and its probability, computed on the worker."""
    from worker.batch import predict as predict_on_worker

    handle, ds = _model(model), _dataset(dataset)
    ids = parse_samples(samples, len(ds))
    probs = predict_on_worker(handle, ds, ids)
    labels = ds.labels(ids)
    return [{"sample_id": i, "label": int(labels[k]), "prediction": int(probs[k].argmax()),
             "confidence": float(probs[k].max())} for k, i in enumerate(ids)]


def estimate(model: str, dataset: str, samples: str | Sequence[int] | int | None, explainer: str,
             params: dict[str, Any] | None = None, target: str | int = "predicted"):
    """The cost preview of an ``explain`` call without running it: samples already stored, the model
    passes the rest need (``Explainer.passes`` plus prediction and metrics) and the seconds they take
    at the model's pass time measured on the worker (``worker.batch.Estimate``)."""
    from worker.batch import estimate as estimate_request

    return estimate_request(_request(model, dataset, samples, explainer, params, target))


def sanity_check(model: str, dataset: str, samples, explainer: str, params: dict[str, Any] | None = None,
                 target: str | int = "predicted", seed: int = 0) -> np.ndarray:
    """Model-randomisation sanity check (Adebayo et al., NeurIPS 2018): per-sample Spearman
    correlation between |map| on the trained model and on a re-initialised copy. Values near 1 mean
    the explanation ignores what the model learned."""
    from worker.batch import sanity_check as run_check

    return run_check(_request(model, dataset, samples, explainer, params, target), seed)


def analysis(analysis_id: str, model: str, dataset: str, params: dict[str, Any] | None = None):
    """Run a registered analysis (an entry of ``explainers()`` whose output is not "attribution")
    on ``model`` over ``dataset``: served from the store when an identical request is stored,
    otherwise computed on the Dask cluster and stored. Returns a ``store.artifacts.Artifact``
    (``info``, ``arrays``, ``meta``, ``key``, ``link``, ``cached``)."""
    from worker.analyses import run_analysis

    return run_analysis(analysis_id, _model(model), _dataset(dataset), params)


def rules(model: str, dataset: str, k: int | None = None, max_leaves: int = 16, seed: int = 0,
          params: dict[str, Any] | None = None):
    """Surrogate rule extraction (``surrogate_rules``; Karim et al., DSAA 2023) for a tabular model,
    torch or any black box with predict_proba: top-k features, a decision-tree surrogate with its
    held-out fidelity, global rules, and per-sample local rules and counterfactuals. ``k=None``
    picks k from the fidelity-versus-k curve; ``params`` sets the other parameters. Cached like
    every analysis; returns an ``explainers.surrogate_rules.RulesResult``."""
    from explainers.surrogate_rules import RulesResult

    chosen = {**(params or {}), "k": k or 0, "max_leaves": max_leaves, "seed": seed}
    return RulesResult(analysis("surrogate_rules", model, dataset, chosen))


def pathways(model: str, dataset: str, original: str | int, target: str | int, attack: str = "pgd_l2",
             strengths: str | Sequence[float] | None = None, images: int = 32, **params: Any):
    """Bluff activation pathways (``bluff_pathways``) of a targeted attack from class ``original`` to
    ``target`` (names or indices) on ``model`` over ``dataset``: cached like every analysis. Returns
    an ``explainers.pathways.PathwaysResult`` with ``layers``, ``nodes``, ``edges``, ``success_rate``,
    ``highlight(criterion, strength, neurons_pct, connections_pct)``, ``key``, ``link``, ``cached``.
    ``strengths``: the grid (None: the attack's default 10); ``params``: steps, correct_only, top_k …"""
    from explainers.pathways import PathwaysResult

    classes = _model(model).classes
    grid = strengths if strengths is None or isinstance(strengths, str) else ",".join(map(str, strengths))
    chosen = {"original": _class_index(original, classes), "target": _class_index(target, classes),
              "attack": attack, "strengths": grid or "", "images": images, **params}
    return PathwaysResult.from_artifact(analysis("bluff_pathways", model, dataset, chosen))


def pathways_result(key: str):
    """The stored pathways result behind a share link (``?run=<key>``)."""
    from explainers.pathways import PathwaysResult

    return PathwaysResult.from_artifact(artifact(key))


def _class_index(name: str | int, classes: Sequence[str]) -> int:
    """A class given by name or index (as a number or a numeric string)."""
    if isinstance(name, str) and name in classes:
        return list(classes).index(name)
    try:
        return int(name)
    except (TypeError, ValueError):
        raise ParamError(f"unknown class {name!r}; classes: {list(classes)}") from None


def artifact(key: str):
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
           maps: str | None = None):
    """Export one run (by key) or all stored runs matching the filters: a DataFrame with run key,
    link, ids, label/target/prediction with their class names, confidence, params, every metric and
    the top-k attributed units; also written to ``csv`` / ``parquet`` and the maps to ``maps``
    (.npz) when given."""
    from store.export import export as export_table
    from store.runs import Store

    return export_table(Store(), run, model=model, dataset=dataset, explainer=explainer, k=k, csv=csv,
                        parquet=parquet, maps=maps, model_classes=_classes(models()),
                        dataset_classes=_classes(datasets()))


def _classes(listing: list[dict]) -> dict[str, list[str]]:
    """Id -> class names of the registry entries whose listing knows them (no model is loaded)."""
    return {row["id"]: list(row["classes"]) for row in listing if isinstance(row.get("classes"), (list, tuple))}


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


# -- CLI -----------------------------------------------------------------------------------------
def _parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` pairs from ``--set``; values stay strings (Params coerces them)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ParamError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _print_table(rows: list[dict], as_json: bool) -> None:
    import pandas as pd

    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(pd.DataFrame(rows).to_string(index=False) if rows else "(none)")


def _cmd_list(args: argparse.Namespace) -> None:
    listing = {"models": models, "datasets": datasets, "explainers": explainers}[args.command]()
    if not args.json and args.command == "explainers":
        listing = [{k: e[k] for k in ("id", "title", "modalities", "paper")} for e in listing]
    _print_table(listing, args.json)


def _cmd_explain(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    params = _parse_sets(args.set)
    if len(args.explainer) > 1 and params:
        raise ParamError("--set applies to one explainer; run one explainer at a time to set its params")
    with tqdm(total=None, unit="sample", file=sys.stderr, disable=None if not args.json else True) as bar:
        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        results = explain_batch(args.model, args.dataset, args.samples, {e: params for e in args.explainer},
                                target=args.target, batch_size=args.batch_size, progress=progress)
    if args.csv:
        import pandas as pd

        pd.concat([export(r.key) for r in results], ignore_index=True).to_csv(args.csv, index=False)
    if args.json:
        out = [{"key": r.key, "link": r.link, "cached": r.cached, "explainer": r.provenance["explainer"],
                "params": r.provenance["params"], "results": result_rows(r)} for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
        return
    for r in results:
        _print_table([{f"{k} {metric_info(k).arrow}".rstrip(): v for k, v in row.items()} for row in result_rows(r)],
                     False)  # each metric with its direction (↑ higher is better, ↓ lower is better)
        state = "from the cache" if r.cached else f"computed {r.provenance['computed']}, reused {r.provenance['reused']}"
        print(f"\n{r.provenance['explainer']}: {len(r.sample_ids)} samples ({state})\nlink: {r.link}\n")


def _cmd_export(args: argparse.Namespace) -> None:
    if bool(args.run) == bool(args.all):
        raise ExplainError("give either --run KEY or --all (optionally with --model/--dataset/--explainer)")
    if not (args.csv or args.parquet or args.maps):
        raise ExplainError("nothing to write: give --csv PATH, --parquet PATH and/or --maps PATH.npz")
    frame = export(args.run, model=args.model, dataset=args.dataset, explainer=args.explainer, k=args.k,
                   csv=args.csv, parquet=args.parquet, maps=args.maps)
    written = [p for p in (args.csv, args.parquet, args.maps) if p]
    print(f"exported {len(frame)} rows to {', '.join(written)}")


def _cmd_rules(args: argparse.Namespace) -> None:
    res = rules(args.model, args.dataset, k=args.k, max_leaves=args.max_leaves, seed=args.seed,
                params=_parse_sets(args.set))
    if args.csv:
        import pandas as pd

        pd.DataFrame(res.rules).to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps({"key": res.key, "link": res.link, "cached": res.cached, "k": res.k,
                          "top_features": res.top_features, "metrics": res.metrics,
                          "fidelity_curve": res.fidelity_curve, "rules": res.rules}, indent=2))
        return
    _print_table([{k: r[k] for k in ("id", "class", "support", "coverage", "precision", "rule")} for r in res.rules],
                 False)
    m = res.metrics
    print(f"\ntop-{res.k} features: {', '.join(res.top_features)}")
    print(f"held-out fidelity {m['fidelity']:.3f}, macro-F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f}, "
          f"{m['n_leaves']} rules ({'from the cache' if res.cached else 'computed'})\nlink: {res.link}")


def _cmd_pathways(args: argparse.Namespace) -> None:
    res = pathways(args.model, args.dataset, args.original, args.target, attack=args.attack,
                   strengths=args.strengths, images=args.images, **_parse_sets(args.set))
    summary = {"key": res.key, "link": res.link, "cached": res.cached, "layers": res.layers,
               "original": res.original, "target": res.target, "attack": res.info["attack"],
               "strengths": res.strengths.tolist(), "success_rate": res.success_rate.tolist(),
               "images": res.n_used.tolist(), "edge_rules": res.info["edge_kinds"]}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    _print_table([{"strength": s, "success_rate": round(float(r), 3), "images": int(n)} for s, r, n in
                  zip(summary["strengths"], summary["success_rate"], summary["images"][2:])], False)
    counts = res.nodes.groupby(["layer", "column"], sort=False).size().unstack(fill_value=0)
    print(f"\n{res.original} -> {res.target}, {summary['attack']}; displayed nodes per column:\n{counts}")
    print(f"\nlink: {res.link}")


def _cmd_link(args: argparse.Namespace) -> None:
    print(link(args.run))


def _cmd_runs(args: argparse.Namespace) -> None:
    rows = runs(args.model, args.dataset, args.explainer, args.limit)
    if not args.json:
        rows = [{k: r[k] for k in ("key", "created", "model_id", "dataset_id", "explainer_id", "n_samples")}
                for r in rows]
    _print_table(rows, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m loupe`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m loupe", description="Loupe: explain neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("models", "datasets", "explainers"):
        p = sub.add_parser(name, help=f"list registered {name}")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(func=_cmd_list)
    p = sub.add_parser("explain", help="explain samples of a dataset (cached; runs on the Dask cluster)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--samples", default="0:16", help="'all', 'a:b[:step]' or '1,4,7' (default 0:16)")
    p.add_argument("--explainer", required=True, action="append", help="repeat for a batch of explainers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="explainer parameter")
    p.add_argument("--target", default="predicted", help="'predicted', 'label' or a class index")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="PATH", help="also export the results (as `export` does) to CSV")
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser("export", help="export stored results to CSV / Parquet / .npz")
    p.add_argument("--run", metavar="KEY")
    p.add_argument("--all", action="store_true", help="every stored run (filter with --model/--dataset/--explainer)")
    p.add_argument("--model")
    p.add_argument("--dataset")
    p.add_argument("--explainer")
    p.add_argument("--k", type=int, default=5, help="top-k attributed units per sample (default 5)")
    p.add_argument("--csv", metavar="PATH")
    p.add_argument("--parquet", metavar="PATH")
    p.add_argument("--maps", metavar="PATH.npz", help="also write every map into one .npz")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("rules", help="surrogate rules for a tabular model (cached; runs on the Dask cluster)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--k", type=int, default=None, help="features in the surrogate (default: from the fidelity curve)")
    p.add_argument("--max-leaves", type=int, default=16, help="leaf cap = number of rules (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another surrogate_rules parameter")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="PATH", help="also write the rules table to CSV")
    p.set_defaults(func=_cmd_rules)
    p = sub.add_parser("pathways", help="Bluff activation pathways of a targeted attack (cached; on the cluster)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--original", required=True, help="class name or index of the attacked images")
    p.add_argument("--target", required=True, help="class name or index the attack aims at")
    p.add_argument("--attack", default="pgd_l2", help="pgd_l2 (default), pgd_linf or fgsm")
    p.add_argument("--strengths", help="comma-separated grid (default: the attack's 10 strengths)")
    p.add_argument("--images", type=int, default=32, help="benign images per class (default 32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="steps, correct_only, top_k …")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_pathways)
    p = sub.add_parser("link", help="print the share link of a stored run")
    p.add_argument("--run", metavar="KEY", required=True)
    p.set_defaults(func=_cmd_link)
    p = sub.add_parser("runs", help="list stored runs, newest first")
    p.add_argument("--model")
    p.add_argument("--dataset")
    p.add_argument("--explainer")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; user errors print one line to stderr and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
