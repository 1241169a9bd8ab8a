"""SAMP quality benchmark (issues #4, #17): deletion/insertion AUC, pointing game and per-path
completeness gap of SAMP's ``loupe`` default, the ``paper`` preset (SAMP++), their ablations and
Integrated Gradients on the zoo's image models, written as a Markdown table to
``bench/results/samp.md`` (the README pastes it). ``--models resnet18_random_224`` runs the 224×224
ResNet-18-shaped case instead (bench/resnet224.py: random weights, resized shapes images).

Protocol (specs/samp.md §3, the SAMP authors' 2023 benchmark code): the first ``--n`` test images of
each model's dataset (default 64), target = predicted class, score = raw target logit normalised by
f(x), AUC = plain mean over the n + 1 points; deletion fills pixels with the input that is zero after
the model's normalisation, insertion starts from the Gaussian blur (11, σ 5, zero padding in
normalised space). ``step_per`` = ceil(H·W · 10 / 1024): the authors' 10 pixels per step at 32×32,
the same ~1 % of the pixels (about 103 steps) at any size. Integrated Gradients uses 100 steps and
the "zero after normalisation" baseline, as in the authors' comparison. The pointing game
(tolerance 0) needs ground-truth masks, so it is reported on ``shapes`` only.

Run from the repository root:
``python -m bench.samp_quality [--n 64] [--output bench/results/samp.md] [--only LABEL_TEXT ...]``;
the 224×224 case: ``python -m bench.samp_quality --models resnet18_random_224 --n 8 --only "(" --output
bench/results/samp_224.md`` (the rows whose label has a parenthesis: the two presets and IG).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import resnet224  # noqa: E402
from data.builtin import load_builtin  # noqa: E402
from explainers.evaluation import evaluate  # noqa: E402
from explainers.registry import get_explainer  # noqa: E402
from model_registry.zoo import load_zoo_model  # noqa: E402

MODELS = ("shapes_cnn", "shapes_resnet", "digits_cnn")
POINTING_GOAL = 0.9
GAP_GOAL = 0.10


@dataclass(frozen=True)
class Method:
    """One row of the table: a registered explainer with fixed params."""

    label: str
    explainer: str
    params: dict


METHODS = (
    Method("SAMP (loupe default)", "samp", {}),
    Method("SAMP++ (paper preset)", "samp", {"preset": "paper"}),
    Method("loupe default, quadrature=left", "samp", {"quadrature": "left"}),
    Method("loupe default, quadrature=trapezoid", "samp", {"quadrature": "trapezoid"}),
    Method("loupe default, reduction=sum", "samp", {"reduction": "sum"}),
    Method("loupe default, reduction=l1", "samp", {"reduction": "l1"}),
    Method("paper, reduction=norm", "samp", {"preset": "paper", "reduction": "norm"}),
    Method("paper SAMP+MS", "samp", {"preset": "paper", "n_frag": 0, "momentum": 0.5}),
    Method("paper SAMP+IC", "samp", {"preset": "paper", "n_frag": 50, "momentum": 0.0}),
    Method("paper SAMP", "samp", {"preset": "paper", "n_frag": 0, "momentum": 0.0}),
    Method("paper, deletion path only", "samp", {"preset": "paper", "paths": "deletion"}),
    Method("paper, insertion path only", "samp", {"preset": "paper", "paths": "insertion"}),
    Method("Integrated Gradients (100 steps)", "integrated_gradients", {"n_steps": 100, "baseline": "normalized_zero"}),
)
HEADLINES, REFERENCE = (METHODS[0].label, METHODS[1].label), METHODS[-1].label


def step_per(n_pixels: int) -> int:
    """Metric step: 10 pixels at 32×32 (the authors' MNIST/CIFAR setting), the same share elsewhere."""
    return math.ceil(n_pixels * 10 / 1024)


def _mean(values: list) -> float:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def _passes(extras: dict) -> float:
    """Mean forward + backward passes per image of a SAMP run: per path, its steps and the gradient
    at its end."""
    return float(sum(np.asarray(v) + 1 for k, v in extras.items() if k.endswith("_steps")).mean())


def case(model_id: str, n: int):
    """(model, the first ``n`` test images on its device, their masks or None) of a zoo model or of
    the 224×224 ResNet-18 case."""
    if model_id == resnet224.MODEL_ID:
        model = resnet224.model()
        x, masks = resnet224.images(n)
        return model, x.to(model.device), masks.numpy()
    model = load_zoo_model(model_id)
    ds = load_builtin(model.dataset)
    return model, ds.inputs(list(range(n))).to(model.device), ds.masks(list(range(n)))


def run_model(model_id: str, n: int, only: Sequence[str] = ("",), methods: tuple[Method, ...] = METHODS) -> list[dict]:
    """One dict per method of ``methods`` whose label contains one of ``only``: AUCs, pointing game,
    passes per image, completeness gap, map ℓ1, seconds."""
    model, x, masks = case(model_id, n)
    target = model.logits(x).argmax(1).to(model.device)
    step = step_per(x.shape[-2] * x.shape[-1])
    rows = []
    for method in (m for m in methods if any(text in m.label for text in only)):
        explainer = get_explainer(method.explainer)
        started = time.perf_counter()
        res = explainer.explain(model, x, target, explainer.Params.from_dict(method.params))
        seconds = time.perf_counter() - started
        metrics = evaluate(model, x, res.attributions, target, masks, step_per=step)
        gaps = [np.asarray(v) for k, v in res.extras.items() if k.endswith("_relative_gap")]
        rows.append({
            "model": model_id,
            "method": method.label,
            "deletion": _mean([m["deletion_auc"] for m in metrics]),
            "insertion": _mean([m["insertion_auc"] for m in metrics]),
            "pointing": _mean([m.get("pointing_hit") for m in metrics]),
            "passes": _passes(res.extras) if method.explainer == "samp" else float(method.params["n_steps"]),
            "gap": float(np.median(np.concatenate(gaps))) if gaps else float("nan"),
            "l1": float(np.median(np.abs(res.attributions).sum(axis=(1, 2)))),
            "seconds": seconds,
        })
        print(f"{model_id:14s} {method.label:34s} del {rows[-1]['deletion']:.3f}  ins {rows[-1]['insertion']:.3f}  "
              f"point {rows[-1]['pointing']:.3f}  {seconds:.1f}s", flush=True)
    return rows


def checks(rows: list[dict]) -> list[str]:
    """The issue's goals per model for each preset, each as a PASS/FAIL line: both AUCs better than
    IG's, pointing game ≥ 0.9 where masks exist, median per-path completeness gap < 10 %."""
    lines = []
    for model_id in dict.fromkeys(r["model"] for r in rows):
        by = {r["method"]: r for r in rows if r["model"] == model_id}
        if REFERENCE not in by:
            continue
        ref = by[REFERENCE]
        for label in (h for h in HEADLINES if h in by):
            head = by[label]
            goals = [
                ("deletion AUC", head["deletion"] < ref["deletion"], f"{head['deletion']:.3f} < IG {ref['deletion']:.3f}"),
                ("insertion AUC", head["insertion"] > ref["insertion"], f"{head['insertion']:.3f} > IG {ref['insertion']:.3f}"),
                ("completeness gap", head["gap"] < GAP_GOAL, f"{head['gap']:.1%} < {GAP_GOAL:.0%}"),
            ]
            if not math.isnan(head["pointing"]):
                goals.append(("pointing game", head["pointing"] >= POINTING_GOAL, f"{head['pointing']:.3f} ≥ {POINTING_GOAL}"))
            lines += [f"- {model_id}: {label} {name} {text}: **{'PASS' if ok else 'FAIL'}**" for name, ok, text in goals]
    return lines


def _cell(value: float, fmt: str) -> str:
    return "–" if math.isnan(value) else format(value, fmt)


def markdown(rows: list[dict], n: int, device: str) -> str:
    """The results page: protocol, table, goal checks."""
    out = [
        "## SAMP quality (issues #4, #17)",
        "",
        (f"Written by `python -m bench.samp_quality` on {device}, {n} test images per model (the first {n} sample "
         "ids), target = predicted class. Deletion/insertion per specs/samp.md §3: target logit / f(x), plain mean "
         "over the n + 1 points, deletion to the normalised-zero input, insertion from blur(x) (11, σ 5); "
         "step_per = ceil(H·W · 10 / 1024) (10 at 32×32 as in the paper's MNIST/CIFAR setting, 40 at 64×64). "
         "Pointing game (tolerance 0) on `shapes` masks. *passes* = forward + backward passes per image "
         "(SAMP: measured, both paths). *gap* = median per-path relative completeness gap "
         "|Σ map − Δf| / |Δf|. *ℓ1* = median over images of the returned map's Σ|map|: in logit units for "
         "reduction=sum and IG (it shows how much each path map weighs in the sum); reduction=norm and l1 rescale "
         "the path maps before adding them, so there it is in those units, not logits."),
        "",
        "| model | method | deletion AUC ↓ | insertion AUC ↑ | pointing game ↑ | passes / image | gap | ℓ1 | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['method']} | {r['deletion']:.3f} | {r['insertion']:.3f} | "
            f"{_cell(r['pointing'], '.3f')} | {r['passes']:.0f} | {_cell(r['gap'], '.1%')} | {r['l1']:.1f} | {r['seconds']:.1f} |"
        )
    goals = ("Goals of issue #17 (vs Integrated Gradients; pointing game ≥ 0.9 where masks exist; "
             "median per-path completeness gap < 10 %):")
    return "\n".join([*out, "", goals, "", *checks(rows), ""])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="test images per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=[*MODELS, resnet224.MODEL_ID])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "samp.md")
    parser.add_argument("--only", nargs="+", default=[""], help="run only the methods whose label contains one of these texts")
    args = parser.parse_args(argv)
    rows = [row for model_id in args.models for row in run_model(model_id, args.n, args.only)]
    device = case(args.models[0], 1)[0].device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    page = markdown(rows, args.n, name)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    print(page)
    return rows


if __name__ == "__main__":
    main()
