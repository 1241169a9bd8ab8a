"""How many rows a model pass should take at once, from the widest layer output of one row.

On a CPU a pass over a batch whose activations fit in cache costs far less per row than one that
spills (measured per row at several batch sizes: bench/results/design_measurements.md). So CPU
passes take as many rows as keep the widest output near :data:`PASS_VALUES` values; other devices
keep the caller's size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from explainers._common import hooks

PASS_VALUES = {"cpu": 2**20}
"""By device type: values the widest layer output of one pass's batch may hold."""


@contextmanager
def _output_sizes(module: nn.Module) -> Iterator[list[int]]:
    """Sizes of the tensors the submodules of ``module`` output inside the block (hooks always
    removed); stays empty when they cannot be hooked (a TorchScript model refuses hooks, a traced
    one never calls them)."""
    sizes: list[int] = []

    def record(_module: nn.Module, _inputs: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    def register() -> Iterator[RemovableHandle]:
        for sub in module.modules():
            try:
                yield sub.register_forward_hook(record)
            except RuntimeError:  # "register_forward_hook is not supported on ScriptModules"
                return

    with hooks(register()):
        yield sizes


def _rows(widest: int, device: torch.device, default: int) -> int:
    budget = PASS_VALUES.get(device.type)
    return max(1, budget // widest) if budget else default


def _widest_pass(module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], row: torch.Tensor
                 ) -> tuple[torch.Tensor, int]:
    """``(run(row), values in the largest tensor a submodule of module output in that pass)``; the
    row's own size counts too, so a model that cannot be hooked gets that."""
    with _output_sizes(module) as sizes:
        out = run(row)
    return out, max([row.numel(), *sizes])


def widest_output(module: nn.Module, row: torch.Tensor) -> int:
    """Values in the largest tensor that any submodule outputs for one ``row`` (one probe forward
    without autograd); the row's own size when the submodules cannot be hooked."""
    with torch.inference_mode():
        return _widest_pass(module, module, row)[1]


def rows_per_pass(module: nn.Module, row: torch.Tensor, default: int) -> int:
    """Rows per model pass on ``row``'s device: on the CPU as many as keep the widest layer output
    within :data:`PASS_VALUES` (at least 1; one probe forward of ``row[:1]``), elsewhere ``default``."""
    if row.device.type not in PASS_VALUES:
        return default
    return _rows(widest_output(module, row[:1]), row.device, default)


def measured_pass(module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], row: torch.Tensor,
                  default: int) -> tuple[torch.Tensor, int]:
    """``(run(row), rows per pass)`` for a one-row pass of ``run`` (which calls ``module``), sized
    as :func:`rows_per_pass` does from the outputs of that same pass, so sizing costs no extra one."""
    out, widest = _widest_pass(module, run, row)
    return out, _rows(widest, row.device, default)
