"""Dask worker preload (``dask worker ADDR --preload worker.preload``; the embedded cluster uses it
too): import torch and captum once per worker process and give CPU workers every core, because the
nanny pins OMP threads to 1 and a cold import otherwise lands on the first job (notes/stack.md §4)."""
from __future__ import annotations

import os
from typing import Any


def dask_setup(worker: Any) -> None:  # dask passes its Worker
    """Called by Dask when the worker starts."""
    import captum.attr  # noqa: F401 - warm import
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("LOUPE_TORCH_THREADS", os.cpu_count() or 1)))
