"""How many rows a model pass should take at once, from the widest layer output of one row.

On a CPU a pass over a batch whose activations fit in cache costs far less per row than one that
spills (measured per row at several batch sizes: bench/results/design_measurements.md). So CPU
passes take as many rows as keep the widest output near :data:`PASS_VALUES` values (the cores' own
cache). When not even two rows fit (224×224 images: ResNet-18's first convolution outputs 0.8M values
per row), that cache cannot hold a useful pass at any size, and one-row passes pay every operator's fixed cost per row and leave the deep layers' small maps too few
rows to split over the cores; such passes take as many rows as keep the widest output within
:data:`SHARED_VALUES` (the shared cache) instead. Other devices keep the caller's size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from explainers._common import hooks

T = TypeVar("T")

PASS_VALUES = {"cpu": 2**20}
"""By device type: values the widest layer output of one pass's batch may hold."""
SHARED_VALUES = {"cpu": 2**23}
"""By device type: the same bound for models of which two rows are already wider than :data:`PASS_VALUES`."""


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


def sized(device: torch.device) -> bool:
    """Whether passes on ``device`` are sized here (the CPU) rather than taking the caller's size."""
    return device.type in PASS_VALUES


def _rows(widest: int, device: torch.device, default: int) -> int:
    budget = PASS_VALUES.get(device.type)
    if not budget:
        return default
    if 2 * widest > budget:
        budget = SHARED_VALUES.get(device.type, budget)
    return max(1, budget // widest)


def _widest_pass(module: nn.Module, run: Callable[[torch.Tensor], T], row: torch.Tensor) -> tuple[T, int]:
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
    within :data:`PASS_VALUES`, or :data:`SHARED_VALUES` when two rows are wider (at least 1; one probe
    forward of ``row[:1]``), elsewhere ``default``."""
    if row.device.type not in PASS_VALUES:
        return default
    return _rows(widest_output(module, row[:1]), row.device, default)


def measured_pass(module: nn.Module, run: Callable[[torch.Tensor], T], row: torch.Tensor,
                  default: int) -> tuple[T, int]:
    """``(run(row), rows per pass)`` for a one-row pass of ``run`` (which calls ``module``), sized
    as :func:`rows_per_pass` does from the outputs of that same pass, so sizing costs no extra one."""
    out, widest = _widest_pass(module, run, row)
    return out, _rows(widest, row.device, default)


def pass_slices(n: int, per_pass: int, start: int = 0) -> list[slice]:
    """Rows ``start`` … ``n`` − 1 in equal passes (sizes differ by at most one) of at most ``per_pass`` rows."""
    count = max(1, -(-(n - start) // per_pass))
    size, extra = divmod(n - start, count)
    bounds = [start]
    for i in range(count):
        bounds.append(bounds[-1] + size + (i < extra))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def in_passes(module: nn.Module, run: Callable[[slice], T], rows: torch.Tensor, per_pass: int, default: int
              ) -> tuple[list[T], int]:
    """``run`` (which calls ``module`` on those rows) over slices of ``rows`` in equal passes of at
    most ``per_pass`` rows; returns the outputs in order and ``per_pass``. When ``per_pass`` is 0, on
    the CPU the first row goes alone and its own pass sizes the rest (:func:`measured_pass`, so
    sizing costs no extra pass); elsewhere it becomes ``default``."""
    outs: list[T] = []
    start = 0
    if not per_pass and sized(rows.device):
        first, per_pass = measured_pass(module, lambda _row: run(slice(0, 1)), rows[:1], default)
        outs, start = [first], 1
    per_pass = per_pass or default
    return outs + [run(part) for part in pass_slices(len(rows), per_pass, start)], per_pass
