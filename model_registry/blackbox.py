"""Black boxes that offer only ``predict_proba`` (scikit-learn estimators and anything shaped like
them), registered from a notebook (:func:`sklearn_model` + ``registry.register_model``) or through the
manifest (``kind = "sklearn"``: a joblib/pickle file, loaded only with ``trust = true`` because
unpickling can run code). They become ordinary :class:`ModelHandle` objects whose module is a
:class:`PredictProbaModule`, so model-agnostic methods (Kernel SHAP, occlusion, surrogate rules) run on
them unchanged and gradient methods refuse them with a clear reason.
"""
from __future__ import annotations

import hashlib
import pickle
from typing import Sequence

import numpy as np
import torch

from manifest import ModelEntry
from model_registry.base import ModelError, ModelHandle, PredictProbaModule, weights_hash


def _check_estimator(model_id: str, estimator: object, n_classes: int) -> None:
    """The estimator must have ``predict_proba`` and, when it says so, classes 0..C-1 in order."""
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelError(f"model {model_id!r}: {type(estimator).__name__} has no predict_proba")
    known = getattr(estimator, "classes_", None)
    if known is not None and not np.array_equal(np.asarray(known), np.arange(n_classes)):
        raise ModelError(
            f"model {model_id!r}: the estimator's classes_ are {np.asarray(known).tolist()}; "
            f"train it on labels 0..{n_classes - 1} so its probability columns match the {n_classes} classes"
        )


def sklearn_model(model_id: str, estimator: object, classes: Sequence[str], n_features: int,
                  dataset: str | None = None) -> ModelHandle:
    """A handle for a fitted in-memory estimator (register it with ``registry.register_model``)."""
    _check_estimator(model_id, estimator, len(classes))
    digest = hashlib.sha256(pickle.dumps(estimator)).hexdigest()
    module = PredictProbaModule(estimator, digest).eval()
    return ModelHandle(id=model_id, module=module, task="tabular", input_shape=(int(n_features),),
                       classes=list(classes), dataset=dataset, weights_hash=weights_hash(module), hookable=False,
                       source="session", meta={"kind": "sklearn", "estimator": type(estimator).__name__})


def load_sklearn(entry: ModelEntry, device: torch.device) -> PredictProbaModule:
    """Manifest ``kind = "sklearn"``: a joblib (or plain pickle) file of a fitted estimator. The
    manifest refuses the entry unless it says ``trust = true``."""
    import joblib

    if not entry.trust:
        raise ModelError(f"model {entry.id!r}: kind 'sklearn' unpickles {str(entry.path)!r}, which can run "
                         "code; set trust = true in the manifest entry if you trust this file")
    data = entry.path.read_bytes()
    try:
        estimator = joblib.load(entry.path)
    except Exception as err:  # noqa: BLE001 - a trusted pickle may raise anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"model {entry.id!r}: {str(entry.path)!r} is not a readable joblib/pickle file "
                         f"of an estimator: {first}") from None
    if entry.classes is None:
        raise ModelError(f"model {entry.id!r}: a scikit-learn model needs its class names (classes = [...])")
    _check_estimator(entry.id, estimator, len(entry.classes))
    return PredictProbaModule(estimator, hashlib.sha256(data).hexdigest()).to(device)
