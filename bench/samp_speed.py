"""SAMP speed benchmark (issue #4): how close SAMP gets to the cost of its gradient passes alone,
and what it costs per image next to Captum's Integrated Gradients with as many passes.

For ``--n`` test images of a zoo model's dataset (default: 64 ``shapes`` images, ``shapes_cnn``),
target = predicted class, it times

* ``samp``: ``Samp.explain`` with the ``--preset``'s params (default ``loupe``; ``paper`` is SAMP++),
  all images in one call (a 2n-row batch);
* ``floor``: SAMP's own forward + backward passes replayed on prebuilt inputs, at the batch size
  each step had (rows still on their path: read off the run's step counts), measured in the same
  process: the work SAMP cannot avoid;
* ``ig``: ``integrated_gradients`` with n_steps = SAMP's mean passes per image (same number of
  forward + backward passes per image; Captum batches them 256+ rows at a time).

Each side is the best of ``--repeats`` interleaved runs after a warm-up. Prints samp / floor (goal
≤ 1.15) and samp / ig per image. Run from the repository root: ``python -m bench.samp_speed``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.metrics import timed  # noqa: E402
from data.builtin import load_builtin  # noqa: E402
from explainers.captum_ref import IntegratedGradients  # noqa: E402
from explainers.samp import Samp, _grad  # noqa: E402
from model_registry.zoo import load_zoo_model  # noqa: E402

GOAL = 1.15


def batch_sizes(extras: dict) -> list[int]:
    """Rows in the batch at each gradient pass k: rows whose path had not finished before it (a path
    of s steps takes s + 1 gradients: one per step and one at its end)."""
    steps = np.concatenate([np.asarray(v) for k, v in extras.items() if k.endswith("_steps")])
    return [int((steps >= k).sum()) for k in range(int(steps.max()) + 1)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_cnn", help="zoo model id (its dataset supplies the images)")
    parser.add_argument("--n", type=int, default=64, help="number of images (one batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side; the best counts")
    parser.add_argument("--preset", default="loupe", choices=("loupe", "paper"), help="SAMP's parameter preset")
    args = parser.parse_args(argv)

    model = load_zoo_model(args.model)
    device = model.device
    x = load_builtin(model.dataset).inputs(range(args.n)).to(device)
    target = model.logits(x).argmax(1).to(device)
    samp = Samp()
    params = Samp.Params(preset=args.preset)
    res = samp.explain(model, x, target, params)  # warm-up, and the step counts
    sizes = batch_sizes(res.extras)
    passes = round(sum(sizes) / args.n)
    rows, row_target = torch.cat([x, x]), torch.cat([target, target])
    ig = IntegratedGradients()
    ig_params = ig.Params(n_steps=passes, baseline="normalized_zero")

    def run_samp() -> None:
        samp.explain(model, x, target, params)

    def floor() -> None:
        for b in sizes:
            _grad(model.module, rows[:b], row_target[:b])

    def run_ig() -> None:
        ig.explain(model, x, target, ig_params)

    floor()
    run_ig()
    times = [(timed(floor, device), timed(run_samp, device), timed(run_ig, device)) for _ in range(args.repeats)]
    t_floor, t_samp, t_ig = (min(t[i] for t in times) for i in range(3))
    ratio, vs_ig = t_samp / t_floor, t_samp / t_ig
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {args.n} images in one batch "
          f"({2 * args.n} rows), SAMP {args.preset} preset: {len(sizes)} gradient passes, {sum(sizes)} forward+backward rows "
          f"({passes} per image)")
    print(f"samp (explain):               {t_samp * 1e3:9.1f} ms   best of {args.repeats}")
    print(f"floor (same fwd+bwd passes):  {t_floor * 1e3:9.1f} ms")
    print(f"IG, n_steps={passes}:            {t_ig * 1e3:9.1f} ms")
    print(f"ratio samp / floor = {ratio:.3f}   goal ≤ {GOAL}   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"per image: samp {t_samp / args.n * 1e3:.2f} ms, IG {t_ig / args.n * 1e3:.2f} ms, samp / IG = {vs_ig:.2f}")
    return {"ratio": ratio, "vs_ig": vs_ig}


if __name__ == "__main__":
    main()
