"""What runs on a Dask worker: one chunk of one explanation request.

A :class:`Job` carries ids, params and the chunk's labels (as the model's class indices), never
live models or sample arrays: the worker loads the model by id and keeps it cached on its own
device (``cuda`` when it has one), and reads the samples itself or receives them beside the task
graph (``worker.samples``), so a remote worker needs neither the submitter's database nor, when
the samples are shipped, its dataset files. Manifest models whose file the worker cannot see
arrive as bytes that Dask ships once per cluster, keyed by the file's hash.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.hooks import RemovableHandle

from data.base import Dataset, Split
from explainers.base import Result
from model_registry.base import ModelHandle, pick_device

_MODELS: dict[tuple[str, str], ModelHandle] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds a model: by id, checked against the submitter's weights hash."""

    model_id: str
    weights_hash: str
    entry: Any = None
    """The manifest entry (a plain dataclass) for manifest models, so the worker can load the file
    even when its own manifest differs; zoo models are found by id."""


@dataclass(frozen=True)
class Job:
    """One chunk: sample ids with their labels (indices of the model's ``classes``) × one explainer;
    the samples themselves travel apart (``worker.samples.job_samples``)."""

    model: ModelRef
    dataset_id: str
    task: str
    classes: tuple[str, ...]
    sample_ids: tuple[int, ...]
    y: np.ndarray
    explainer_id: str
    params: dict
    target: str | int
    batch_size: int = 16
    meta: dict = field(default_factory=dict)


class PassCounter:
    """Counts forward passes of a module through a forward hook that is always removed."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.count = module, 0
        self._handle: RemovableHandle | None = None

    def __enter__(self) -> "PassCounter":
        if isinstance(module := self.module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
            self._handle = module.register_forward_hook(self._hook)
        return self

    def _hook(self, _module: torch.nn.Module, inputs: tuple, _output: object) -> None:
        self.count += int(inputs[0].shape[0]) if inputs and torch.is_tensor(inputs[0]) else 1

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()


def load_model_on_worker(ref: ModelRef, file_bytes: bytes | None = None) -> ModelHandle:
    """The model for ``ref`` on this process's device, loaded once and cached by (id, weights hash)."""
    key = (ref.model_id, ref.weights_hash)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(ref, file_bytes)
        return _MODELS[key]


def remember(model: ModelHandle) -> None:
    """Seed this process's model cache with a live handle (session models, run in-process)."""
    with _MODELS_LOCK:
        _MODELS[(model.id, model.weights_hash)] = model


def _local_copy(file_bytes: bytes, suffix: str) -> Path:
    """Write shipped model bytes once into this worker's cache, named by their hash."""
    from store.paths import loupe_home

    path = loupe_home() / "worker_files" / f"{hashlib.sha256(file_bytes).hexdigest()}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(file_bytes)
        os.replace(tmp, path)
    return path


def _load(ref: ModelRef, file_bytes: bytes | None) -> ModelHandle:
    from model_registry.base import ModelError
    from model_registry.loaders import load_model
    from model_registry.registry import get_model

    device = pick_device()
    if ref.entry is None:
        handle = get_model(ref.model_id, device)
    else:
        entry = ref.entry if file_bytes is None else replace(ref.entry, path=_local_copy(file_bytes, ref.entry.path.suffix))
        handle = load_model(entry, device)
    if handle.weights_hash != ref.weights_hash:
        raise ModelError(
            f"model {ref.model_id!r} on the worker has different weights (hash {handle.weights_hash[:12]}) "
            f"than on the submitting machine ({ref.weights_hash[:12]}); update the worker's copy"
        )
    return handle


def use_all_cores() -> None:
    """Give torch every core in the thread that runs the task. The nanny starts workers with
    OMP_NUM_THREADS=1 and OpenMP keeps its thread count per calling thread, so setting it in the
    preload (another thread) is not enough: convolutions and matmuls ran markedly slower in a Dask
    task than in-process until the task's own thread set it (bench/results/design_measurements.md)."""
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("LOUPE_TORCH_THREADS", os.cpu_count() or 1)))


def _job_dataset(job: Job, samples: dict[str, Any]) -> Dataset:
    """The chunk as an in-memory dataset: its samples (read here or shipped), labels and background."""
    from worker.samples import job_arrays

    x, masks, background = job_arrays(samples)
    return Dataset(
        id=job.dataset_id,
        task=job.task,  # type: ignore[arg-type]
        classes=list(job.classes),
        eval=Split(x, job.y, masks),
        train=Split(background, np.zeros(len(background), dtype=np.int64)),
    )


