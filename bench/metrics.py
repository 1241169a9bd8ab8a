"""Deletion/insertion benchmark: how close the metric gets to the cost of its forward passes alone.

For ``--n`` images of a zoo model's dataset (default: 64 ``shapes`` images, ``shapes_cnn``), with
saliency maps and the predicted class as target, it times

* ``metric``: ``explainers.evaluation.curves`` (deletion + insertion: build every perturbed input
  on the model's device, run the forwards, gather the scores);
* ``floor``: the same forward passes, in the same batches, over inputs built beforehand
  (the exact batches ``perturbation_batches`` yields), measured in the same process;

each as the best of ``--repeats`` interleaved runs after a warm-up, and prints ratio = best metric /
best floor with the goal ratio ≤ 1.15. On a shared machine the two bests can come from different
load; the median of the per-repeat ratios (each repeat runs both sides back to back, in
alternating order) is printed beside it as the noise-robust reading. Run from the repository root: ``python -m bench.metrics [--model shapes_resnet]``.
Datasets come from the normal cache (``LOUPE_HOME``); the first run generates them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402

from data.builtin import load_builtin  # noqa: E402
from explainers.evaluation import curves, perturbation_batches  # noqa: E402
from explainers.captum_ref import Saliency  # noqa: E402
from model_registry.zoo import load_zoo_model  # noqa: E402

GOAL = 1.15


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of ``fn`` (CUDA work is synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_cnn", help="zoo model id (its dataset supplies the images)")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per forward pass (both sides)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per side; the best counts")
    args = parser.parse_args(argv)

    model = load_zoo_model(args.model)
    device = model.device
    x = load_builtin(model.dataset).inputs(range(args.n)).to(device)
    target = model.logits(x).argmax(1).to(device)
    maps = Saliency().explain(model, x, target, Saliency.Params()).attributions

    def metric() -> None:
        curves(model, x, maps, target, batch_size=args.batch_size)

    prebuilt = [rows for _, rows in perturbation_batches(model, x, maps, batch_size=args.batch_size)]

    @torch.inference_mode()
    def floor() -> None:
        for rows in prebuilt:
            model.module(rows)

    metric()  # warm-up: allocator, kernels, thread pools
    floor()
    pairs = []
    for i in range(args.repeats):
        if i % 2:
            t_m, t_f = timed(metric, device), timed(floor, device)
        else:
            t_f, t_m = timed(floor, device), timed(metric, device)
        pairs.append((t_f, t_m))
    t_floor, t_metric = min(f for f, _ in pairs), min(m for _, m in pairs)
    paired = statistics.median(m / f for f, m in pairs)

    c = curves(model, x, maps, target, batch_size=args.batch_size)
    rows = sum(len(r) for r in prebuilt)
    assert rows == c.n_forward, (rows, c.n_forward)
    ratio = t_metric / t_floor
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {args.n} images, "
          f"{c.deletion.shape[1]} points per curve (step_per {c.step_per}), batch size {args.batch_size}")
    print(f"forward passes: metric {c.n_forward} rows, floor {rows} rows, in {len(prebuilt)} batches each")
    print(f"metric (deletion + insertion): {t_metric * 1e3:8.1f} ms   best of {args.repeats}")
    print(f"floor (prebuilt inputs):       {t_floor * 1e3:8.1f} ms   best of {args.repeats}")
    print(f"ratio metric / floor = {ratio:.3f}   goal ≤ {GOAL}   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"median per-repeat ratio = {paired:.3f}   (same goal; robust to load changing between repeats)")
    return ratio


if __name__ == "__main__":
    main()
