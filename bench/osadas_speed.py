"""OSA-DAS speed benchmark, every number measured side by side in one process:

* ``default / floor``: OSA-DAS wall time (defaults) over N·(1 + P) forward passes per image of
  prebuilt inputs at the fastest batch size (``bench.floor``: powers of two from 1 whose activations
  stay within 256 MB; goal ≤ 1.15), the two timed in turn ``--repeats`` times (so that a slower
  spell of the machine hits both), best of each;
* ``one view / Captum``: OSA-DAS with N = 1 over Captum Occlusion with the same window, stride and
  fill (goal ≤ 1.0);
* ``preselect 0.5``: speed-up over the default and the change in deletion, insertion and pointing
  game (explainers/evaluation.py).

Each time is the best of ``--repeats`` runs after a warm-up. Run from the repository root:
``python -m bench.osadas_speed [--model shapes_cnn --n 16]``, or at research scale
``python -m bench.osadas_speed --model resnet18_224`` (ResNet-18 at 1000 classes, 224×224, one image
and two repeats by default: ``bench.cases``).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.cases import RESNET_CASES, load_case  # noqa: E402
from bench.floor import candidate_sizes, fastest, passes, timed  # noqa: E402
from explainers.captum_ref import Occlusion  # noqa: E402
from explainers.evaluation import evaluate  # noqa: E402
from explainers.osa_das import OsaDas  # noqa: E402


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (CUDA synchronised)."""
    fn()
    return min(timed(fn, device) for _ in range(repeats))


def quality(model, x, maps, target, masks) -> dict[str, float]:
    rows = evaluate(model, x, maps, target, masks)
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("deletion_auc", "insertion_auc")}
    hits = [r["pointing_hit"] for r in rows if r.get("pointing_hit") is not None]
    out["pointing"] = float(np.mean(hits)) if hits else float("nan")
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_cnn",
                        help=f"zoo model id (its dataset supplies the images) or {', '.join(RESNET_CASES)}")
    parser.add_argument("--n", type=int, default=0, help="images per explain call (default 16; 1 for resnet18_224)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per side (default 3; 2 for resnet18_224)")
    args = parser.parse_args(argv)
    large = args.model in RESNET_CASES
    n, repeats = args.n or (1 if large else 16), args.repeats or (2 if large else 3)

    case = load_case(args.model, n)
    model, x, masks = case.model, case.x, case.masks
    device = model.device
    target = model.logits(x).argmax(1).to(device)
    osa, occ = OsaDas(), Occlusion()
    default, one, half = osa.Params(), osa.Params(n_views=1), osa.Params(preselect=0.5)
    res = osa.explain(model, x, target, default)
    patch, stride = res.extras["patch"], res.extras["stride"]
    captum = occ.Params(window=patch, stride=stride)
    rows = n * res.extras["forwards_per_sample"]

    best_bs, _, per_row = fastest(model.module, "forward", x, target, candidate_sizes(model.module, x, rows))
    run_floor = passes(model.module, "forward", x, target, rows, best_bs)
    run_default = lambda: osa.explain(model, x, target, default)  # noqa: E731
    pairs = [(timed(run_default, device), timed(run_floor, device)) for _ in range(repeats)]  # interleaved
    t_default, t_floor = min(p[0] for p in pairs), min(p[1] for p in pairs)
    t_one = best_time(lambda: osa.explain(model, x, target, one), device, repeats)
    t_captum = best_time(lambda: occ.explain(model, x, target, captum), device, repeats)
    t_half = best_time(lambda: osa.explain(model, x, target, half), device, repeats)
    q_full = quality(model, x, res.attributions, target, masks)
    q_half = quality(model, x, osa.explain(model, x, target, half).attributions, target, masks)

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    ratio, one_ratio = t_default / t_floor, t_one / t_captum
    print(f"model {args.model} on {where}; {n} images; window {patch} px, stride {stride}; "
          f"{res.extras['forwards_per_sample']} forwards per image (N·(1 + P)); load average {os.getloadavg()[0]:.1f}")
    print("forward ms per row by batch size: " + ", ".join(f"{b}: {t * 1e3:.2f}" for b, t in per_row.items()))
    print(f"OSA-DAS defaults:        {t_default * 1e3:9.1f} ms   ({t_default / n:.2f} s per image; runs "
          + ", ".join(f"{p[0]:.2f}" for p in pairs) + " s)")
    print(f"floor ({rows} forwards, best batch {best_bs}): {t_floor * 1e3:9.1f} ms   (runs "
          + ", ".join(f"{p[1]:.2f}" for p in pairs) + " s)")
    print(f"ratio default / floor = {ratio:.3f}   goal ≤ 1.15   {'PASS' if ratio <= 1.15 else 'FAIL'}")
    print(f"OSA-DAS one view:        {t_one * 1e3:9.1f} ms;  Captum Occlusion: {t_captum * 1e3:9.1f} ms")
    print(f"ratio one view / Captum = {one_ratio:.3f}   goal ≤ 1.0   {'PASS' if one_ratio <= 1.0 else 'FAIL'}")
    print(f"preselect 0.5:           {t_half * 1e3:9.1f} ms;  speed-up ×{t_default / t_half:.2f}")
    for key in ("deletion_auc", "insertion_auc", "pointing"):
        print(f"  {key:14s} full {q_full[key]:.3f}  preselect 0.5 {q_half[key]:.3f}  change {q_half[key] - q_full[key]:+.3f}")
    return {"ratio": ratio, "one_view_ratio": one_ratio, "preselect_speedup": t_default / t_half}


if __name__ == "__main__":
    main()