def run_job(job: Job, samples: dict[str, Any], file_bytes: bytes | None = None) -> tuple[Result, int]:
    """Execute one chunk on this worker; returns the result and the number of samples the model
    was run on (rows through its forward pass), which the cache tests count. ``samples``: what
    ``worker.samples.job_samples`` gave (a reference or the arrays); ``file_bytes``: the model
    file, shipped by the submitter when the worker may not see it."""
    from explainers.runner import explain_samples

    use_all_cores()
    model = load_model_on_worker(job.model, file_bytes)
    n = len(job.sample_ids)
    dataset = _job_dataset(job, samples)
    with PassCounter(model.module) as counter:
        res = explain_samples(model, dataset, list(range(n)), job.explainer_id, job.params, job.target,
                              job.batch_size)
    res.sample_ids = list(job.sample_ids)
    return res, counter.count


@dataclass(frozen=True)
class PassTime:
    """Measured seconds per row of a model on a worker's device: ``forward_s`` for a forward pass
    (inference mode), ``backward_s`` for the extra backward pass to the input."""

    model_id: str
    device: str
    forward_s: float
    backward_s: float
    rows: int


_PASS_TIMES: dict[tuple[str, str, str], PassTime] = {}


def _best_seconds(step: Callable[[], None], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``step`` after one warm-up call (CUDA synchronised)."""
    import time

    times = []
    for _ in range(repeats + 1):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def time_passes(ref: ModelRef, file_bytes: bytes | None = None, rows: int = 32, repeats: int = 3) -> PassTime:
    """Time the model on this worker: a batch of ``rows`` random inputs in its value range, forward
    only and forward + backward to the input (what gradient explainers do), best of ``repeats``.
    Cached per (model, weights hash, device) for the life of the worker."""
    use_all_cores()
    model = load_model_on_worker(ref, file_bytes)
    key = (ref.model_id, ref.weights_hash, str(model.device))
    if key not in _PASS_TIMES:
        low, high = model.value_range
        gen = torch.Generator().manual_seed(0)
        x = (low + (high - low) * torch.rand(rows, *model.input_shape, generator=gen)).to(model.device)

        def forward() -> None:
            with torch.inference_mode():
                model.module(x)

        def forward_backward() -> None:
            leaf = x.detach().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(model.module(leaf).sum(), leaf)

        fwd = _best_seconds(forward, repeats)
        both = _best_seconds(forward_backward, repeats)
        _PASS_TIMES[key] = PassTime(ref.model_id, str(model.device), fwd / rows, max(both - fwd, 0.0) / rows, rows)
    return _PASS_TIMES[key]


def predict_job(ref: ModelRef, values: dict[str, Any], file_bytes: bytes | None = None) -> np.ndarray:
    """Class probabilities of the model for the samples ``values["x"]`` on this worker (N×classes)."""
    from worker.samples import inbound

    use_all_cores()
    model = load_model_on_worker(ref, file_bytes)
    x = np.ascontiguousarray(np.asarray(inbound(values)["x"], dtype=np.float32))
    return torch.softmax(model.logits(torch.from_numpy(x)), dim=1).numpy()


def run_sanity_job(job: Job, seed: int, samples: dict[str, Any], file_bytes: bytes | None = None) -> np.ndarray:
    """Model-randomisation sanity check for one chunk on this worker: per-sample Spearman between
    |map| of the trained model and of a re-initialised copy (see explainers.evaluation)."""
    from explainers.evaluation import randomization_check
    from explainers.registry import get_explainer
    from explainers.runner import resolve_targets
    from worker.samples import job_arrays

    model = load_model_on_worker(job.model, file_bytes)
    explainer = get_explainer(job.explainer_id)
    x_arr, _, background = job_arrays(samples)
    x = torch.from_numpy(x_arr).to(model.device)
    predictions = model.logits(x).argmax(1).numpy()
    targets = resolve_targets(job.target, predictions, job.y, len(model.classes))
    return randomization_check(explainer, model, x, torch.as_tensor(targets, device=model.device),
                               explainer.Params.from_dict(job.params),
                               background=torch.from_numpy(background).to(model.device), seed=seed)
