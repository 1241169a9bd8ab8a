"""Run one explainer over dataset samples: check compatibility, resolve targets, batch, score.

This is the unit of work a job performs (in-process or on a Dask worker, issue #3). It only needs a
:class:`~model_registry.base.ModelHandle` and a :class:`~data.base.Dataset`, so it is tested without
Streamlit, the store or a cluster.
"""
from __future__ import annotations

import platform
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from data.base import Dataset
from data.classes import ClassMap
from explainers.base import Analysis, ExplainError, Explainer, ParamError, Params, Passes, Result
from explainers.registry import get_explainer
from model_registry.base import ModelHandle
from store.keys import TARGET_RULES, digest

Progress = Callable[[int, int], object]
"""Called as ``progress(done, total)`` after each batch."""


def parse_target(target: str | int, n_classes: int | None = None) -> str | int:
    """Normalise a target rule: "predicted" (default), "label", or a class index (int or digits),
    checked against ``n_classes`` when given."""
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise ExplainError(f"target must be 'predicted', 'label' or a class index, got {target!r}")
    if isinstance(target, str) and target not in TARGET_RULES:
        raise ExplainError(f"target must be 'predicted', 'label' or a class index, got {target!r}")
    if isinstance(target, int) and n_classes is not None and not 0 <= target < n_classes:
        raise ExplainError(f"target class {target} is out of range: the model has {n_classes} classes")
    return target


