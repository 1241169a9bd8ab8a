"""The models and images the benches run on: a built-in zoo model with its dataset's test images, or
``resnet18_224``, the research-scale case of issue #15 (item 4).

``resnet18_224`` is a ResNet-18-shaped network at 1000 classes (``model_registry.archs.resnet18``,
torchvision's layout) with seeded random weights and ImageNet mean/std normalisation inside the
model (``model_registry.base.InputNormalized``, what a manifest entry with ``mean``/``std`` gets),
fed 224×224 images: the built-in ``shapes`` test images upsampled bilinearly (their masks by nearest
neighbour), so the maps have objects to find and the pointing game has masks to score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.builtin import load_builtin
from model_registry import archs
from model_registry.base import InputNormalized, ModelHandle, find_normalizer_mean, last_conv_layer, weights_hash
from model_registry.zoo import load_zoo_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIDE = 224
SEED = 0
RESNET_CASES = ("resnet18_224",)
"""Case names that are not zoo ids (``--model`` accepts either)."""


@dataclass(frozen=True)
class Case:
    """A model handle and ``n`` of its images (on the model's device), with their masks if any and
    the 32 background images the runner would give (for GradientSHAP)."""

    model: ModelHandle
    x: torch.Tensor
    masks: np.ndarray | None
    background: torch.Tensor


def resnet18_224_net() -> torch.nn.Module:
    """ResNet-18 at 1000 classes, weights drawn from ``SEED``, ImageNet normalisation inside, eval mode."""
    torch.manual_seed(SEED)
    return InputNormalized(archs.resnet18(num_classes=1000), IMAGENET_MEAN, IMAGENET_STD).eval()


def resnet18_224_handle() -> ModelHandle:
    """The handle a manifest entry (``state_dict`` + ``factory = model_registry.archs:resnet18``,
    ``mean``/``std``) gives this network, on the CPU."""
    from data.classes import imagenet_names

    net = resnet18_224_net()
    convs = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return ModelHandle(
        id="resnet18_224", module=net, task="image", input_shape=(3, SIDE, SIDE), classes=list(imagenet_names()),
        normalizer_mean=find_normalizer_mean(net), layers=convs, gradcam_layer=last_conv_layer(net),
        weights_hash=weights_hash(net), source="bench",
    )


def _upsampled(x: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1).contiguous()


def upsampled_shapes(ids: range | list[int], side: int = SIDE) -> tuple[torch.Tensor, np.ndarray]:
    """``shapes`` test images resized to side×side (bilinear, within [0, 1]) and their masks (nearest)."""
    ds = load_builtin("shapes")
    masks = ds.masks(ids)
    assert masks is not None  # shapes has object masks
    big = F.interpolate(torch.from_numpy(masks[:, None].astype(np.float32)), size=(side, side), mode="nearest")
    return _upsampled(ds.inputs(ids), side), big[:, 0].numpy() > 0.5


def load_case(name: str, n: int) -> Case:
    """``name`` is a zoo model id (its dataset's first ``n`` test images) or ``resnet18_224``."""
    if name == "resnet18_224":
        x, masks = upsampled_shapes(range(n))
        return Case(resnet18_224_handle(), x, masks, _upsampled(load_builtin("shapes").background(32), SIDE))
    model = load_zoo_model(name)
    ds = load_builtin(model.dataset)
    return Case(model, ds.inputs(range(n)).to(model.device), ds.masks(range(n)), ds.background(32).to(model.device))


def write_manifest(root: Path, images: int) -> Path:
    """A manifest registering ``resnet18_224`` the way a user would (its ``state_dict`` saved under
    ``root``, the factory, mean/std, no classes list: ImageNet's 1000) and ``shapes_224``, an ``npz``
    of ``images`` upsampled shapes images per class named after the model's classes 0 and 1 (tench,
    goldfish), so that workers load both by id. Returns the manifest's path."""
    from data.classes import imagenet_names

    torch.save(resnet18_224_net().net.state_dict(), root / "resnet18_224.pt")
    x, _ = upsampled_shapes(range(2 * images))
    np.savez(root / "shapes_224.npz", x=x.numpy(), y=np.repeat([0, 1], images))
    names = list(imagenet_names())[:2]
    manifest = root / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "resnet18_224"
kind = "state_dict"
path = "{root / 'resnet18_224.pt'}"
factory = "model_registry.archs:resnet18"
task = "image"
input_shape = [3, {SIDE}, {SIDE}]
mean = {list(IMAGENET_MEAN)}
std = {list(IMAGENET_STD)}
dataset = "shapes_224"

[[dataset]]
id = "shapes_224"
kind = "npz"
path = "{root / 'shapes_224.npz'}"
classes = {names}
''')
    return manifest
