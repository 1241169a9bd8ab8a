"""Bluff pathways speed: ``loupe.pathways`` wall time divided by a floor measured in the same run, and
the time to answer a strength / criterion change from the stored result.

The floor is the model work the analysis cannot avoid, in plain torch at the fastest batch size:
``steps`` forward+backward passes of targeted L2 PGD over all images × strengths (one batch grid),
one forward pass over the attacked images for their statistics, and the analysis's other passes:
the benign images of both classes, one per image of every condition for the edges, the patch pool,
and one forward+backward row per displayed layer for its receptive field. The wall time is a cold
request (fresh store) on a warm embedded Dask worker (a one-step request of the same size first loads
torch, ART and the model there and runs every pass shape once: on 2 CPU cores the worker's first
full-size request ran its attack about 1.3× slower than the next ones), so it counts the attack
through ART, statistics, edges, patches, transfer and storing.

    python -m bench.pathways_speed [--model shapes_cnn] [--images 32] [--steps 50]
    python -m bench.pathways_speed --model resnet18_224     # 4 images per class, 10 steps

``resnet18_224`` (``bench.cases``) registers the ResNet-18-shaped 1000-class model and a 224×224
image set through a manifest, as a user would, so the worker loads both by id; its weights are
random, so the benign images are used whether or not the model classifies them correctly
(``correct_only=False``), and every displayed layer is the default (every convolution).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.cases import RESNET_CASES, write_manifest  # noqa: E402
from bench.floor import candidate_sizes, fastest, passes  # noqa: E402

def pgd_seconds(module: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, target: int, steps: int,
                batch_size: int) -> float:
    """Plain-torch targeted L2 PGD (step eps/5) plus one statistics forward over the attacked images,
    with the weights frozen as the analysis freezes them (no weight gradients)."""
    from explainers.pathways import weights_frozen

    start = time.perf_counter()
    with weights_frozen(module):
        _pgd(module, x, eps, target, steps, batch_size)
    return time.perf_counter() - start


def _pgd(module: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, target: int, steps: int,
         batch_size: int) -> None:
    """The attack of :func:`pgd_seconds`, ``batch_size`` rows at a time."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes_cnn", help=f"zoo model id or {', '.join(RESNET_CASES)}")
    parser.add_argument("--images", type=int, default=0, help="benign images per class (default 32; 4 for resnet18_224)")
    parser.add_argument("--steps", type=int, default=0, help="PGD steps (default 50; 10 for resnet18_224)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side; the best counts")
    args = parser.parse_args()
    large = args.model in RESNET_CASES
    images, steps = args.images or (4 if large else 32), args.steps or (10 if large else 50)
    os.environ["LOUPE_HOME"] = tempfile.mkdtemp(prefix="loupe-bench-pathways-")
    extra = {}
    if large:
        os.environ["LOUPE_MANIFEST"] = str(write_manifest(Path(tempfile.mkdtemp(prefix="loupe-bench-r18-")), images))
        extra = {"correct_only": False}
    import loupe
    from explainers.pathways import PathwaysParams
    from explainers.results.pathways import CRITERIA
    from views.pathways import graph_figure

    model = loupe.model(args.model)
    ds = loupe.dataset(model.dataset)
    module = model.module
    params = PathwaysParams(original=0, target=1, steps=steps, images=images, **extra)
    labels = ds.class_map_for(model.classes).labels(ds.eval.y)
    ids = [int(i) for i in np.flatnonzero(labels == 0)[:images]]
    gathered = [int(i) for c in (0, 1) for i in np.flatnonzero(labels == c)[:2 * images]]
    grid = torch.tensor(params.grid)
    x = ds.inputs(ids).repeat(len(grid), 1, 1, 1)
    eps = grid.repeat_interleave(len(ids))
    target = torch.ones(len(x), dtype=torch.long)
    torch.set_num_threads(os.cpu_count() or 1)
    # The attack's batch size: the fastest for forward + backward passes (warmed up, interleaved rounds).
    best = fastest(module, "gradient", x, target, candidate_sizes(module, x, len(x)))[0]
    best_fwd = fastest(module, "forward", x, target, candidate_sizes(module, x, len(x)))[0]
    loupe.pathways(args.model, ds.id, 0, 1, steps=1, images=images, **extra)  # warm the worker at the measured shapes
    walls, floors, attacks = [], [], []
    for _ in range(args.repeats):  # interleaved, so that a slower spell of the machine hits both sides
        os.environ["LOUPE_HOME"] = tempfile.mkdtemp(prefix="loupe-bench-pathways-")  # a cold request each time
        start = time.perf_counter()
        res = loupe.pathways(args.model, ds.id, 0, 1, steps=steps, images=images, **extra)
        walls.append(time.perf_counter() - start)
        pool = min(params.patch_pool, len(ds))
        other_rows = len(gathered) + 1 + int(res.n_used.sum()) + pool  # benign, wiring check, edges, patches
        start = time.perf_counter()
        passes(module, "forward", x, target, other_rows, best_fwd)()
        passes(module, "gradient", x, target, len(res.layers), 1)()  # one receptive-field row per layer
        others = time.perf_counter() - start
        attacks.append(pgd_seconds(module, x, eps, 1, steps, best))
        floors.append(attacks[-1] + others)
    wall, floor = min(walls), min(floors)
    print(f"{args.model}: {images} images x {len(grid)} strengths x {steps} steps, {len(res.layers)} layers, "
          f"{len(res.nodes)} nodes (success {[round(float(r), 2) for r in res.success_rate]}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"runs: loupe.pathways {', '.join(f'{w:.1f}' for w in walls)} s; floor {', '.join(f'{f:.1f}' for f in floors)} s")
    print(f"floor parts: attack {', '.join(f'{a:.1f}' for a in attacks)} s ({len(x)} rows x {steps} steps), "
          f"other passes {', '.join(f'{f - a:.1f}' for f, a in zip(floors, attacks))} s ({other_rows} forward rows)")
    print(f"floor {floor:.1f} s at batch {best} (other forwards at {best_fwd}); loupe.pathways {wall:.1f} s "
          f"(best of {args.repeats} each); ratio {wall / floor:.3f} (goal <= 1.3)")
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
