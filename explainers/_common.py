"""Helpers the explainers share: input checks, baselines, per-sample seeding, hooks that are always
removed, and the classifier layer whose input is the penultimate activation. Private to the
``explainers`` package (import-linter's private-modules contract keeps it there)."""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from model_registry.base import ModelHandle

BASELINES = ("normalized_zero", "zero", "background_mean")
BASELINE_HELP = (
    "reference input: normalized_zero = the input that is zero after the model's own normalisation "
    "(black when the model has none); zero = all zeros in input space; background_mean = mean of the "
    "background reference samples"
)


def check_inputs(explainer_id: str, model: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate ``x`` against the model's input shape and ``target`` against its classes; return
    the target as a LongTensor on ``x``'s device. Messages name the explainer and the model."""
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(
            f"{explainer_id}: model {model.id!r} expects samples of shape {tuple(model.input_shape)}, "
            f"got a batch of shape {tuple(x.shape)}"
        )
    target = torch.as_tensor(target).to(device=x.device, dtype=torch.long).reshape(-1)
    if len(target) != len(x):
        raise ValueError(f"{explainer_id}: target has {len(target)} entries for a batch of {len(x)} samples")
    n_classes = len(model.classes)
    bad = target[(target < 0) | (target >= n_classes)]
    if bad.numel():
        raise ValueError(
            f"{explainer_id}: target class(es) {bad[:5].tolist()} out of range for model {model.id!r} "
            f"with {n_classes} classes"
        )
    return target


def sample_seed(seed: int, sample: torch.Tensor) -> int:
    """A 32-bit seed from ``seed`` and the sample's bytes: the same sample always draws the same
    noise, whatever batch it arrives in."""
    digest = hashlib.sha256(str(int(seed)).encode())
    digest.update(sample.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:4], "little")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch (CPU and ``device``) and ``np.random`` seeded to ``seed``; the
    global generator states are restored afterwards (Captum draws from both)."""
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)


def _background_mean(model: ModelHandle, x: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
    if background is None or len(background) == 0:
        raise ValueError(f"baseline 'background_mean' needs background samples; none were given for {model.id!r}")
    return background.to(device=x.device, dtype=x.dtype).mean(dim=0)


_REFERENCES: dict[str, Callable[[ModelHandle, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "normalized_zero": lambda model, x, background: model.baseline_value(),
    "zero": lambda model, x, background: torch.zeros(()),
    "background_mean": _background_mean,
}


def reference_input(
    model: ModelHandle, x: torch.Tensor, choice: str, background: torch.Tensor | None = None
) -> torch.Tensor:
    """The baseline named ``choice`` (one of :data:`BASELINES`) as a 1×(sample shape) tensor on
    ``x``'s device and dtype, ready for Captum's ``baselines=``."""
    if choice not in _REFERENCES:
        raise ValueError(f"unknown baseline {choice!r}; known: {list(BASELINES)}")
    ref = _REFERENCES[choice](model, x, background).to(device=x.device, dtype=x.dtype)
    return ref.expand(x.shape[1:]).unsqueeze(0).contiguous()


@contextlib.contextmanager
def hooks(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """Keep the hooks that ``handles`` registers for the duration of the block. ``handles`` is
    consumed lazily (pass a generator that registers them), so every hook registered is removed on
    exit, even when the block, or a later registration, raises."""
    registered: list[RemovableHandle] = []
    try:
        for handle in handles:
            registered.append(handle)
        yield
    finally:
        for handle in registered:
            handle.remove()


def hooked(module: nn.Module, forward: dict[str, Callable] | None = None,
           pre: dict[str, Callable] | None = None) -> contextlib.AbstractContextManager[None]:
    """Forward (and forward-pre) hooks on named submodules of ``module`` for the duration of the
    block (:func:`hooks`)."""
    def register() -> Iterator[RemovableHandle]:
        for name, fn in (forward or {}).items():
            yield module.get_submodule(name).register_forward_hook(fn)
        for name, fn in (pre or {}).items():
            yield module.get_submodule(name).register_forward_pre_hook(fn)

    return hooks(register())


def classifier_layer(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` of ``module``: its input is the penultimate activation (the
    representation the classifier separates); None when there is none."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None
