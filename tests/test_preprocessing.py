"""Preprocessing in the manifest (issue #15, item 3): a torchvision-style ResNet checkpoint (its key
names, no normalisation inside) registers with mean/std in its manifest entry, and an image folder
with resize + center_crop; Loupe puts the normalisation inside the handle, so its maps equal those
of the same network with the normalisation written inside it, and baselines stay right."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import loupe
from model_registry import archs
from model_registry.base import InputNormalized, ModelHandle, Normalize, weights_hash
from manifest import read_manifest
from model_registry.registry import register_model

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLASSES = [f"c{i}" for i in range(10)]
EXPLAINERS = {"gradcam": {}, "integrated_gradients": {"n_steps": 4}}  # a layer method; gradients + baseline


def _jpegs(root: Path) -> None:
    """Two classes of two JPEGs each, 240×320 to 500×375."""
    rng = np.random.default_rng(3)
    for c, sizes in {"c3": [(240, 320), (500, 375)], "c7": [(375, 500), (320, 240)]}.items():
        (root / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC).save(root / c / f"{i}.jpg", quality=92)


def _register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crop: int, model_id: str) -> nn.Module:
    """The checkpoint (ResNet-18, 10 classes, torchvision keys) and its folder in a manifest, and the
    same network with Normalize written inside it as a session model ``<model_id>_inside``."""
    torch.manual_seed(1)
    net = archs.resnet18(num_classes=10).eval()
    assert "layer4.1.conv2.weight" in net.state_dict() and "fc.weight" in net.state_dict()  # torchvision's names
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    _jpegs(tmp_path / "photos")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "{model_id}"
kind = "state_dict"
path = "{tmp_path / 'resnet18.pth'}"
factory = "model_registry.archs:resnet18"
factory_kwargs = {{ num_classes = 10 }}
task = "image"
input_shape = [3, {crop}, {crop}]
classes = {CLASSES}
mean = {MEAN}
std = {STD}
layers = ["layer3.1.conv2", "layer4.1.conv2"]

[[dataset]]
id = "photos{crop}"
kind = "image_folder"
path = "{tmp_path / 'photos'}"
resize = {crop + crop // 7}
center_crop = {crop}
'''.replace("'", '"'))
    monkeypatch.setenv("LOUPE_MANIFEST", str(manifest))
    inside = nn.Sequential(Normalize(MEAN, STD), net).eval()
    register_model(ModelHandle(f"{model_id}_inside", inside, "image", (3, crop, crop), CLASSES,
                               normalizer_mean=MEAN, gradcam_layer="1.layer4.1.conv2"))
    return net


def _check_maps_equal(model_id: str, dataset: str) -> None:
    for explainer, params in EXPLAINERS.items():
        wrapped = loupe.explain(model_id, dataset, [0, 2], explainer, params, target="label")
        inside = loupe.explain(f"{model_id}_inside", dataset, [0, 2], explainer, params, target="label")
        assert np.abs(wrapped.attributions).max() > 0
        np.testing.assert_allclose(wrapped.attributions, inside.attributions, rtol=1e-4, atol=1e-6,
                                   err_msg=explainer)
        np.testing.assert_array_equal(wrapped.predictions, inside.predictions)
        assert wrapped.labels.tolist() == [3, 7]  # folders c3, c7 name the model's classes


def test_manifest_mean_std_wraps_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    net = _register(tmp_path, monkeypatch, 64, "tv18")
    handle = loupe.model("tv18")
    assert isinstance(handle.module, InputNormalized) and handle.value_range == (0.0, 1.0)
    assert handle.layers == ["net.layer3.1.conv2", "net.layer4.1.conv2"]  # the entry's names, found under net.
    assert handle.gradcam_layer == "net.layer4.1.conv2"
    np.testing.assert_allclose(handle.baseline_value().flatten().numpy(), MEAN)  # zero after normalisation
    assert handle.weights_hash != weights_hash(net)  # mean/std are part of every cache key
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    torch.testing.assert_close(handle.module(x), expected)


def test_maps_equal_the_network_with_normalisation_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _register(tmp_path, monkeypatch, 64, "tv18")
    assert loupe.dataset("photos64").input_shape == (3, 64, 64)
    _check_maps_equal("tv18", "photos64")


@pytest.mark.slow
def test_maps_equal_at_224_with_torchvision_preprocessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Research size: resize 256, centre crop 224, a ResNet-18 checkpoint."""
    _register(tmp_path, monkeypatch, 224, "tv18_224")
    assert loupe.dataset("photos224").input_shape == (3, 224, 224)
    _check_maps_equal("tv18_224", "photos224")


@pytest.mark.parametrize(("extra", "message"), [
    ('mean = [0.5, 0.5, 0.5]', "mean and std go together"),
    ('mean = [0.5, 0.5]\nstd = [0.2, 0.2]', r"mean has 2 values, std 2 and input_shape \[3, 8, 8\] has 3 channels"),
    ('mean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.0, 0.2]', r"std must be positive, got 0.0"),
    ('mean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\nnormalize_mean = [0.5, 0.5, 0.5]', "give one of them"),
])
def test_bad_mean_std_entries_are_refused(tmp_path: Path, extra: str, message: str):
    (tmp_path / "m.pt").write_bytes(b"")
    path = tmp_path / "manifest.toml"
    path.write_text(f'[[model]]\nid = "m"\nkind = "torchscript"\npath = "m.pt"\ntask = "image"\n'
                    f'input_shape = [3, 8, 8]\nclasses = ["a", "b"]\n{extra}\n')
    manifest = read_manifest(path)
    assert not manifest.models and len(manifest.errors) == 1
    assert manifest.errors[0].id == "m"
    assert re.search(message, manifest.errors[0].reason), manifest.errors[0].reason


@pytest.mark.parametrize(("extra", "message"), [
    ("image_size = [8, 8]\nresize = 10", "give one of them"),
    ("resize = 10\ncenter_crop = 16", r"resize 10 \(the shorter side\) is smaller than center_crop \[16, 16\]"),
    ("center_crop = [0, 4]", "center_crop must be a positive integer, got 0"),
    ('class_map = { a = true }', "maps 'a' to True; give a model class name or an index"),
])
def test_bad_preprocessing_entries_are_refused(tmp_path: Path, extra: str, message: str):
    (tmp_path / "imgs").mkdir()
    path = tmp_path / "manifest.toml"
    path.write_text(f'[[dataset]]\nid = "d"\nkind = "image_folder"\npath = "imgs"\n{extra}\n')
    manifest = read_manifest(path)
    assert not manifest.datasets and len(manifest.errors) == 1
    assert re.search(message, manifest.errors[0].reason), manifest.errors[0].reason
