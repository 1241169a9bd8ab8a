"""The model contract (DESIGN.md, "Contracts").

A :class:`ModelHandle` carries an ``nn.Module`` in eval mode plus what explainers and metrics need to
know about it: the input spec, where normalisation happens (so that "zero in normalised space" can be
expressed in the model's own input space), class names, the layers layer-methods may hook, and a
weights hash that goes into every cache key.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

Task = Literal["image", "tabular"]


class ModelError(ValueError):
    """A model could not be loaded or validated; the message names the model and the reason."""


class Normalize(nn.Module):
    """``(x - mean) / std`` as the model's first layer, so models take raw inputs ([0, 1] images,
    raw feature values) and explainers can find the normaliser to build "zero after normalisation"."""

    if TYPE_CHECKING:  # buffers, declared for the type checker only (TorchScript cannot read these)
        mean: torch.Tensor
        std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], image: bool = True) -> None:
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class InputNormalized(nn.Module):
    """A network that expects normalised input (a torchvision or timm checkpoint), with that
    normalisation put in front of it: the handle's module takes [0, 1] pixels (or raw features), so
    every explainer perturbs and attributes in input space and baselines such as "zero after
    normalisation" are found through :func:`find_normalizer_mean`. The network's layers keep their
    names under ``net.`` (``net.layer4``)."""

    PREFIX = "net."

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], image: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std, image=image)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def find_normalizer_mean(module: nn.Module) -> list[float] | None:
    """The per-channel (or per-feature) mean of the first :class:`Normalize` in ``module``, if any."""
    for sub in module.modules():
        if isinstance(sub, Normalize):
            return sub.mean.flatten().tolist()
    return None


def weights_hash(module: nn.Module) -> str:
    """SHA-256 of the module's state (parameter and buffer bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        buf = io.BytesIO()
        np.save(buf, tensor.detach().cpu().numpy(), allow_pickle=False)
        digest.update(buf.getvalue())
    return digest.hexdigest()


def last_conv_layer(module: nn.Module) -> str | None:
    """Name of the last ``nn.Conv2d`` in registration order: the default Grad-CAM layer."""
    name = None
    for sub_name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            name = sub_name
    return name


class PredictProbaModule(nn.Module):
    """A black box that offers only ``predict_proba`` (e.g. a scikit-learn estimator), seen through
    the model contract: ``forward`` returns log-probabilities, so the handle's softmax gives back the
    estimator's probabilities exactly, and no gradient flows through it (``ModelHandle.differentiable``
    is False, so gradient explainers refuse it). ``digest`` (the SHA-256 of the estimator's bytes) is
    a buffer so that :func:`weights_hash`, and with it every cache key, changes with the estimator."""

    def __init__(self, estimator: Any, digest: str) -> None:
        super().__init__()
        self.estimator = estimator
        self.register_buffer("digest", torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().reshape(len(x), -1).cpu().numpy()
        proba = torch.as_tensor(self.estimator.predict_proba(rows), dtype=torch.float32)
        return torch.log(proba.clamp_min(1e-12)).to(x.device)


@dataclass
class ModelHandle:
    """A loaded model. ``module`` is in eval mode and is fed exactly like ``Dataset.inputs``."""

    id: str
    module: nn.Module
    task: Task
    input_shape: tuple[int, ...]
    classes: list[str]
    value_range: tuple[float, float] = (0.0, 1.0)
    normalizer_mean: list[float] | None = None
    layers: list[str] = field(default_factory=list)
    gradcam_layer: str | None = None
    dataset: str | None = None
    weights_hash: str = ""
    hookable: bool = True
    source: str = "zoo"
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter (CPU for parameter-free modules)."""
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def differentiable(self) -> bool:
        """Whether gradients of the outputs with respect to the inputs exist (False for black boxes
        that only offer ``predict_proba``)."""
        return isinstance(self.module, nn.Module) and not isinstance(self.module, PredictProbaModule)

    def baseline_value(self) -> torch.Tensor:
        """The input that maps to zero after the model's normalisation, per channel/feature, shaped
        to broadcast against one sample; falls back to the low end of ``value_range`` (black)."""
        mean = self.normalizer_mean
        if mean is None:
            return torch.full((1,) * len(self.input_shape), float(self.value_range[0]))
        shape = (-1, 1, 1) if self.task == "image" else (-1,)
        return torch.tensor(mean, dtype=torch.float32).reshape(shape)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits for ``x`` in chunks, on the model's device, returned on the CPU."""
        outs = [self.module(chunk.to(self.device)).float().cpu() for chunk in torch.split(x, batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    def predict_proba(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities as numpy: the black-box view model-agnostic methods use."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x.float()
        xt = xt.reshape(-1, *self.input_shape)
        return torch.softmax(self.logits(xt), dim=1).numpy()

    def describe(self) -> dict:
        """A JSON-friendly summary for listings."""
        return {
            "id": self.id,
            "task": self.task,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "dataset": self.dataset,
            "source": self.source,
            "weights_hash": self.weights_hash[:12],
            **{k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
        }


def pick_device() -> torch.device:
    """``cuda`` when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
