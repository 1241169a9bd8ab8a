"""Bluff pathways speed: ``loupe.pathways`` wall time divided by a floor measured in the same run, and
the time to answer a strength / criterion change from the stored result.

The floor is the unavoidable model work done in plain torch at the best batch size: ``steps``
forward+backward passes of targeted L2 PGD over all images × strengths (one batch grid), then one
forward pass over the benign and attacked images for the statistics. The wall time is a cold request
(fresh store) on a warm embedded Dask worker (a one-step request of the same size first loads
torch, ART and the model there and runs every pass shape once: on 2 CPU cores the worker's first
full-size request ran its attack about 1.3× slower than the next ones), so it counts the attack
through ART, statistics, edges, patches, transfer and storing.

    python -m bench.pathways_speed [--model shapes_cnn] [--images 32] [--steps 50]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

BATCH_SIZES = (8, 16, 32, 64, 128, 256)
PROBE_ROWS = 256
"""Each batch size is first timed on 2 PGD steps over this many rows; the floor runs at the fastest."""


def floor_seconds(module: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, target: int, steps: int,
                  batch_size: int) -> float:
    """Plain-torch targeted L2 PGD (step eps/5) plus one statistics forward over everything."""
    start = time.perf_counter()
    for lo in range(0, len(x), batch_size):
        xb, eb = x[lo:lo + batch_size], eps[lo:lo + batch_size, None, None, None]
        adv = xb.clone()
        tgt = torch.full((len(xb),), target)
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(module(adv), tgt), adv)
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
            delta = (adv.detach() - eb / 5 * grad / norm) - xb
            delta = delta * torch.clamp(eb / delta.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None], max=1)
            adv = (xb + delta).clamp(0, 1)
        with torch.no_grad():
            module(adv)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes_cnn")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side; the best counts")
    args = parser.parse_args()
    os.environ["LOUPE_HOME"] = tempfile.mkdtemp(prefix="loupe-bench-pathways-")
    import loupe
    from explainers.pathways import PathwaysParams
    from explainers.results.pathways import CRITERIA
    from views.pathways import graph_figure

    model, ds = loupe.model(args.model), loupe.dataset(loupe.model(args.model).dataset)
    params = PathwaysParams(original=0, target=1, steps=args.steps, images=args.images)
    ids = [i for i in range(len(ds)) if ds.eval.y[i] == 0][:args.images]
    grid = torch.tensor(params.grid)
    x = ds.inputs(ids).repeat(len(grid), 1, 1, 1)
    eps = grid.repeat_interleave(len(ids))
    torch.set_num_threads(os.cpu_count() or 1)
    n = min(PROBE_ROWS, len(x))
    per_batch = {b: floor_seconds(model.module, x[:n], eps[:n], 1, 2, b) for b in BATCH_SIZES}
    best = min(per_batch, key=per_batch.get)
    loupe.pathways(args.model, ds.id, 0, 1, steps=1, images=args.images)  # warm the worker at the measured shapes
    walls, floors = [], []
    for _ in range(args.repeats):  # interleaved, so that a slower spell of the machine hits both sides
        os.environ["LOUPE_HOME"] = tempfile.mkdtemp(prefix="loupe-bench-pathways-")  # a cold request each time
        start = time.perf_counter()
        res = loupe.pathways(args.model, ds.id, 0, 1, steps=args.steps, images=args.images)
        walls.append(time.perf_counter() - start)
        floors.append(floor_seconds(model.module, x, eps, 1, args.steps, best) + floor_seconds(
            model.module, ds.inputs(ids), eps[:len(ids)], 1, 0, best))  # + the benign statistics pass
    wall, floor = min(walls), min(floors)
    print(f"{args.model}: {args.images} images x {len(grid)} strengths x {args.steps} steps "
          f"(success {[round(float(r), 2) for r in res.success_rate]})")
    print(f"runs: loupe.pathways {', '.join(f'{w:.1f}' for w in walls)} s; floor {', '.join(f'{f:.1f}' for f in floors)} s")
    print(f"floor {floor:.1f} s at batch {best}; loupe.pathways {wall:.1f} s (best of {args.repeats} each); "
          f"ratio {wall / floor:.3f} (goal <= 1.3)")
    reopened = loupe.pathways_result(res.key)
    answers, figures = [], []
    for strength in [0.0, *res.strengths.tolist()]:
        for criterion in CRITERIA:
            t0 = time.perf_counter()
            hl = reopened.highlight(criterion, strength, 20, 30)
            t1 = time.perf_counter()
            graph_figure(reopened, strength, hl, np.ones(len(hl.nodes), bool))
            answers.append(t1 - t0)
            figures.append(time.perf_counter() - t1)
    print(f"strength/criterion change from the stored result: highlight median {1e3 * np.median(answers):.2f} ms, "
          f"max {1e3 * max(answers):.2f} ms; with the graph figure median "
          f"{1e3 * np.median(np.add(answers, figures)):.1f} ms, max {1e3 * max(np.add(answers, figures)):.1f} ms "
          f"(goal < 50 ms)")
    from worker import cluster

    cluster.shutdown()


if __name__ == "__main__":
    main()
