"""Content-addressed keys for cached results (DESIGN.md, "Data flow").

A key is the SHA-256 (64 lowercase hex characters) of the canonical JSON (sorted keys, no spaces,
no NaN) of everything that determines a result, so the same request always maps to the same key
and any change to an input gives a new one.

* An *item* is one sample's explanation. Its key covers the model (id + weights hash), the dataset
  id, the sample id and that sample's content hash, the explainer (id + version), its params and
  the target rule. Caching per item lets overlapping requests reuse each other's work.
* A *run* is a request over an ordered list of samples. Its key covers the same fields with the
  sample-id list and the content hash of all of them; a share link is this key.
* An *artifact* is the one result of an analysis (rules, pathways, embedding). Its key covers the
  kind, model, dataset id, analysis (id + version), params and a digest of the exact arrays the
  analysis read (:func:`array_digest`).

Keys arrive from URLs and the CLI, so :func:`check_key` validates them (a regex, before any SQL).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Target = str | int
TARGET_RULES = ("predicted", "label")
_KEY = re.compile(r"[0-9a-f]{64}")


class InvalidKey(ValueError):
    """A string that cannot be a key (wrong length or characters); the message quotes it."""


class RunNotFound(LookupError):
    """No run or analysis result with this key is stored."""


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and 0-d arrays (e.g. sample ids from ``np.int64``)."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be part of a key (not JSON)")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII, NaN/inf refused: the same value always gives the same text
    (matches :meth:`explainers.base.Params.to_json` for a params dict)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain)


def digest(value: Any) -> str:
    """SHA-256 hex digest of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def is_valid_key(value: object) -> bool:
    """True when ``value`` is a string of exactly 64 lowercase hexadecimal characters."""
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


def check_key(value: object, what: str = "a run") -> str:
    """Return ``value`` if it is a valid key, else raise :class:`InvalidKey` quoting it
    ("'…' is not a run key: …"; ``what`` is "a run" or "an item")."""
    if is_valid_key(value):
        return value  # type: ignore[return-value]
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise InvalidKey(f"{shown} is not {what} key: keys are 64 hexadecimal characters")


def check_target(target: object) -> Target:
    """The target rule: ``"predicted"``, ``"label"`` or a class index (not a bool)."""
    if isinstance(target, str) and target in TARGET_RULES:
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target >= 0:
        return int(target)
    raise ValueError(f"target must be 'predicted', 'label' or a class index ≥ 0, got {target!r}")


def _request(
    model_id: str,
    weights_hash: str,
    dataset_id: str,
    explainer_id: str,
    explainer_version: str,
    params: Mapping[str, Any],
    target: Target,
) -> dict[str, Any]:
    """The fields shared by item and run keys."""
    return {
        "model_id": model_id,
        "weights_hash": weights_hash,
        "dataset_id": dataset_id,
        "explainer_id": explainer_id,
        "explainer_version": explainer_version,
        "params": dict(params),
        "target": check_target(target),
    }


def item_key(
    *,
    model_id: str,
    weights_hash: str,
    dataset_id: str,
    sample_id: int,
    sample_hash: str,
    explainer_id: str,
    explainer_version: str,
    params: Mapping[str, Any],
    target: Target,
) -> str:
    """Key of one sample's explanation (``sample_hash``: content hash of that one sample)."""
    fields = _request(model_id, weights_hash, dataset_id, explainer_id, explainer_version, params, target)
    return digest({**fields, "sample_id": int(sample_id), "sample_hash": sample_hash})


def run_key(
    *,
    model_id: str,
    weights_hash: str,
    dataset_id: str,
    sample_ids: Sequence[int],
    content_hash: str,
    explainer_id: str,
    explainer_version: str,
    params: Mapping[str, Any],
    target: Target,
) -> str:
    """Key of a run: the ordered ``sample_ids`` and ``content_hash`` over all of them."""
    fields = _request(model_id, weights_hash, dataset_id, explainer_id, explainer_version, params, target)
    ids = [int(i) for i in sample_ids]
    return digest({**fields, "sample_ids": ids, "content_hash": content_hash})


def array_digest(values: Mapping[str, Any]) -> str:
    """SHA-256 over named values: arrays by dtype, shape and bytes, anything else as canonical JSON.
    Identifies the data an analysis read, whatever dataset or slice it came from."""
    h = hashlib.sha256()
    for name in sorted(values):
        value = values[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            h.update(f"{array.dtype.str}{array.shape}".encode())
            h.update(array.data.cast("B"))
        else:
            h.update(canonical_json(value).encode())
    return h.hexdigest()


def artifact_key(*, kind: str, model_id: str, weights_hash: str, dataset_id: str, analysis_id: str,
                 analysis_version: str, params: Mapping[str, Any], inputs_hash: str) -> str:
    """Key of an analysis result (see the module docstring)."""
    return digest({"kind": kind, "model_id": model_id, "weights_hash": weights_hash, "dataset_id": dataset_id,
                   "analysis_id": analysis_id, "analysis_version": analysis_version, "params": dict(params),
                   "inputs_hash": inputs_hash})
