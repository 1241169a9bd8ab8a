"""Pass sizing by activation footprint (explainers/batching.py) on hand-built modules."""
from __future__ import annotations

import pytest
import torch

from explainers import batching
from explainers.batching import rows_per_pass, widest_output


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3)
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_widest_output_is_the_largest_layer_output_and_leaves_no_hook() -> None:
    module = _net()
    row = torch.zeros(1, 2, 8, 8)
    assert widest_output(module, row) == 8 * 8 * 8  # the conv's output; the input has 128 values
    assert all(not m._forward_hooks for m in module.modules())
    assert widest_output(torch.jit.script(module), row) == row.numel()  # TorchScript refuses hooks
    assert widest_output(torch.nn.Identity(), row) == row.numel()


def test_rows_per_pass_fills_the_cpu_budget_and_keeps_the_default_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    module, rows = _net(), torch.zeros(5, 2, 8, 8)
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 10 * 8 * 8 * 8 + 7)
    assert rows_per_pass(module, rows, 256) == 10  # ten rows' conv outputs fit, eleven do not
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 2 * 8 * 8 * 8)
    assert rows_per_pass(module, rows, 256) == 2  # two rows fit exactly
    monkeypatch.setitem(batching.SHARED_VALUES, "cpu", 3 * 8 * 8 * 8 + 7)
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 2 * 8 * 8 * 8 - 1)
    assert rows_per_pass(module, rows, 256) == 3  # two rows overflow the first budget: the shared one sizes
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 100)
    monkeypatch.setitem(batching.SHARED_VALUES, "cpu", 100)
    assert rows_per_pass(module, rows, 256) == 1  # never zero
    monkeypatch.delitem(batching.PASS_VALUES, "cpu")
    assert rows_per_pass(module, rows, 256) == 256


def test_measured_pass_sizes_from_its_own_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    module, row = _net(), torch.rand(1, 2, 8, 8)
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 10 * 8 * 8 * 8 + 7)
    calls = []
    handle = module.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    try:
        out, rows = batching.measured_pass(module, module, row, 256)
    finally:
        handle.remove()
    assert rows == 10 and calls == [1]  # the sizing came from the one pass that was asked for
    torch.testing.assert_close(out, module(row))
    assert all(not m._forward_hooks for m in module.modules())
