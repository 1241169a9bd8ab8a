"""The written-out ResNets match torchvision's: parameter counts and state_dict key names (the numbers
torchvision documents for its own models), so its checkpoints load with ``strict=True``."""
from __future__ import annotations

import pytest
import torch

from model_registry import archs


@pytest.mark.parametrize(
    ("factory", "n_params", "n_keys"),
    [(archs.resnet18, 11_689_512, 122), (archs.resnet34, 21_797_672, 218), (archs.resnet50, 25_557_032, 320)],
)
def test_parameter_count_and_keys_are_torchvisions(factory, n_params, n_keys) -> None:
    net = factory()
    assert sum(p.numel() for p in net.parameters()) == n_params
    keys = list(net.state_dict())
    assert len(keys) == n_keys
    assert keys[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer2.0.downsample.0.weight" in keys and "layer2.0.downsample.1.running_var" in keys
    assert keys[-2:] == ["fc.weight", "fc.bias"]


def test_a_state_dict_round_trips_strictly_and_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    source, target = archs.resnet18(num_classes=10).eval(), archs.resnet18(num_classes=10).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))
    assert source(x).shape == (2, 10)
