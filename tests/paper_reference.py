"""Reference outputs of the four seed explainers with the paper's settings (issue #17: ``preset="paper"``
reproduces the results Loupe gave before the ``loupe`` defaults existed).

``tests/data/paper_reference.npz`` was written by this module from the code of commit c62b468 (the last
one before presets), where the default parameters were the paper's, with ``python -m tests.paper_reference``
and no params; ``tests/test_presets.py`` recomputes the same cases with ``{"preset": "paper"}`` and
compares. Maps are small float32 arrays; analyses keep their numeric arrays and their ``info`` as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURE = Path(__file__).resolve().parent / "data" / "paper_reference.npz"
MAP_CASES = {"shapes_cnn": [0, 1], "shapes_resnet": [0], "digits_cnn": [0, 1]}
"""Zoo model -> test sample ids explained by SAMP and OSA-DAS."""
ANALYSIS_CASES = {
    "surrogate_rules": ("breast_cancer_mlp", "breast_cancer",
                        {"n_explain": 64, "n_shap": 16, "max_leaves": 8}),
    "bluff_pathways": ("shapes_cnn", "shapes",
                       {"original": 0, "target": 1, "strengths": "0.1,0.5", "steps": 3, "images": 4,
                        "patch_pool": 8, "patches": 2}),
}
"""Analysis id -> (model, dataset, params besides the preset): small enough for the default test run."""
_TIMINGS = ("seconds", "timings")


def map_outputs(explainer_id: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """``<explainer>/<model>``: the maps of MAP_CASES' samples (predicted class), explained in-process."""
    from data.builtin import load_builtin
    from explainers.registry import get_explainer
    from model_registry.zoo import load_zoo_model

    explainer = get_explainer(explainer_id)
    out = {}
    for model_id, ids in MAP_CASES.items():
        model = load_zoo_model(model_id, torch.device("cpu"))
        x = load_builtin(model.dataset).inputs(ids)
        target = model.logits(x).argmax(1)
        res = explainer.explain(model, x, target, explainer.Params.from_dict(params))
        out[f"{explainer_id}/{model_id}"] = np.asarray(res.attributions, dtype=np.float32)
    return out


def _without_timings(value: Any) -> Any:
    """``info`` with wall-clock entries dropped (they differ run to run)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in _TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def analysis_outputs(analysis_id: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """``<analysis>/<array>`` for every numeric array of the artifact, and ``<analysis>/info`` (JSON
    text without timings), computed in-process (prepare + compute, no store)."""
    from data.registry import get_dataset
    from explainers.registry import get_analysis
    from model_registry.registry import get_model

    model_id, dataset_id, fixed = ANALYSIS_CASES[analysis_id]
    analysis = get_analysis(analysis_id)
    model = get_model(model_id, torch.device("cpu"))
    checked = analysis.Params.from_dict({**fixed, **params})
    info, arrays = analysis.compute(model, checked, analysis.prepare(model, get_dataset(dataset_id), checked).inputs)
    out = {f"{analysis_id}/{name}": np.asarray(a) for name, a in arrays.items() if np.asarray(a).dtype.kind in "biuf"}
    out[f"{analysis_id}/info"] = np.array(json.dumps(_without_timings(info), sort_keys=True, default=str))
    return out


def outputs(params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every case of every seed explainer with ``params`` added to each case's own."""
    out: dict[str, np.ndarray] = {}
    for explainer_id in ("samp", "osa_das"):
        out.update(map_outputs(explainer_id, params))
    for analysis_id in ANALYSIS_CASES:
        out.update(analysis_outputs(analysis_id, params))
    return out


def main() -> None:
    """Write the fixture from the current code's defaults (run only on the pre-preset commit)."""
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **outputs({}))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
