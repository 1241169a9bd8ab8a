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
from explainers.registry import UnknownExplainer, all_explainers, get_explainer
from explainers.runner import ExplainError, explain_samples
from model_registry.base import ModelError, ModelHandle

USER_ERRORS = (ModelError, DatasetError, ExplainError, ParamError, UnknownExplainer)
"""Exceptions whose message is meant for the user: the CLI prints them without a traceback."""


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
    """Every registered explainer: id, title, paper, modalities, capabilities and its params schema."""
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
            "version": e.spec.version,
            "description": e.spec.description,
            "params": [{k: v for k, v in f.items() if v is not None} for f in e.Params.schema()],
        }
        for e in all_explainers().values()
    ]


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


# -- explaining ----------------------------------------------------------------------------------
def explain(
    model: str,
    dataset: str,
    samples: str | Sequence[int] | int | None,
    explainer: str,
    params: dict[str, Any] | None = None,
    target: str | int = "predicted",
    batch_size: int = 16,
    progress=None,
) -> Result:
    """Explain ``samples`` of ``dataset`` on ``model`` with ``explainer``.

    ``target`` is "predicted" (default), "label" or a class index. ``batch_size`` never changes
    results. Returns a :class:`~explainers.base.Result` with per-sample ``metrics``.
    """
    handle, ds = _model(model), _dataset(dataset)
    get_explainer(explainer)
    ids = parse_samples(samples, len(ds))
    if not ids:
        raise DatasetError(f"the sample selection {samples!r} is empty")
    return explain_samples(handle, ds, ids, explainer, params, target, batch_size, progress=progress)


def result_rows(res: Result) -> list[dict]:
    """One flat dict per sample: ids, label, target, prediction, confidence and every metric."""
    rows = []
    for i, sid in enumerate(res.sample_ids):
        rows.append({
            "sample_id": int(sid),
            "label": int(res.labels[i]),
            "target": int(res.targets[i]),
            "prediction": int(res.predictions[i]),
            "confidence": float(res.confidences[i]),
            **(res.metrics[i] if res.metrics else {}),
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

    bar = tqdm(total=None, unit="sample", disable=args.json or not sys.stderr.isatty(), file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    res = explain(args.model, args.dataset, args.samples, args.explainer, _parse_sets(args.set),
                  target=args.target, batch_size=args.batch_size, progress=progress)
    bar.close()
    rows = result_rows(res)
    if args.csv:
        import pandas as pd

        pd.DataFrame(rows).assign(model=args.model, dataset=args.dataset, explainer=args.explainer,
                                  params=json.dumps(res.provenance["params"], sort_keys=True)).to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps({"provenance": res.provenance, "results": rows}, indent=2, default=str))
    else:
        _print_table(rows, False)
        print(f"\n{len(rows)} samples, {res.provenance['seconds']:.2f} s on {res.provenance['device']}")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m loupe`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m loupe", description="Loupe: explain neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("models", "datasets", "explainers"):
        p = sub.add_parser(name, help=f"list registered {name}")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(func=_cmd_list)
    p = sub.add_parser("explain", help="explain samples of a dataset with one explainer")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--samples", default="0:16", help="'all', 'a:b[:step]' or '1,4,7' (default 0:16)")
    p.add_argument("--explainer", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="explainer parameter")
    p.add_argument("--target", default="predicted", help="'predicted', 'label' or a class index")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="PATH", help="also write the per-sample results as CSV")
    p.set_defaults(func=_cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; user errors print one line to stderr and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
