"""Cascading model-randomisation sanity check (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim,
"Sanity Checks for Saliency Maps", NeurIPS 2018, §3.1 "cascading randomization"): an explanation
that stays the same when the model's learned weights are replaced by random ones does not explain
the model.

The layers are re-initialised one unit at a time from the output down (:func:`cascade_units`), each
stage keeping the earlier stages' random weights, and the explainer under test re-explains the same
samples for the same classes (those of the trained model) at every stage. Per stage and sample:

* Spearman rank correlation of |map| with the trained model's |map| (the paper's "absolute value"
  variant, Fig. 2/4), over pixels (images) or features (tables);
* SSIM of the two |map|s each scaled to [0, 1] by its maximum (images only; Gaussian window 11, σ 1.5,
  Wang et al. 2004 with the usual C1 = 0.01², C2 = 0.03²).

Verdict (Loupe's reading of the paper's criterion): the map *fails* when, after the top half of the
units (⌈S/2⌉ of S, output side) are randomised, the median Spearman over the samples is still at
least ``threshold``; it *passes* otherwise. An explainer that ignores the model scores 1 at every
stage and fails.

The analysis runs on a worker like every analysis (``worker.analyses``); its artifact keeps the
trained and randomised maps (float16), the per-stage similarities and the verdict in ``info``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainers.base import Analysis, ExplainError, Explainer, ParamError, Params, Prepared, Spec, param
from explainers.evaluation import randomized_model, spearman
from explainers.runner import check_compatible, parse_target, resolve_targets
from model_registry.base import ModelHandle

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
          nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm)
_SSIM_WINDOW, _SSIM_SIGMA, _C1, _C2 = 11, 1.5, 0.01**2, 0.03**2


@dataclass(frozen=True)
class Unit:
    """One cascade stage's new layer: a label and the submodule names it re-initialises."""

    label: str
    modules: tuple[str, ...]


def _has_params(module: nn.Module) -> bool:
    """Whether ``module`` or any of its children holds a parameter."""
    return any(True for _ in module.parameters())


def _body(module: nn.Module) -> tuple[str, nn.Module]:
    """(name prefix, module) after unwrapping: while exactly one child holds parameters and it has
    children of its own (a wrapper such as ``Sequential(Normalize, net)``), descend into it."""
    prefix = ""
    while True:
        holders = [(n, c) for n, c in module.named_children() if _has_params(c)]
        if len(holders) != 1 or not any(True for _ in holders[0][1].children()) or any(
                True for _ in module.parameters(recurse=False)):
            return prefix, module
        prefix, module = f"{prefix}{holders[0][0]}.", holders[0][1]


