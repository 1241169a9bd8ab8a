"""Tiny hand-built models with known answers, wrapped as ModelHandles (shared by the test modules).

Every builder is deterministic (fixed weights or a fixed seed). Image toys take 3×H×W inputs in
[0, 1]; tabular toys take F raw features. Models with a :class:`Normalize` first layer expose its
mean as ``normalizer_mean`` so ``baseline_value()`` is "zero after normalisation".
"""
from __future__ import annotations

import torch
from torch import nn

from model_registry.base import ModelHandle, Normalize, find_normalizer_mean, last_conv_layer, weights_hash

IMAGE_SHAPE = (3, 8, 8)
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.5, 0.2)


class LinearImage(nn.Module):
    """logits_k = Σ_{c,h,w} w[k,c,h,w] · x[c,h,w] + b_k."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.weight) + self.bias


class LinearTable(nn.Module):
    """logits = x @ W.T + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


class LinearProbability(nn.Module):
    """Two classes with p₁ = ½ + w·x exactly: logits are log(1 − u), log(u) with u = ½ + w·x, so
    softmax gives (1 − u, u). A black box whose predict_proba is linear: SHAP's oracle."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = 0.5 + x @ self.weight
        return torch.stack([torch.log1p(-u), torch.log(u)], dim=1)


class Constant(nn.Module):
    """Output independent of the input but still differentiable: 0·Σ g(x) + c, where g is a 1×1
    convolution for images (so Grad-CAM has a layer) and the identity for tables."""

    def __init__(self, logits: torch.Tensor, image: bool) -> None:
        super().__init__()
        self.register_buffer("logits", logits.clone())
        self.conv = nn.Conv2d(3, 2, 1) if image else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.0 * self.conv(x).flatten(1).sum(dim=1, keepdim=True) + self.logits


class OneRegion(nn.Module):
    """Looks only at the patch rows[top:top+size], cols[left:left+size]: class 0 logit = sum of the
    patch, class 1 = its negative."""

    def __init__(self, top: int, left: int, size: int) -> None:
        super().__init__()
        self.top, self.left, self.size = top, left, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, :, self.top : self.top + self.size, self.left : self.left + self.size]
        s = patch.flatten(1).sum(dim=1)
        return torch.stack([s, -s], dim=1)


class TinyConvNet(nn.Module):
    """Normalize → conv(3→4) → ReLU → conv(4→6) "features.conv2" → ReLU → global mean → linear."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("norm", Normalize(MEAN, STD))
        self.features.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("conv2", nn.Conv2d(4, 6, 3, padding=1))
        self.features.add_module("relu2", nn.ReLU())
        self.head = nn.Linear(6, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _handle(model_id: str, module: nn.Module, task: str, shape: tuple[int, ...], n_classes: int, **kw) -> ModelHandle:
    module.eval()
    return ModelHandle(
        id=model_id,
        module=module,
        task=task,
        input_shape=shape,
        classes=[f"class{k}" for k in range(n_classes)],
        normalizer_mean=find_normalizer_mean(module),
        gradcam_layer=last_conv_layer(module),
        weights_hash=weights_hash(module),
        source="test",
        **kw,
    )


def image_weights(n_classes: int = 3, shape: tuple[int, ...] = IMAGE_SHAPE, seed: int = 0) -> torch.Tensor:
    """Fixed signed weights for the linear image toy."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n_classes, *shape), generator=gen)


def linear_image(normalize: bool = True, weight: torch.Tensor | None = None) -> ModelHandle:
    """Linear image model; with ``normalize`` the effective weight on raw x is w / std."""
    weight = image_weights() if weight is None else weight
    linear = LinearImage(weight, torch.arange(len(weight), dtype=torch.float32))
    module = nn.Sequential(Normalize(MEAN, STD), linear) if normalize else nn.Sequential(linear)
    return _handle("toy_linear_image", module, "image", tuple(weight.shape[1:]), len(weight))


def effective_image_weight(model: ModelHandle) -> torch.Tensor:
    """∂logits/∂x of a :func:`linear_image` model (K×C×H×W)."""
    weight = model.module[-1].weight.detach()
    if model.normalizer_mean is None:
        return weight
    return weight / torch.tensor(STD).reshape(1, -1, 1, 1)


TABLE_MEAN = (0.1, -0.2, 0.3, 0.0, 0.5, -0.4)
TABLE_STD = (1.0, 2.0, 0.5, 1.5, 1.0, 4.0)


def linear_table(n_classes: int = 2) -> ModelHandle:
    """Linear tabular model on 6 features behind a Normalize layer."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn((n_classes, len(TABLE_MEAN)), generator=gen)
    module = nn.Sequential(Normalize(TABLE_MEAN, TABLE_STD, image=False), LinearTable(weight, torch.zeros(n_classes)))
    return _handle("toy_linear_table", module, "tabular", (len(TABLE_MEAN),), n_classes)


def effective_table_weight(model: ModelHandle) -> torch.Tensor:
    """∂logits/∂x of :func:`linear_table` (K×F)."""
    return model.module[-1].weight.detach() / torch.tensor(TABLE_STD)


PROBABILITY_WEIGHT = (0.05, -0.08, 0.02, 0.1, -0.03)


def linear_probability_table() -> ModelHandle:
    """Tabular black box with predict_proba[:, 1] = ½ + w·x (valid for |x_i| ≤ 1)."""
    module = LinearProbability(torch.tensor(PROBABILITY_WEIGHT))
    return _handle("toy_linear_probability", module, "tabular", (len(PROBABILITY_WEIGHT),), 2, value_range=(-1.0, 1.0))


def constant_image() -> ModelHandle:
    """Image model whose logits never change."""
    return _handle("toy_constant_image", Constant(torch.tensor([[1.0, -2.0, 0.5]]), image=True), "image", IMAGE_SHAPE, 3)


def constant_table() -> ModelHandle:
    """Tabular model whose logits never change."""
    return _handle("toy_constant_table", Constant(torch.tensor([[0.3, 0.7]]), image=False), "tabular", (6,), 2)


REGION = (2, 4, 3)  # top, left, size of the patch the one-region model looks at


def one_region() -> ModelHandle:
    """Image model that only sees a 3×3 patch at rows 2–4, cols 4–6 of an 8×8 image."""
    return _handle("toy_one_region", OneRegion(*REGION), "image", IMAGE_SHAPE, 2)


def region_mask(shape: tuple[int, int] = IMAGE_SHAPE[1:]) -> torch.Tensor:
    """Boolean H×W mask of :data:`REGION`."""
    top, left, size = REGION
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def tiny_convnet(seed: int = 0, n_classes: int = 3) -> ModelHandle:
    """Seeded random tiny CNN on 3×16×16 images; Grad-CAM layer ``features.conv2``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = TinyConvNet(n_classes)
    return _handle("toy_convnet", module, "image", (3, 16, 16), n_classes)


def softplus_mlp(seed: int = 0, n_features: int = 6, n_classes: int = 3) -> ModelHandle:
    """Seeded random 2-layer softplus MLP on tables (smooth, non-linear)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = nn.Sequential(nn.Linear(n_features, 16), nn.Softplus(), nn.Linear(16, n_classes))
    return _handle("toy_softplus_mlp", module, "tabular", (n_features,), n_classes)


def all_toys() -> list[ModelHandle]:
    """One of each toy, for the conformance suite."""
    return [
        linear_image(),
        linear_table(),
        linear_probability_table(),
        constant_image(),
        constant_table(),
        one_region(),
        tiny_convnet(),
        softplus_mlp(),
    ]


def random_images(n: int, shape: tuple[int, ...] = IMAGE_SHAPE, seed: int = 0) -> torch.Tensor:
    """Seeded uniform [0, 1) images."""
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def random_table(n: int, n_features: int = 6, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Seeded uniform [−scale, scale) rows."""
    return (torch.rand((n, n_features), generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale
