"""Floors for the benches: the model passes an explainer cannot avoid, at the fastest batch size,
measured in the bench's own process.

A pass is one of :data:`PASSES` over prebuilt rows: ``forward`` (inference mode), ``gradient``
(forward + backward of the summed target logits to the input, what gradient methods do per row) or
``layer_gradient`` (forward + backward to a layer's output only, what Grad-CAM does). Candidate batch
sizes are the powers of two whose widest layer output stays within :data:`MAX_PASS_VALUES` values;
each is timed for about :data:`PROBE_SECONDS` per round, in interleaved rounds, and the best per-row
time wins.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from explainers.batching import widest_output

MAX_PASS_VALUES = 2**26
"""Candidate batches keep their widest layer output within this many values (256 MB of float32)."""
MAX_BATCH = 4096
PROBE_SECONDS = 1.0


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of ``fn`` (CUDA work is synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _forward(module: nn.Module, rows: torch.Tensor, target: torch.Tensor, layer: str | None) -> None:
    with torch.inference_mode():
        module(rows)


def _gradient(module: nn.Module, rows: torch.Tensor, target: torch.Tensor, layer: str | None) -> None:
    leaf = rows.detach().requires_grad_(True)
    logit = module(leaf).gather(1, target[:, None]).sum()
    torch.autograd.grad(logit, leaf)


def _layer_gradient(module: nn.Module, rows: torch.Tensor, target: torch.Tensor, layer: str | None) -> None:
    assert layer is not None
    seen: list[torch.Tensor] = []
    handle = module.get_submodule(layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        logit = module(rows.detach().requires_grad_(True)).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    torch.autograd.grad(logit, seen[-1])


PASSES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor, str | None], None]] = {
    "forward": _forward,
    "gradient": _gradient,
    "layer_gradient": _layer_gradient,
}


def candidate_sizes(module: nn.Module, x: torch.Tensor, most: int = MAX_BATCH) -> list[int]:
    """1, 2, 4, … up to ``most`` rows, while a batch's widest layer output holds ≤ MAX_PASS_VALUES values."""
    widest = widest_output(module, x[:1])
    sizes = [1]
    while sizes[-1] * 2 <= min(most, MAX_BATCH) and sizes[-1] * 2 * widest <= MAX_PASS_VALUES:
        sizes.append(sizes[-1] * 2)
    return sizes


def batch_of(x: torch.Tensor, target: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` rows (and targets) cycled from ``x``, contiguous."""
    reps = -(-size // len(x))
    return x.repeat(reps, *[1] * (x.dim() - 1))[:size].contiguous(), target.repeat(reps)[:size]


def passes(module: nn.Module, kind: str, x: torch.Tensor, target: torch.Tensor, rows: int, size: int,
           layer: str | None = None) -> Callable[[], None]:
    """``rows`` passes of ``kind`` over prebuilt rows (copies of ``x``), ``size`` rows at a time."""
    batch, tb = batch_of(x, target, min(size, rows))
    run = PASSES[kind]

    def replay() -> None:
        for start in range(0, rows, size):
            n = min(size, rows - start)
            run(module, batch[:n], tb[:n], layer)

    return replay


def per_row_seconds(module: nn.Module, kind: str, batch: torch.Tensor, tb: torch.Tensor, layer: str | None) -> float:
    """Seconds per row of passes over ``batch`` repeated for about PROBE_SECONDS (at least twice)."""
    run, done, start = PASSES[kind], 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < PROBE_SECONDS:
        run(module, batch, tb, layer)
        done += 1
    if batch.device.type == "cuda":
        torch.cuda.synchronize(batch.device)
    return (time.perf_counter() - start) / (done * len(batch))


def fastest(module: nn.Module, kind: str, x: torch.Tensor, target: torch.Tensor, sizes: list[int],
            rounds: int = 2, layer: str | None = None) -> tuple[int, float, dict[int, float]]:
    """(fastest batch size, its seconds per row, seconds per row of every size): each size timed
    once per round after a warm-up pass, rounds interleaved, best per size."""
    batches = {size: batch_of(x, target, size) for size in sizes}
    for size, (batch, tb) in batches.items():
        PASSES[kind](module, batch, tb, layer)  # warm-up: allocator, kernels for this shape
    best: dict[int, float] = {}
    for _ in range(rounds):
        for size, (batch, tb) in batches.items():
            best[size] = min(best.get(size, float("inf")), per_row_seconds(module, kind, batch, tb, layer))
    size = min(best, key=best.__getitem__)
    return size, best[size], best
