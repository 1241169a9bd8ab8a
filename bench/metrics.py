"""Deletion/insertion benchmark: how close the metric gets to the cost of its forward passes alone.

For ``--n`` images of a zoo model's dataset (default: 64 ``shapes`` images, ``shapes_cnn``), or of
the research-scale case ``resnet18_224`` (ResNet-18 at 1000 classes on 224×224 images, 4 images by
default: ``bench.cases``), with saliency maps and the predicted class as target, it times

* ``metric``: ``explainers.evaluation.curves`` (deletion + insertion: build every perturbed input
  on the model's device, run the forwards, gather the scores);
* ``floor``: as many forward passes over prebuilt inputs at the fastest batch size (``bench.floor``),
  measured in the same process;

each as the best of ``--repeats`` interleaved runs after a warm-up, and prints ratio = best metric /
best floor with the goal ratio ≤ 1.15. On a shared machine the two bests can come from different
load; the median of the per-repeat ratios (each repeat runs both sides back to back, in
alternating order) is printed beside it as the noise-robust reading. Run from the repository root:
``python -m bench.metrics [--model shapes_resnet | resnet18_224]``. Datasets come from the normal
cache (``LOUPE_HOME``); the first run generates them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402

from bench.cases import RESNET_CASES, load_case  # noqa: E402
from bench.floor import candidate_sizes, fastest, passes, timed  # noqa: E402
from explainers.captum_ref import Saliency  # noqa: E402
from explainers.evaluation import curves  # noqa: E402

GOAL = 1.15


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_cnn",
                        help=f"zoo model id (its dataset supplies the images) or {', '.join(RESNET_CASES)}")
    parser.add_argument("--n", type=int, default=0, help="number of images (default 64; 4 for resnet18_224)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="rows per block the metric yields (one pass each off the CPU; the CPU sizes its own passes)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per side; the best counts (default 5; 3 for resnet18_224)")
    args = parser.parse_args(argv)
    large = args.model in RESNET_CASES
    n, repeats = args.n or (4 if large else 64), args.repeats or (3 if large else 5)

    case = load_case(args.model, n)
    model, x = case.model, case.x
    device = model.device
    target = model.logits(x).argmax(1).to(device)
    maps = Saliency().explain(model, x, target, Saliency.Params()).attributions

    def metric() -> None:
        curves(model, x, maps, target, batch_size=args.batch_size)

    metric()  # warm-up: allocator, kernels, thread pools
    n_rows = curves(model, x, maps, target, batch_size=args.batch_size).n_forward
    best_bs, _, per_row = fastest(model.module, "forward", x, target, candidate_sizes(model.module, x, n_rows))
    floor = passes(model.module, "forward", x, target, n_rows, best_bs)
    floor()
    pairs = []
    for i in range(repeats):
        if i % 2:
            t_m, t_f = timed(metric, device), timed(floor, device)
        else:
            t_f, t_m = timed(floor, device), timed(metric, device)
        pairs.append((t_f, t_m))
    t_floor, t_metric = min(f for f, _ in pairs), min(m for _, m in pairs)
    paired = statistics.median(m / f for f, m in pairs)

    c = curves(model, x, maps, target, batch_size=args.batch_size)
    ratio = t_metric / t_floor
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {n} images, "
          f"{c.deletion.shape[1]} points per curve (step_per {c.step_per}), blocks of {args.batch_size} rows; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("forward ms per row by batch size: " + ", ".join(f"{b}: {t * 1e3:.2f}" for b, t in per_row.items()))
    print(f"forward passes: {n_rows} rows; floor at batch {best_bs}")
    print(f"metric (deletion + insertion): {t_metric * 1e3:8.1f} ms   best of {repeats} "
          f"({t_metric / n:.3f} s per image)")
    print(f"floor (prebuilt inputs):       {t_floor * 1e3:8.1f} ms   best of {repeats}")
    print(f"ratio metric / floor = {ratio:.3f}   goal ≤ {GOAL}   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"median per-repeat ratio = {paired:.3f}   (same goal; robust to load changing between repeats)")
    return ratio


if __name__ == "__main__":
    main()
