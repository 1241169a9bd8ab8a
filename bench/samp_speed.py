"""SAMP speed benchmark (issue #4): how close SAMP gets to the cost of its gradient passes alone,
and what it costs per image next to Captum's Integrated Gradients with as many passes.

For ``--n`` test images of a zoo model's dataset (default: 64 ``shapes`` images, ``shapes_cnn``), or
of the research-scale case ``resnet18_224`` (ResNet-18 at 1000 classes on 224×224 images, 4 images
by default: ``bench.cases``), target = predicted class, it times

* ``samp``: ``Samp.explain`` with the ``--preset``'s params (default ``loupe``; ``paper`` is SAMP++),
  all images in one call (a 2n-row batch);
* ``floor``: as many forward + backward passes as SAMP made (rows still on their path at each step:
  read off the run's step counts), replayed on prebuilt inputs at the fastest batch size
  (``bench.floor``), measured in the same process: the work SAMP cannot avoid;
* ``ig``: ``integrated_gradients`` with n_steps = SAMP's mean passes per image (same number of
  forward + backward passes per image).

Each side is the best of ``--repeats`` interleaved runs after a warm-up. Prints samp / floor (goal
≤ 1.15) and samp / ig per image. Run from the repository root: ``python -m bench.samp_speed
[--model resnet18_224]``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.cases import RESNET_CASES, load_case  # noqa: E402
from bench.floor import candidate_sizes, fastest, passes, timed  # noqa: E402
from explainers.captum_ref import IntegratedGradients  # noqa: E402
from explainers.samp import Samp  # noqa: E402

GOAL = 1.15


def batch_sizes(extras: dict) -> list[int]:
    """Rows in the batch at each gradient pass k: rows whose path had not finished before it (a path
    of s steps takes s + 1 gradients: one per step and one at its end)."""
    steps = np.concatenate([np.asarray(v) for k, v in extras.items() if k.endswith("_steps")])
    return [int((steps >= k).sum()) for k in range(int(steps.max()) + 1)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_cnn",
                        help=f"zoo model id (its dataset supplies the images) or {', '.join(RESNET_CASES)}")
    parser.add_argument("--n", type=int, default=0, help="number of images, one batch (default 64; 4 for resnet18_224)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed repeats per side; the best counts (default 3; 2 for resnet18_224)")
    parser.add_argument("--preset", default="loupe", choices=("loupe", "paper"), help="SAMP's parameter preset")
    args = parser.parse_args(argv)
    large = args.model in RESNET_CASES
    n, repeats = args.n or (4 if large else 64), args.repeats or (2 if large else 3)

    case = load_case(args.model, n)
    model, x = case.model, case.x
    device = model.device
    target = model.logits(x).argmax(1).to(device)
    samp = Samp()
    params = Samp.Params(preset=args.preset)
    res = samp.explain(model, x, target, params)  # warm-up, and the step counts
    sizes = batch_sizes(res.extras)
    rows, passes_per_image = sum(sizes), round(sum(sizes) / n)
    ig = IntegratedGradients()
    ig_params = ig.Params(n_steps=passes_per_image, baseline="normalized_zero")
    best_bs, _, per_row = fastest(model.module, "gradient", x, target, candidate_sizes(model.module, x, max(sizes)))
    floor = passes(model.module, "gradient", x, target, rows, best_bs)

    def run_samp() -> None:
        samp.explain(model, x, target, params)

    def run_ig() -> None:
        ig.explain(model, x, target, ig_params)

    floor()
    run_ig()
    times = [(timed(floor, device), timed(run_samp, device), timed(run_ig, device)) for _ in range(repeats)]
    t_floor, t_samp, t_ig = (min(t[i] for t in times) for i in range(3))
    ratio, vs_ig = t_samp / t_floor, t_samp / t_ig
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {n} images in one batch "
          f"({2 * n} rows), SAMP {args.preset} preset: {len(sizes)} steps, {rows} forward+backward rows "
          f"({passes_per_image} per image); load average {os.getloadavg()[0]:.1f}")
    print("forward+backward ms per row by batch size: " + ", ".join(f"{b}: {t * 1e3:.2f}" for b, t in per_row.items()))
    print(f"samp (explain):               {t_samp * 1e3:9.1f} ms   best of {repeats} "
          f"({', '.join(f'{t[1]:.2f}' for t in times)} s)")
    print(f"floor (same passes, batch {best_bs}): {t_floor * 1e3:9.1f} ms   ({', '.join(f'{t[0]:.2f}' for t in times)} s)")
    print(f"IG, n_steps={passes_per_image}:            {t_ig * 1e3:9.1f} ms")
    print(f"ratio samp / floor = {ratio:.3f}   goal ≤ {GOAL}   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"per image: samp {t_samp / n * 1e3:.2f} ms, IG {t_ig / n * 1e3:.2f} ms, samp / IG = {vs_ig:.2f}")
    return {"ratio": ratio, "vs_ig": vs_ig}


if __name__ == "__main__":
    main()
