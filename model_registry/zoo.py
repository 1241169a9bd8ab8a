"""The built-in model zoo: small models trained by ``python -m model_registry.train_zoo`` on the
built-in datasets, with their weights and measured test accuracies committed under ``weights/``.

Every model takes raw dataset inputs ([0, 1] images, raw feature values) and starts with a
:class:`~model_registry.base.Normalize` layer (training-split mean/std), uses ``nn.ReLU`` modules and no
in-place operations, so Captum hooks and layer methods work on any named module. Importing this
module builds nothing and reads no file.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from data.builtin import BUILTIN_INFO
from model_registry.base import ModelError, ModelHandle, Normalize, find_normalizer_mean, pick_device, weights_hash

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ZOO_JSON = WEIGHTS_DIR / "zoo.json"
TRAIN_COMMAND = "python -m model_registry.train_zoo"


# ---------------------------------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------------------------------
def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3×3 conv (padding 1) + ReLU, optionally followed by 2×2 max pooling."""
    parts: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(c_in, c_out, 3, padding=1), relu=nn.ReLU())
    if pool:
        parts["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(parts)


def plain_cnn(
    in_channels: int, widths: tuple[int, ...], n_pooled: int, n_classes: int, global_pool: nn.Module
) -> nn.Sequential:
    """Normalize → conv blocks ``block1..blockN`` (the first ``n_pooled`` halve the resolution) →
    ``global_pool`` → linear. The last block is unpooled so Grad-CAM sees its full map. Global max
    pooling suits one small object on clutter (averaging dilutes it; in our runs an average-pooled
    shapes CNN stayed at chance for 8 epochs while the max-pooled one reached 95 %)."""
    parts: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize([0.0] * in_channels, [1.0] * in_channels))
    c_in = in_channels
    for i, width in enumerate(widths):
        parts[f"block{i + 1}"] = conv_block(c_in, width, pool=i < n_pooled)
        c_in = width
    parts.update(pool=global_pool, flatten=nn.Flatten(), fc=nn.Linear(c_in, n_classes))
    return nn.Sequential(parts)


class BasicBlock(nn.Module):
    """Residual basic block (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
    Fig. 2): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); the shortcut is a 1×1 conv + BN when the
    stride or width changes (option B), the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


def resnet(in_channels: int, stages: tuple[tuple[int, int], ...], n_classes: int) -> nn.Sequential:
    """Normalize → stride-2 stem (conv+BN+ReLU) → BasicBlocks ``block1..blockN`` given as
    (width, stride) → global average pool → linear."""
    stem_width = stages[0][0]
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        normalize=Normalize([0.0] * in_channels, [1.0] * in_channels),
        stem=nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, stem_width, 3, stride=2, padding=1, bias=False),
            bn=nn.BatchNorm2d(stem_width),
            relu=nn.ReLU(),
        )),
    )
    c_in = stem_width
    for i, (width, stride) in enumerate(stages):
        parts[f"block{i + 1}"] = BasicBlock(c_in, width, stride)
        c_in = width
    parts.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(c_in, n_classes))
    return nn.Sequential(parts)


def mlp(
    n_features: int, hidden: tuple[int, ...], n_classes: int, dropout: float, input_dropout: float = 0.0
) -> nn.Sequential:
    """Normalize (per feature) → [input dropout] → (``fcK`` → ``reluK`` → dropout)* → linear head.
    Dropout is the identity in eval mode, so explainers see a deterministic function."""
    normalize = Normalize([0.0] * n_features, [1.0] * n_features, image=False)
    parts: OrderedDict[str, nn.Module] = OrderedDict(normalize=normalize)
    if input_dropout:
        parts["input_dropout"] = nn.Dropout(input_dropout)
    n_in = n_features
    for i, width in enumerate(hidden):
        parts[f"fc{i + 1}"] = nn.Linear(n_in, width)
        parts[f"relu{i + 1}"] = nn.ReLU()
        if dropout:
            parts[f"dropout{i + 1}"] = nn.Dropout(dropout)
        n_in = width
    parts["head"] = nn.Linear(n_in, n_classes)
    return nn.Sequential(parts)


# ---------------------------------------------------------------------------------------------------
# the zoo
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: how to build it (untrained, placeholder normaliser: the weights file holds
    the real statistics), its dataset, the layers layer-methods may hook and the accuracy it must reach."""

    id: str
    dataset: str
    task: Literal["image", "tabular"]
    build: Callable[[], nn.Module]
    layers: tuple[str, ...]
    gradcam_layer: str | None
    min_accuracy: float
    description: str

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the dataset (known without loading it)."""
        return BUILTIN_INFO[self.dataset].classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (known without loading the dataset)."""
        return BUILTIN_INFO[self.dataset].input_shape


_BLOCKS4 = ("block1", "block2", "block3", "block4")

