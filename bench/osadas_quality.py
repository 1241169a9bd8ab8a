"""OSA-DAS quality benchmark: deletion, insertion, insertion − deletion and pointing game over the
first ``--n`` test images of ``shapes`` (shapes_cnn) and ``digits`` (digits_cnn), for

* OSA-DAS with the ``loupe`` default (8 views, k by output dimension: 1 below 100 outputs, so 1 on
  these 4- and 10-class models; logits) and the ``paper`` preset (k = 3, clipped to half the output
  dimension: 2 on shapes_cnn's 4 logits);
* the feature-space alternatives: penultimate features and softmax probabilities under both presets;
* OSA-DAS with one view (N = 1: cosine occlusion on the output vector);
* Captum Occlusion with the same window, stride and fill (the model's mean colour), target = the
  predicted class.

Metrics are ``explainers.evaluation.evaluate`` (specs/samp.md §3: normalised-logit AUCs, mean over
images; the pointing game uses the datasets' ground-truth masks where they exist). The table is
written to ``--out`` (default bench/results/osadas.md) for the README. Run from the repository root:
``python -m bench.osadas_quality [--n 64] [--only LABEL_TEXT]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.builtin import load_builtin  # noqa: E402
from explainers.captum_ref import Occlusion  # noqa: E402
from explainers.evaluation import evaluate  # noqa: E402
from explainers.osa_das import OsaDas, auto_window  # noqa: E402
from model_registry.zoo import load_zoo_model  # noqa: E402

CASES = (("shapes_cnn", "shapes"), ("digits_cnn", "digits"))
CHUNK = 16  # images per explain call


def methods(side: int) -> dict[str, tuple[object, object]]:
    """Row label → (explainer, params), all with the OSA-DAS auto window."""
    patch, stride = auto_window(side)
    osa, occ = OsaDas(), Occlusion()
    return {
        "OSA-DAS (loupe default: 8 views, k by output dimension, logits)": (osa, osa.Params()),
        "OSA-DAS (paper preset: 8 views, k = 3, logits)": (osa, osa.Params(preset="paper")),
        "paper preset, penultimate features": (osa, osa.Params(preset="paper", feature="penultimate")),
        "paper preset, softmax probabilities": (osa, osa.Params(preset="paper", feature="probs")),
        "loupe default, softmax probabilities": (osa, osa.Params(feature="probs")),
        "OSA-DAS, one view (N = 1)": (osa, osa.Params(n_views=1)),
        f"Captum Occlusion ({patch} px window, stride {stride})": (occ, occ.Params(window=patch, stride=stride)),
    }


def run_case(model_id: str, dataset_id: str, n: int, only: str = "") -> list[dict]:
    """One table row per method (those whose label contains ``only``) for one model/dataset pair."""
    model = load_zoo_model(model_id)
    ds = load_builtin(dataset_id)
    ids = list(range(n))
    x = ds.inputs(ids).to(model.device)
    target = model.logits(x).argmax(1).to(model.device)
    masks = ds.masks(ids)
    rows = []
    for label, (explainer, params) in methods(min(model.input_shape[-2:])).items():
        if only not in label:
            continue
        start = time.perf_counter()
        maps = np.concatenate([
            explainer.explain(model, x[i : i + CHUNK], target[i : i + CHUNK], params).attributions
            for i in range(0, n, CHUNK)
        ])
        seconds = time.perf_counter() - start
        metrics = evaluate(model, x, maps, target, masks)
        deletion = float(np.mean([m["deletion_auc"] for m in metrics]))
        insertion = float(np.mean([m["insertion_auc"] for m in metrics]))
        hits = [m["pointing_hit"] for m in metrics if m.get("pointing_hit") is not None]
        rows.append({
            "dataset": f"{dataset_id} ({model_id})", "method": label, "deletion": deletion, "insertion": insertion,
            "overall": insertion - deletion, "pointing": float(np.mean(hits)) if hits else None, "seconds": seconds,
        })
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], n: int, device: str) -> str:
    """The markdown results table."""
    lines = [
        f"OSA-DAS quality on the first {n} test images of each dataset (`python -m bench.osadas_quality`, {device}).",
        "Deletion/insertion: mean normalised-logit AUC of the predicted class (explainers/evaluation.py);",
        "overall = insertion − deletion (our reading of the paper's \"Overall\"); pointing game on the shapes masks.",
        "",
        "| dataset (model) | method | deletion ↓ | insertion ↑ | ins − del ↑ | pointing game ↑ | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pointing = "–" if r["pointing"] is None else f"{r['pointing']:.3f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['deletion']:.3f} | {r['insertion']:.3f} | "
                     f"{r['overall']:.3f} | {pointing} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="test images per dataset (≥ 64 for the README table)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "osadas.md")
    parser.add_argument("--only", default="", help="run only the rows whose label contains this text")
    args = parser.parse_args(argv)
    rows = [row for model_id, dataset_id in CASES for row in run_case(model_id, dataset_id, args.n, args.only)]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    text = table(rows, args.n, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
