"""The 224×224 ResNet-18-shaped case of the quality benches (issue #17): ``model_registry.archs.resnet18``
with 1,000 classes and seeded random weights, ImageNet mean/std normalisation inside the model, fed the
``shapes`` test images resized to 224×224 (bilinear; masks nearest-neighbour). Random weights make
deletion/insertion a weak signal (no class evidence to find), so this case checks that a default does
not break at research scale; it does not decide a default alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from data.builtin import load_builtin
from model_registry import archs
from model_registry.base import ModelHandle, Normalize

MODEL_ID = "resnet18_random_224"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIDE = 224


def model(seed: int = 0) -> ModelHandle:
    """ResNet-18 (torchvision key names), 1,000 classes, weights drawn under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = archs.resnet18(num_classes=1000)
    module = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net).eval()
    return ModelHandle(MODEL_ID, module, "image", (3, SIDE, SIDE), [f"class {i}" for i in range(1000)],
                       normalizer_mean=list(IMAGENET_MEAN), weights_hash=f"random-resnet18-seed{seed}")


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` ``shapes`` test images at 224×224 (n×3×224×224 in [0, 1]) and their masks (n×224×224)."""
    ds = load_builtin("shapes")
    ids = list(range(n))
    x = F.interpolate(ds.inputs(ids), size=(SIDE, SIDE), mode="bilinear", align_corners=False).clamp(0, 1)
    masks = torch.as_tensor(ds.masks(ids)).float()[:, None]
    return x, F.interpolate(masks, size=(SIDE, SIDE), mode="nearest")[:, 0] > 0.5
