"""The dataset contract (DESIGN.md, "Contracts"): stable sample ids, model-ready tensors, labels, masks.

A :class:`Dataset` holds two splits whose inputs are in-memory arrays or lazily read
:class:`data.lazy.Rows` (image files decoded on access, memory-mapped arrays), so opening a dataset
lists its samples and decodes none. Sample ids are positions in the *evaluation* split (the test
split for built-ins), so ``samples=[0, 1]`` always means the same two images; the training split is
reachable only through :meth:`Dataset.train_arrays` and :meth:`Dataset.background`, which models
use for training and explainers use as reference samples. Content hashes are computed for the
samples a request touches: over their values, or for file-backed rows over the files' bytes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from data.errors import DatasetError
from data.lazy import Rows

if TYPE_CHECKING:
    from data.classes import ClassMap

Task = Literal["image", "tabular"]


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (N×C×H×W or N×F, float32, in the model's input range; an array or
    lazily read :class:`~data.lazy.Rows`), labels ``y`` (N, int64, in memory) and optional boolean
    ground-truth masks (N×H×W)."""

    x: np.ndarray | Rows
    y: np.ndarray
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DatasetError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if self.masks is not None and len(self.masks) != len(self.x):
            raise DatasetError(f"masks has {len(self.masks)} entries but x has {len(self.x)} samples")


@dataclass
class Dataset:
    """A loaded dataset. ``eval`` is the split sample ids index; ``train`` may be None for user
    datasets (then the evaluation split doubles as the reference pool)."""

    id: str
    task: Task
    classes: list[str]
    eval: Split
    train: Split | None = None
    feature_names: list[str] | None = None
    meta: dict = field(default_factory=dict)
    class_map: Mapping[str, str | int] | None = None
    """Dataset class -> model class name or index, from the manifest (``data.classes``)."""

    # -- shape -----------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (C, H, W) or (F,)."""
        return tuple(self.eval.x.shape[1:])

    @property
    def ids(self) -> list[int]:
        """All sample ids of the evaluation split."""
        return list(range(len(self.eval.x)))

    def __len__(self) -> int:
        return len(self.eval.x)

    def check_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Validate sample ids and return them as an int array; unknown ids raise DatasetError."""
        arr = np.asarray(list(ids), dtype=np.int64)
        bad = arr[(arr < 0) | (arr >= len(self))]
        if bad.size:
            raise DatasetError(
                f"dataset {self.id!r} has sample ids 0..{len(self) - 1}; unknown ids: {bad[:5].tolist()}"
            )
        return arr

    # -- samples ---------------------------------------------------------------------------------
    def inputs(self, ids: Sequence[int]) -> torch.Tensor:
        """Samples exactly as the model receives them (float32 tensor, CPU)."""
        return torch.from_numpy(np.ascontiguousarray(self.eval.x[self.check_ids(ids)]))

    def labels(self, ids: Sequence[int]) -> np.ndarray:
        """Integer labels of the samples."""
        return self.eval.y[self.check_ids(ids)]

    def masks(self, ids: Sequence[int]) -> np.ndarray | None:
        """Boolean ground-truth masks (B×H×W), or None when the dataset has none."""
        if self.eval.masks is None:
            return None
        return self.eval.masks[self.check_ids(ids)]

    def content_hash(self, ids: Sequence[int]) -> str:
        """SHA-256 over the selected samples and their labels: part of a run's cache key. Samples
        read from files are hashed by the files' bytes and how they are decoded (no decoding);
        array samples by their float32 values (unchanged since version 1, so stored keys stay)."""
        idx = self.check_ids(ids)
        digest = hashlib.sha256()
        files = self.eval.x.digests(idx) if isinstance(self.eval.x, Rows) else None
        if files is None:
            digest.update(np.ascontiguousarray(self.eval.x[idx]).tobytes())
        else:
            digest.update(b"files-v1")
            for part in files:
                digest.update(part)
        digest.update(np.ascontiguousarray(self.eval.y[idx]).tobytes())
        return digest.hexdigest()

    def samples(self, ids: Sequence[int]) -> Samples:
        """The samples ``ids`` by reference, for an analysis's inputs: read where they are used."""
        return Samples(self, self.check_ids(ids).tolist())

    def class_map_for(self, model_classes: Sequence[str]) -> ClassMap:
        """How this dataset's labels map to a model with ``model_classes`` (``data.classes``)."""
        from data.classes import map_classes

        return map_classes(model_classes, self.classes, self.class_map)

    def model_labels(self, model_classes: Sequence[str], ids: Sequence[int]) -> np.ndarray:
        """Labels of ``ids`` as indices of the model's classes (-1 where a class has no match)."""
        return self.class_map_for(model_classes).labels(self.labels(ids))

    # -- reference pool --------------------------------------------------------------------------
    def train_arrays(self) -> Split:
        """The training split (falls back to the evaluation split for user datasets)."""
        return self.train if self.train is not None else self.eval

    def background(self, n: int = 32, seed: int = 0) -> torch.Tensor:
        """``n`` reference samples drawn (seeded) from the training split, for SHAP-style baselines."""
        pool = self.train_arrays().x
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
        return torch.from_numpy(np.ascontiguousarray(pool[idx]))

    def describe(self) -> dict:
        """A JSON-friendly summary for listings."""
        return {
            "id": self.id,
            "task": self.task,
            "classes": list(self.classes),
            "n_samples": len(self),
            "n_train": len(self.train.x) if self.train is not None else 0,
            "input_shape": list(self.input_shape),
            "has_masks": self.eval.masks is not None,
            "meta": {k: v for k, v in self.meta.items() if k != "informative_features"},
        }


def parse_samples(spec: str | Sequence[int] | int | None, n: int) -> list[int]:
    """Sample ids from ``"all"``, ``"a:b[:step]"``, ``"1,4,7"``, an int, or a list of ints, for a
    dataset of ``n`` samples (ids are checked against it later, by :meth:`Dataset.check_ids`)."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(range(n))
    if isinstance(spec, (int, np.integer)):
        return [int(spec)]
    if not isinstance(spec, str):
        return [int(i) for i in spec]
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            if len(parts) > 3:
                raise ValueError
            return list(range(n))[slice(*parts)]
        return [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise DatasetError(f"samples must look like 'all', '0:16', '0:100:5' or '1,4,7'; got {spec!r}") from None


class Samples(Rows):
    """Samples of a dataset by reference: lazy rows (read through ``dataset.inputs`` when indexed)
    that an analysis hands its worker instead of decoded arrays. The worker layer sends the
    reference when the worker can open the dataset itself and the arrays beside the task graph
    otherwise (``worker.samples``); a Samples object never pickles, so no dataset is ever shipped."""

    def __init__(self, dataset: Dataset, ids: Sequence[int]) -> None:
        self.dataset, self.ids = dataset, tuple(int(i) for i in ids)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.dataset.input_shape)

    def read(self, positions: np.ndarray) -> np.ndarray:
        return self.dataset.inputs([self.ids[p] for p in positions.tolist()]).numpy()

    def stats(self) -> dict[str, int]:
        x = self.dataset.eval.x
        return x.stats() if isinstance(x, Rows) else {}

    def __reduce__(self) -> tuple[object, ...]:  # a clear error instead of shipping a whole dataset
        raise TypeError("Samples travel by reference: worker.samples.outbound() replaces them before a job is sent")