def resolve_targets(rule: str | int, predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class index per sample: the prediction, the label, or one fixed class."""
    rule = parse_target(rule, n_classes)
    if rule == "predicted":
        return predictions.astype(np.int64)
    if rule == "label":
        return labels.astype(np.int64)
    return np.full(len(predictions), rule, dtype=np.int64)


def keyed_hash(dataset: Dataset, ids: Sequence[int], class_map: ClassMap) -> str:
    """The samples' content hash as cache keys see it, covering their labels as the model's class
    indices: when the dataset's labels are not the model's indices as they are
    (``class_map.identity``), the mapping joins the hash, so results stored under another mapping
    are never reused."""
    found = dataset.content_hash(ids)
    if class_map.identity:
        return found
    return digest({"content_hash": found, "model_labels": list(class_map.index)})


def run_fields(model: ModelHandle, dataset: Dataset, sample_ids: Sequence[int], explainer_id: str,
               params: dict[str, Any], target: str | int) -> dict[str, Any]:
    """What the stored run of explaining ``sample_ids`` is keyed by (:func:`store.keys.run_key`'s
    fields): the model and its weights, the dataset, the samples and their content hash, the
    explainer and its version, the params (all of them, defaults filled) and the target rule."""
    spec = get_explainer(explainer_id).spec
    ids = [int(i) for i in sample_ids]
    return {"model_id": model.id, "weights_hash": model.weights_hash, "dataset_id": dataset.id, "sample_ids": ids,
            "content_hash": keyed_hash(dataset, ids, dataset.class_map_for(model.classes)), "explainer_id": spec.id, "explainer_version": spec.version,
            "params": params, "target": target}


def check_compatible(model: ModelHandle, dataset: Dataset) -> None:
    """Raise ExplainError when the dataset's samples cannot be fed to the model."""
    if model.task != dataset.task:
        raise ExplainError(f"model {model.id!r} is a {model.task} model but dataset {dataset.id!r} is {dataset.task}")
    if tuple(model.input_shape) != tuple(dataset.input_shape):
        raise ExplainError(
            f"model {model.id!r} expects inputs of shape {list(model.input_shape)}, "
            f"dataset {dataset.id!r} has {list(dataset.input_shape)}"
        )


def _merge_extras(parts: list[tuple[int, dict]]) -> dict:
    """Concatenate per-sample arrays (an ndarray whose leading dim is its batch's size) across
    batches; any other value is batch independent by convention and kept once."""
    if not parts:
        return {}
    merged: dict = {}
    for name, first in parts[0][1].items():
        per_sample = all(
            isinstance(extras.get(name), np.ndarray) and extras[name].ndim > 0 and extras[name].shape[0] == n
            for n, extras in parts
        )
        merged[name] = np.concatenate([extras[name] for _, extras in parts]) if per_sample else first
    return merged


def _own_params(method: Explainer | Analysis, params: Params | dict[str, Any] | None) -> Params:
    """``params`` as the method's own Params: an instance of that class as it is, else validated
    from a dict (None: the defaults)."""
    if isinstance(params, method.Params):
        return params
    if isinstance(params, Params):
        raise ParamError(f"{method.spec.id} takes {method.Params.__name__}, not {type(params).__name__}")
    return method.Params.from_dict(params)


def resolved_params(method: Explainer | Analysis, model: ModelHandle, params: Params | dict[str, Any] | None) -> Params:
    """``params`` validated, with the preset applied and every auto value replaced by the value used
    on ``model`` (``method.resolve``): what runs, what the cache key covers and what is stored and
    shown. A setting that cannot fit the model (e.g. a window larger than the image) is an
    ExplainError."""
    try:
        return method.resolve(model, _own_params(method, params))
    except ParamError:
        raise
    except ValueError as err:
        raise ExplainError(str(err)) from None


def sample_passes(model: ModelHandle, explainer_id: str, params: Params | dict | None = None,
                  with_metrics: bool = True) -> Passes:
    """Model passes :func:`explain_samples` costs per sample: the prediction (one forward), the
    explainer's own passes and, with metrics, the deletion/insertion curves."""
    from explainers.evaluation import curve_passes

    explainer = get_explainer(explainer_id)
    overhead = 1 + (curve_passes(model.input_shape) if with_metrics else 0)
    return explainer.passes(model, resolved_params(explainer, model, params)) + Passes.exact(overhead)


def explain_samples(
    model: ModelHandle,
    dataset: Dataset,
    sample_ids: Sequence[int],
    explainer_id: str,
    params: Params | dict | None = None,
    target: str | int = "predicted",
    batch_size: int = 16,
    with_metrics: bool = True,
    progress: Progress | None = None,
) -> Result:
    """Explain ``sample_ids`` of ``dataset`` with one explainer; returns a filled :class:`Result`.

    ``batch_size`` only chunks the work: explainers are batch invariant, so it never changes results.
    Labels are the model's class indices (``data.classes``); ``target="label"`` needs them mapped.
    """
    from explainers.evaluation import evaluate_with_curves

    explainer = get_explainer(explainer_id)
    reason = explainer.unsupported_reason(model)
    if reason:
        raise ExplainError(reason)
    check_compatible(model, dataset)
    if batch_size < 1:
        raise ExplainError(f"batch_size must be ≥ 1, got {batch_size}")
    p = resolved_params(explainer, model, params)
    ids = [int(i) for i in dataset.check_ids(sample_ids)]
    class_map = dataset.class_map_for(model.classes)
    if parse_target(target) == "label":
        class_map.require(model.id, dataset.id)
    started = time.perf_counter()
    x = dataset.inputs(ids)
    labels = class_map.labels(dataset.labels(ids))
    masks = dataset.masks(ids)
    probs = torch.softmax(model.logits(x, batch_size=max(batch_size, 64)), dim=1).numpy()
    predictions = probs.argmax(1)
    targets = resolve_targets(target, predictions, labels, len(model.classes))
    background = dataset.background(32).to(model.device)
    maps, extras_parts, metrics = [], [], []
    for start in range(0, len(ids), batch_size):
        sl = slice(start, start + batch_size)
        xb = x[sl].to(model.device)
        tb = torch.as_tensor(targets[sl], device=model.device)
        part = explainer.explain(model, xb, tb, p, background)
        maps.append(np.asarray(part.attributions, dtype=np.float32))
        extras = dict(part.extras)
        if with_metrics:
            rows, curves = evaluate_with_curves(model, xb, maps[-1], tb, None if masks is None else masks[sl])
            metrics.extend(rows)
            extras.update(deletion_curve=curves.deletion, insertion_curve=curves.insertion)
        extras_parts.append((len(xb), extras))
        if progress:
            progress(min(start + batch_size, len(ids)), len(ids))
    return Result(
        attributions=np.concatenate(maps),
        extras=_merge_extras(extras_parts),
        sample_ids=ids,
        targets=targets,
        predictions=predictions,
        confidences=probs[np.arange(len(ids)), predictions],
        labels=labels,
        metrics=metrics,
        provenance={
            "explainer": explainer.spec.id,
            "explainer_version": explainer.spec.version,
            "params": p.to_dict(),
            "target_rule": parse_target(target),
            "model": model.id,
            "weights_hash": model.weights_hash,
            "dataset": dataset.id,
            "device": str(model.device),
            "seconds": time.perf_counter() - started,
            "versions": library_versions(),
        },
    )


def library_versions() -> dict[str, str]:
    """Versions that can change results, recorded with every run."""
    import captum

    return {"python": platform.python_version(), "torch": torch.__version__, "captum": captum.__version__,
            "numpy": np.__version__}