def cascade_units(module: nn.Module) -> list[Unit]:
    """The layers the cascade randomises, output side first: the children that hold parameters (of
    the model, or of the one network a wrapper holds), with containers (``nn.Sequential`` /
    ``ModuleList`` / ``ModuleDict``, e.g. torchvision's ``layer1`` … ``layer4``) opened one level,
    and a normalisation layer merged into the layer before it (``conv1`` + ``bn1`` is one unit)."""
    prefix, body = _body(module)
    forward: list[list[str]] = []
    for name, child in body.named_children():
        if not _has_params(child):
            continue
        inner = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        for full, sub in inner if isinstance(child, _CONTAINERS) and inner else [(name, child)]:
            if isinstance(sub, _NORMS) and forward:
                forward[-1].append(f"{prefix}{full}")
            else:
                forward.append([f"{prefix}{full}"])
    return [Unit("+".join(names), tuple(names)) for names in reversed(forward)]


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample mean SSIM of two batches of B×H×W maps already scaled to [0, 1] (Gaussian window
    11, σ 1.5, zero padding is avoided by reflecting; data range 1)."""
    x, y = (torch.from_numpy(np.array(m, dtype=np.float64))[:, None] for m in (a, b))
    size = min(_SSIM_WINDOW, 2 * (min(x.shape[-2:]) // 2) - 1)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-(r**2) / (2 * _SSIM_SIGMA**2))
    k = (k / k.sum())
    w = (k[:, None] * k[None, :])[None, None]
    pad = (size // 2,) * 4

    def mean(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(z, pad, mode="reflect"), w)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx**2 + my**2 + _C1) * (vx + vy + _C2))
    return s.flatten(1).mean(dim=1).numpy()


def _unit_scale(maps: np.ndarray) -> np.ndarray:
    """|map| / max |map| per sample (an all-zero map stays zero)."""
    a = np.abs(maps.astype(np.float64))
    top = a.reshape(len(a), -1).max(axis=1).reshape(-1, *([1] * (a.ndim - 1)))
    return np.divide(a, top, out=np.zeros_like(a), where=top > 0)


def verdict(spearman_median: np.ndarray, units: list[str], threshold: float) -> tuple[str, str]:
    """("pass" | "fail" | "inconclusive", a plain sentence) from the per-stage median Spearman (see
    the module docstring): judged after the top ⌈S/2⌉ of S units are randomised. A stage whose maps
    are all constant has no rank correlation (NaN): inconclusive."""
    stage = math.ceil(len(units) / 2) - 1
    value = float(spearman_median[stage])
    top = ", ".join(units[: stage + 1])
    after = f"After the top {stage + 1} of {len(units)} layers ({top}) are randomised"
    if math.isnan(value):
        return "inconclusive", f"{after}, the maps are constant, so their ranks cannot be compared"
    if value >= threshold:
        return "fail", (f"{after}, the map still ranks pixels like the trained model's map (median Spearman of "
                        f"|map| {value:.2f} ≥ {threshold:g}): it does not depend on what the model learned")
    return "pass", (f"{after}, the map's median Spearman of |map| with the trained model's map falls to "
                    f"{value:.2f} (< {threshold:g}): it depends on the learned weights")


@dataclass(frozen=True)
class SanityParams(Params):
    explainer: str = param("integrated_gradients", help="the attribution explainer under test")
    explainer_params: str = param("{}", help="its parameters as JSON (stored with the preset and every "
                                             "auto value resolved)")
    samples: str = param("0,1,2,3,4,5,6,7", help="comma-separated sample ids (loupe.sanity and the CLI also take 'a:b')")
    target: str = param("predicted", help="class explained at every stage: the trained model's prediction, "
                                         "the label, or a class index")
    seed: int = param(0, low=0, high=2**31 - 1, help="seed of the random weights")
    threshold: float = param(0.7, low=0.0, high=1.0,
                             help="fail when the median Spearman of |map| is still at least this after the "
                                  "top half of the layers are randomised")
    batch_size: int = param(16, low=1, high=4096, help="samples per explain call (never changes results)",
                            group="execution")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(part.strip().isdigit() for part in self.samples.split(",")):
            raise ParamError(f"samples must be comma-separated sample ids such as 0,3,7; got {self.samples!r}")
        try:
            values = json.loads(self.explainer_params)
        except json.JSONDecodeError as err:
            raise ParamError(f"explainer_params must be a JSON object, got {self.explainer_params!r}: {err}") from None
        if not isinstance(values, dict):
            raise ParamError(f"explainer_params must be a JSON object, got {self.explainer_params!r}")


def request(explainer: str, params: dict[str, Any] | None, sample_ids: list[int], target: str | int = "predicted",
            seed: int = 0, threshold: float = 0.7) -> dict[str, Any]:
    """The :class:`SanityParams` values that check ``explainer`` with ``params`` on ``sample_ids``."""
    return {"explainer": explainer, "explainer_params": json.dumps(params or {}, sort_keys=True),
            "samples": ",".join(str(int(i)) for i in sample_ids), "target": str(target), "seed": seed,
            "threshold": threshold}


class SanityCheck(Analysis[SanityParams]):
    """Cascading model randomisation (see the module docstring)."""

    spec = Spec(
        id="sanity_check",
        title="Sanity check: cascading model randomisation",
        paper="Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency Maps. NeurIPS 2018",
        modalities=("image", "tabular"),
        needs_gradients=False,
        output="sanity",
        description="Re-explains the samples while the model's layers are randomised from the output down; "
                    "a map that stays similar does not depend on the model.",
    )
    Params = SanityParams

    def unsupported_reason(self, model: ModelHandle) -> str | None:
        reason = super().unsupported_reason(model)
        if reason is None and not (isinstance(model.module, nn.Module) and cascade_units(model.module)):
            return f"{self.spec.id} needs a torch model with parameters to randomise; {model.id} has none"
        return reason

    def resolve(self, model: ModelHandle, params: SanityParams) -> SanityParams:
        """The explainer's params with its preset and auto values resolved for ``model`` (canonical
        JSON), so equal requests share one stored result."""
        explainer = _explainer(params.explainer, model)
        inner = explainer.resolve(model, explainer.Params.from_dict(json.loads(params.explainer_params)))
        return replace(params, explainer_params=inner.to_json())

    def prepare(self, model: ModelHandle, dataset: Any, params: SanityParams) -> Prepared:
        """The samples (as arrays: the check reads each once per stage), their labels as the model's
        class indices, and the explainer's background."""
        check_compatible(model, dataset)
        ids = [int(i) for i in dataset.check_ids([int(part) for part in params.samples.split(",")])]
        class_map = dataset.class_map_for(model.classes)
        if parse_target(params.target, len(model.classes)) == "label":
            class_map.require(model.id, dataset.id)
        return Prepared(ids, {"x": dataset.inputs(ids).numpy(), "labels": class_map.labels(dataset.labels(ids)),
                              "sample_ids": ids, "background": dataset.background(32).numpy()})

    def compute(self, model: ModelHandle, params: SanityParams, inputs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Explain with the trained model, then at every cascade stage (module docstring)."""
        explainer = _explainer(params.explainer, model)
        chosen = explainer.Params.from_dict(json.loads(params.explainer_params))
        x = torch.from_numpy(inputs["x"]).to(model.device)
        background = torch.from_numpy(inputs["background"]).to(model.device)
        predictions = model.logits(x).argmax(1).numpy()
        targets = torch.as_tensor(resolve_targets(params.target, predictions, inputs["labels"], len(model.classes)),
                                  device=model.device)

        def explain(handle: ModelHandle) -> np.ndarray:
            return np.concatenate([
                np.asarray(explainer.explain(handle, x[i:i + params.batch_size], targets[i:i + params.batch_size],
                                             chosen, background).attributions, dtype=np.float32)
                for i in range(0, len(x), params.batch_size)])

        units = cascade_units(model.module)
        trained = explain(model)
        randomised, rho, structure = [], [], []
        for stage in range(len(units)):
            names = [n for unit in units[: stage + 1] for n in unit.modules]
            maps = explain(randomized_model(model, params.seed, names))
            randomised.append(maps)
            rho.append(spearman(np.abs(trained), np.abs(maps)))
            if trained.ndim == 3:
                structure.append(ssim(_unit_scale(trained), _unit_scale(maps)))
        rho_arr = np.asarray(rho, dtype=np.float64)
        with np.errstate(all="ignore"):
            median = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in rho_arr])
        labels = [u.label for u in units]
        outcome, sentence = verdict(median, labels, params.threshold)
        arrays: dict[str, np.ndarray] = {"trained_maps": trained.astype(np.float16), "randomized_maps": np.stack(randomised).astype(np.float16),
                  "spearman": rho_arr, "spearman_median": median, "targets": targets.cpu().numpy(),
                  "predictions": predictions, "labels": np.asarray(inputs["labels"])}
        if structure:
            arrays["ssim"] = np.asarray(structure, dtype=np.float64)
        info = {"explainer": params.explainer, "explainer_params": json.loads(params.explainer_params),
                "layers": labels, "layer_modules": [list(u.modules) for u in units], "verdict": outcome,
                "verdict_text": sentence, "threshold": params.threshold, "judged_after": math.ceil(len(units) / 2),
                "classes": list(model.classes),
                "annotates": _annotation(params, outcome, inputs["sample_ids"], targets.cpu().numpy(), rho_arr,
                                         arrays.get("ssim"), math.ceil(len(units) / 2) - 1)}
        return info, arrays


def _plain(value: float) -> float | None:
    """JSON-safe: NaN becomes None."""
    return None if math.isnan(value) else float(value)


def _annotation(params: SanityParams, outcome: str, sample_ids: list[int], targets: np.ndarray, rho: np.ndarray,
                structure: np.ndarray | None, stage: int) -> dict[str, Any]:
    """The columns this check adds to the export rows of the runs it checked (``store.export``
    matches them by explainer, params, sample and target): the verdict, and per sample the Spearman
    at the judged stage and with every layer random, and the SSIM at the judged stage (images)."""
    columns = ["sanity_verdict", "sanity_spearman_judged", "sanity_spearman_all_random"]
    if structure is not None:
        columns.append("sanity_ssim_judged")
    samples = {}
    for b, sample_id in enumerate(sample_ids):
        values = [outcome, _plain(rho[stage, b]), _plain(rho[-1, b])]
        if structure is not None:
            values.append(_plain(structure[stage, b]))
        samples[str(int(sample_id))] = {"target": int(targets[b]), "values": values}
    return {"explainer": params.explainer, "params": json.loads(params.explainer_params), "columns": columns,
            "samples": samples}


def _explainer(explainer_id: str, model: ModelHandle) -> Explainer[Any]:
    """The attribution explainer under test, checked against ``model``."""
    from explainers.registry import get_explainer

    explainer = get_explainer(explainer_id)
    reason = explainer.unsupported_reason(model)
    if reason:
        raise ExplainError(reason)
    return explainer


ANALYSES = (SanityCheck,)
