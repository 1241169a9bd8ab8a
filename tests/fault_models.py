"""A model for fault tests, importable by the embedded cluster's workers (they inherit this
process's ``sys.path``, which holds the repository root): it kills the process running it, as an
out-of-memory kill would, when its flag file exists and the batch holds a marked sample."""
from __future__ import annotations

import os

import torch
from torch import nn

MARK = 999.0
"""Feature 0 of the sample that triggers the kill."""


class KillOnMark(nn.Module):
    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.path.exists(self.flag) and bool((x[:, 0] == MARK).any()):
            os._exit(3)
        return self.lin(x)


def build(flag: str) -> KillOnMark:
    torch.manual_seed(0)
    return KillOnMark(flag)
