"""What every image explainer costs per image, against the floor of its own model passes, measured in
one process (issue #15, item 4).

For ``--n`` images of the case (default ``resnet18_224``: ResNet-18 at 1000 classes on 224×224
images, ``bench.cases``; or a zoo model id), target = predicted class, every registered image
explainer runs with its default params, all images in one ``explain`` call, as the runner calls it
(GradientSHAP gets the runner's 32 background images). A forward hook counts the rows each
explainer passes through the model: rows recorded for autograd are forward + backward passes (to
the input, or for Grad-CAM to its layer), the others forward passes.

The floor of an explainer is its own passes at the fastest batch size it could use (``bench.floor``:
powers of two up to its own row count of that kind, or :data:`ROWS_AT_ONCE`), each pass kind's time per row measured afresh
in every round, interleaved with the explainers' runs. Each explainer and its floor are the best of
``--repeats`` rounds; ratio = explain / floor (goal ≤ 1.15).

    python -m bench.explainer_costs [--model resnet18_224] [--n 2] [--only samp,osa_das]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402

from bench.cases import load_case  # noqa: E402
from bench.floor import per_row_seconds, batch_of, candidate_sizes, fastest, timed  # noqa: E402
from explainers.base import Explainer  # noqa: E402
from explainers.registry import all_explainers  # noqa: E402
from model_registry.base import ModelHandle  # noqa: E402

GOAL = 1.15
LAYER_PASSES = {"gradcam"}
"""Explainers whose gradient rows go back to a layer (``model.gradcam_layer``), not to the input."""
ROWS_AT_ONCE = {"samp": 2}
"""Rows per image an explainer's algorithm can have in one pass at most, where it bounds them: SAMP
advances both paths of every image step by step, so a step has 2n rows. Any other explainer could
put all its rows of a kind in one pass."""


@dataclass
class Cost:
    """One explainer's pass counts (rows for the whole call) and its timings per round."""

    rows: dict[str, int]
    sizes: dict[str, int] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)


def counted(model: ModelHandle, run: Callable[[], object], gradient_kind: str) -> dict[str, int]:
    """Rows through ``model.module`` during ``run()``, by pass kind."""
    rows = {"forward": 0, gradient_kind: 0}

    def hook(_m: torch.nn.Module, inputs: tuple, out: object) -> None:
        kind = gradient_kind if torch.is_tensor(out) and out.requires_grad else "forward"
        rows[kind] += len(inputs[0])

    handle = model.module.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return {k: v for k, v in rows.items() if v}


def image_explainers(model: ModelHandle, only: list[str]) -> dict[str, Explainer]:
    table = {k: e for k, e in all_explainers().items() if "image" in e.spec.modalities and not e.unsupported_reason(model)}
    return {k: table[k] for k in only} if only else table


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18_224", help="resnet18_224 or a zoo image model id")
    parser.add_argument("--n", type=int, default=2, help="images per explain call")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best of each side counts")
    parser.add_argument("--only", default="", help="comma-separated explainer ids (default: every image explainer)")
    args = parser.parse_args(argv)

    case = load_case(args.model, args.n)
    model, x, device = case.model, case.x, case.model.device
    module, layer = model.module, model.gradcam_layer
    target = model.logits(x).argmax(1).to(device)
    methods = image_explainers(model, [s for s in args.only.split(",") if s])

    def call(explainer: Explainer) -> Callable[[], object]:
        return lambda: explainer.explain(model, x, target, explainer.Params(), case.background)

    costs: dict[str, Cost] = {}
    for eid, explainer in methods.items():  # first round: counts the rows and warms every shape up
        kind = "layer_gradient" if eid in LAYER_PASSES else "gradient"
        costs[eid] = Cost(counted(model, call(explainer), kind))
    tables: dict[str, dict[int, float]] = {}
    for kind in {k for c in costs.values() for k in c.rows}:
        most = max(c.rows.get(kind, 0) for c in costs.values())
        tables[kind] = fastest(module, kind, x, target, candidate_sizes(module, x, most), layer=layer)[2]
    for eid, c in costs.items():
        most = {k: min(rows, ROWS_AT_ONCE.get(eid, rows) * args.n) for k, rows in c.rows.items()}
        c.sizes = {k: min((s for s in tables[k] if s <= most[k]), key=tables[k].__getitem__) for k in c.rows}

    for _ in range(args.repeats):
        per_row: dict[tuple[str, int], float] = {}
        for kind, size in {(k, s) for c in costs.values() for k, s in c.sizes.items()}:
            batch, tb = batch_of(x, target, size)
            per_row[kind, size] = per_row_seconds(module, kind, batch, tb, layer)
        for eid, c in costs.items():
            c.floors.append(sum(rows * per_row[k, c.sizes[k]] for k, rows in c.rows.items()))
            c.runs.append(timed(call(methods[eid]), device))

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model {args.model} on {where}; {args.n} images per call, default params, best of {args.repeats} rounds; "
          f"load average {os.getloadavg()[0]:.1f}")
    for kind, table in sorted(tables.items()):
        print(f"{kind} ms per row by batch size: " + ", ".join(f"{b}: {t * 1e3:.1f}" for b, t in table.items()))
    print(f"{'explainer':22s} {'passes per image':>30s} {'s / image':>10s} {'floor':>8s} {'ratio':>6s}  floor batch")
    ratios = {}
    for eid, c in costs.items():
        run, floor = min(c.runs) / args.n, min(c.floors) / args.n
        ratios[eid] = run / floor
        shown = ", ".join(f"{rows / args.n:g} {kind}" for kind, rows in c.rows.items())
        sizes = ", ".join(f"{kind} {size}" for kind, size in c.sizes.items())
        print(f"{eid:22s} {shown:>30s} {run:10.3f} {floor:8.3f} {ratios[eid]:6.3f}  {sizes}"
              f"{'' if ratios[eid] <= GOAL else '   (above the goal ' + str(GOAL) + ')'}")
    return ratios


if __name__ == "__main__":
    main()
