"""The command line, ``python -m loupe ...``: each subcommand parses strings, calls the public API
(:mod:`loupe`) and prints a table, JSON or a link. User errors print one line and exit with 2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import loupe
from explainers.base import ExplainError, ParamError


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
    listing = {"models": loupe.models, "datasets": loupe.datasets, "explainers": loupe.explainers}[args.command]()
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

        results = loupe.explain_batch(args.model, args.dataset, args.samples, {e: params for e in args.explainer},
                                target=args.target, batch_size=args.batch_size, progress=progress)
    if args.csv:
        import pandas as pd

        pd.concat([loupe.export(r.key) for r in results], ignore_index=True).to_csv(args.csv, index=False)
    if args.json:
        out = [{"key": r.key, "link": r.link, "cached": r.cached, "explainer": r.provenance["explainer"],
                "params": r.provenance["params"], "results": loupe.result_rows(r)} for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
        return
    for r in results:
        _print_table([{f"{k} {loupe.metric_info(k).arrow}".rstrip(): v for k, v in row.items()}
                      for row in loupe.result_rows(r)], False)  # each metric with its direction (↑ / ↓)
        state = "from the cache" if r.cached else f"computed {r.provenance['computed']}, reused {r.provenance['reused']}"
        print(f"\n{r.provenance['explainer']}: {len(r.sample_ids)} samples ({state})\nlink: {r.link}\n")


def _cmd_export(args: argparse.Namespace) -> None:
    if bool(args.run) == bool(args.all):
        raise ExplainError("give either --run KEY or --all (optionally with --model/--dataset/--explainer)")
    if not (args.csv or args.parquet or args.maps):
        raise ExplainError("nothing to write: give --csv PATH, --parquet PATH and/or --maps PATH.npz")
    frame = loupe.export(args.run, model=args.model, dataset=args.dataset, explainer=args.explainer, k=args.k,
                   csv=args.csv, parquet=args.parquet, maps=args.maps)
    written = [p for p in (args.csv, args.parquet, args.maps) if p]
    print(f"exported {len(frame)} rows to {', '.join(written)}")


def _cmd_rules(args: argparse.Namespace) -> None:
    res = loupe.rules(args.model, args.dataset, k=args.k, max_leaves=args.max_leaves, seed=args.seed,
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
    res = loupe.pathways(args.model, args.dataset, args.original, args.target, attack=args.attack,
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


def _cmd_sanity(args: argparse.Namespace) -> None:
    res = loupe.sanity(args.model, args.dataset, args.samples, args.explainer, _parse_sets(args.set),
                       target=args.target, seed=args.seed, threshold=args.threshold)
    assert res is not None  # compute=True always returns a result
    medians = res.medians()
    rows = [{"randomised down to": layer, **{f"median {name}": round(float(v[s]), 3) for name, v in medians.items()}}
            for s, layer in enumerate(res.layers)]
    if args.json:
        print(json.dumps({"key": res.key, "link": res.link, "cached": res.cached, "explainer": res.explainer,
                          "params": res.explainer_params, "verdict": res.verdict, "verdict_text": res.verdict_text,
                          "stages": rows, "samples": res.sample_rows()}, indent=2))
        return
    _print_table(rows, False)
    print(f"\n{res.verdict.upper()} {res.explainer}. {res.verdict_text}.\n"
          f"({'from the cache' if res.cached else 'computed'}) link: {res.link}")


def _cmd_link(args: argparse.Namespace) -> None:
    print(loupe.link(args.run))


def _cmd_runs(args: argparse.Namespace) -> None:
    rows = loupe.runs(args.model, args.dataset, args.explainer, args.limit)
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
    p = sub.add_parser("sanity", help="cascading model-randomisation sanity check of an explainer (cached; on the cluster)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--samples", default="0:8", help="'all', 'a:b[:step]' or '1,4,7' (default 0:8)")
    p.add_argument("--explainer", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="explainer parameter")
    p.add_argument("--target", default="predicted", help="'predicted', 'label' or a class index")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--threshold", type=float, default=0.7, help="fail at a median Spearman ≥ this (default 0.7)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_sanity)
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
    except loupe.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

