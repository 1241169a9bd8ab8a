"""How many rows a model pass should take at once, from the widest layer output of one row.

On a CPU a pass over a batch whose activations fit in cache costs far less per row than one that
spills: measured on 2 cores, ms per row at 16 / 64 / 128 rows, forward only: shapes_cnn 0.39 / 0.63 /
0.69 (its widest layer output holds 2**16 values per row), digits_cnn 0.13 / 0.11 / 0.15 (2**14 per
row); forward + backward, shapes_cnn at 16 / 256 rows: 0.68 / 1.35. So CPU passes take as many rows
as keep the widest output near :data:`PASS_VALUES` values; other devices keep the caller's size.
"""
from __future__ import annotations

import torch
from torch import nn

PASS_VALUES = {"cpu": 2**20}
"""By device type: values the widest layer output of one pass's batch may hold."""


def widest_output(module: nn.Module, row: torch.Tensor) -> int:
    """Values in the largest tensor that any submodule outputs for one ``row`` (one probe forward
    without autograd, hooks always removed); the row's own size when the submodules cannot be hooked
    (a TorchScript model refuses hooks, a traced one never calls them)."""
    sizes = [row.numel()]

    def record(_module: nn.Module, _inputs: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    handles = []
    try:
        try:
            for sub in module.modules():
                handles.append(sub.register_forward_hook(record))
        except RuntimeError:  # "register_forward_hook is not supported on ScriptModules"
            return row.numel()
        with torch.inference_mode():
            module(row)
    finally:
        for handle in handles:
            handle.remove()
    return max(sizes)


def rows_per_pass(module: nn.Module, row: torch.Tensor, default: int) -> int:
    """Rows per model pass on ``row``'s device: on the CPU as many as keep the widest layer output
    within :data:`PASS_VALUES` (at least 1), elsewhere ``default``."""
    budget = PASS_VALUES.get(row.device.type)
    return max(1, budget // widest_output(module, row[:1])) if budget else default