ZOO: dict[str, ZooEntry] = {
    entry.id: entry
    for entry in (
        ZooEntry(
            id="shapes_cnn", dataset="shapes", task="image",
            build=lambda: plain_cnn(3, (16, 32, 64, 64), 3, n_classes=4, global_pool=nn.AdaptiveMaxPool2d(1)),
            layers=_BLOCKS4, gradcam_layer="block4", min_accuracy=0.95,
            description="plain CNN: 4 conv+ReLU blocks (3 max-pooled), global max pool, linear",
        ),
        ZooEntry(
            id="shapes_resnet", dataset="shapes", task="image",
            build=lambda: resnet(3, ((16, 1), (32, 2), (64, 2), (64, 1)), n_classes=4),
            layers=_BLOCKS4, gradcam_layer="block4", min_accuracy=0.95,
            description="ResNet: stride-2 stem, 4 BasicBlocks with BatchNorm and skips, global average pool",
        ),
        ZooEntry(
            id="digits_cnn", dataset="digits", task="image",
            build=lambda: plain_cnn(1, (16, 32, 64, 64), 2, n_classes=10, global_pool=nn.AdaptiveAvgPool2d(1)),
            layers=_BLOCKS4, gradcam_layer="block4", min_accuracy=0.95,
            description="plain CNN: 4 conv+ReLU blocks (2 max-pooled), global average pool, linear",
        ),
        ZooEntry(
            id="breast_cancer_mlp", dataset="breast_cancer", task="tabular",
            build=lambda: mlp(30, (32, 16), n_classes=2, dropout=0.1),
            layers=("relu1", "relu2"), gradcam_layer=None, min_accuracy=0.93,
            description="MLP 30-32-16-2 on standardised raw features",
        ),
        ZooEntry(
            id="highdim_mlp", dataset="highdim", task="tabular",
            build=lambda: mlp(5000, (16,), n_classes=2, dropout=0.3, input_dropout=0.2),
            layers=("relu1",), gradcam_layer=None, min_accuracy=0.85,
            description="MLP 5000-16-2 with input dropout, L2 weight decay and an L1 penalty on the first layer",
        ),
    )
}


def zoo_entry(model_id: str) -> ZooEntry:
    """The entry for ``model_id``; unknown ids raise ModelError naming the known ones."""
    entry = ZOO.get(model_id)
    if entry is None:
        raise ModelError(f"unknown zoo model {model_id!r}; known: {sorted(ZOO)}")
    return entry


def weights_path(model_id: str) -> Path:
    """Where the committed state_dict of ``model_id`` lives: ``model_registry/weights/<id>.pt``."""
    return WEIGHTS_DIR / f"{zoo_entry(model_id).id}.pt"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (zoo.json records it for every weights file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zoo_record(model_id: str) -> dict:
    """The training record of ``model_id`` in zoo.json (accuracy, epochs, seconds, sha256, ...)."""
    try:
        records = json.loads(ZOO_JSON.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"zoo model {model_id!r}: cannot read {ZOO_JSON} ({err}); run `{TRAIN_COMMAND}`") from err
    if model_id not in records:
        raise ModelError(
            f"zoo model {model_id!r} has no record in {ZOO_JSON}; run `{TRAIN_COMMAND} --only {model_id}`"
        )
    return records[model_id]


def _load_state(model_id: str, record: dict) -> dict[str, torch.Tensor]:
    """The weights of ``model_id``, checked against the sha256 its zoo.json ``record`` holds."""
    path = weights_path(model_id)
    if not path.is_file():
        raise ModelError(
            f"zoo model {model_id!r}: weights file {path} is missing; run `{TRAIN_COMMAND} --only {model_id}`"
        )
    if file_sha256(path) != record.get("weights_sha256"):
        raise ModelError(
            f"zoo model {model_id!r}: {path} does not match the sha256 in {ZOO_JSON}; "
            f"run `{TRAIN_COMMAND} --only {model_id}`"
        )
    return torch.load(path, weights_only=True, map_location="cpu")


def load_zoo_model(model_id: str, device: torch.device | None = None) -> ModelHandle:
    """Build ``model_id``, load its committed weights, put it in eval mode on ``device`` (default
    :func:`~model_registry.base.pick_device`) and wrap it in a ModelHandle."""
    entry = zoo_entry(model_id)
    module = entry.build()
    record = zoo_record(model_id)
    try:
        module.load_state_dict(_load_state(model_id, record))
    except RuntimeError as err:
        raise ModelError(
            f"zoo model {model_id!r}: weights do not fit its architecture ({err}); run `{TRAIN_COMMAND}`"
        ) from err
    module.eval().to(device or pick_device())
    return ModelHandle(
        id=entry.id,
        module=module,
        task=entry.task,
        input_shape=entry.input_shape,
        classes=list(entry.classes),
        value_range=tuple(record["value_range"]),
        normalizer_mean=find_normalizer_mean(module),
        layers=list(entry.layers),
        gradcam_layer=entry.gradcam_layer,
        dataset=entry.dataset,
        weights_hash=weights_hash(module),
        source="zoo",
        meta={"test_accuracy": record["test_accuracy"], "description": entry.description},
    )
