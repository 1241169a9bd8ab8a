"""Train the built-in zoo on the CPU; write its weights and zoo.json (both are committed).

    python -m model_registry.train_zoo [--only ID ...]

Each model is trained deterministically (fixed seeds, deterministic algorithms, seeded shuffling):
Adam with L2 weight decay and a cosine learning-rate schedule on 90 % of the training split; the
other 10 % picks the epoch with the lowest validation loss (early stopping with patience). The test
split is used once, at the end, to measure the accuracy that zoo.json records. The Normalize layer
gets the mean/std of the whole training split.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data.base import Dataset, Split
from data.builtin import load_builtin
from model_registry.base import Normalize
from model_registry.zoo import ZOO, ZOO_JSON, file_sha256, weights_path, zoo_entry


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one zoo model."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    patience: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    l1_input: float = 0.0
    """L1 penalty on the first linear layer's weights (sum of |w| per batch, times this): it selects
    input features, which a wide table with a few informative columns needs."""


CONFIGS: dict[str, TrainConfig] = {
    "shapes_cnn": TrainConfig(epochs=15, lr=1e-3, batch_size=64, weight_decay=1e-4),
    "shapes_resnet": TrainConfig(epochs=20, lr=1e-3, batch_size=64, weight_decay=1e-4),
    "digits_cnn": TrainConfig(epochs=30, lr=3e-3, batch_size=32, weight_decay=1e-4, patience=8),
    "breast_cancer_mlp": TrainConfig(epochs=60, lr=1e-3, batch_size=32, weight_decay=1e-3, patience=15),
    "highdim_mlp": TrainConfig(epochs=30, lr=1e-3, batch_size=64, weight_decay=3e-2, patience=8, l1_input=1e-3),
}


def normalizer_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images, N×C×H×W) or per-feature (tables, N×F) mean and std; zero std becomes 1."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def set_normalizer(module: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """Write the training statistics into the model's first Normalize layer."""
    norm = next(m for m in module.modules() if isinstance(m, Normalize))
    norm.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(norm.mean.shape))
    norm.std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(norm.std.shape))


def split_validation(train: Split, fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded (fit_x, fit_y, val_x, val_y) tensors: ``fraction`` of the training split held out."""
    order = np.random.default_rng(seed).permutation(len(train.x))
    n_val = int(round(fraction * len(order)))
    val, fit = order[:n_val], order[n_val:]
    as_t = torch.from_numpy
    return as_t(train.x[fit]), as_t(train.y[fit]), as_t(train.x[val]), as_t(train.y[val])


@torch.inference_mode()
def evaluate(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of ``module`` in eval mode on (x, y)."""
    module.eval()
    logits = torch.cat([module(xb) for xb in x.split(batch_size)])
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def train_epoch(module: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator, l1_input: float = 0.0) -> float:
    """One pass over (x, y) in seeded random order; returns the mean training loss (without the
    ``l1_input`` penalty on the first linear layer's weights)."""
    module.train()
    first = next(m for m in module.modules() if isinstance(m, nn.Linear)) if l1_input else None
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for idx in order.split(batch_size):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
        (loss + l1_input * first.weight.abs().sum() if first is not None else loss).backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def fit(module: nn.Module, data: Dataset, cfg: TrainConfig, model_id: str) -> tuple[int, int, float]:
    """Train with early stopping on the held-out validation part; leaves the best epoch's weights
    in ``module``. Returns (epochs run, best epoch, best validation accuracy)."""
    x_fit, y_fit, x_val, y_val = split_validation(data.train_arrays(), cfg.val_fraction, cfg.seed)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    generator = torch.Generator().manual_seed(cfg.seed)
    best_loss, best_acc, best_epoch, best_state = float("inf"), 0.0, 0, copy.deepcopy(module.state_dict())
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(module, opt, x_fit, y_fit, cfg.batch_size, generator, cfg.l1_input)
        sched.step()
        val_loss, val_acc = evaluate(module, x_val, y_val)
        print(f"[{model_id}] epoch {epoch:3d}  loss {loss:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
              f"  ({time.perf_counter() - start:.1f} s)", flush=True)
        if val_loss < best_loss:
            best_loss, best_acc, best_epoch, best_state = val_loss, val_acc, epoch, copy.deepcopy(module.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    module.load_state_dict(best_state)
    return epoch, best_epoch, best_acc


def save_weights(module: nn.Module, model_id: str) -> str:
    """torch.save the CPU state_dict to weights/<id>.pt (atomically); returns the file's sha256."""
    path = weights_path(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return file_sha256(path)


def train_model(model_id: str) -> dict:
    """Train one zoo model from scratch, save its weights and return its zoo.json record."""
    entry, cfg = zoo_entry(model_id), CONFIGS[model_id]
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = load_builtin(entry.dataset)
    module = entry.build()
    set_normalizer(module, *normalizer_stats(np.asarray(data.train_arrays().x)))
    epochs, best_epoch, val_acc = fit(module, data, cfg, model_id)
    _, test_acc = evaluate(module, torch.from_numpy(data.eval.x), torch.from_numpy(data.eval.y))
    sha = save_weights(module, model_id)
    seconds = time.perf_counter() - start
    x_train = np.asarray(data.train_arrays().x)
    value_range = [0.0, 1.0] if entry.task == "image" else [float(x_train.min()), float(x_train.max())]
    print(f"[{model_id}] test accuracy {test_acc:.4f} (min {entry.min_accuracy}), "
          f"best epoch {best_epoch}/{epochs}, {seconds:.1f} s", flush=True)
    return {
        "test_accuracy": round(test_acc, 4),
        "val_accuracy": round(val_acc, 4),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "seconds": round(seconds, 1),
        "weights_sha256": sha,
        "value_range": value_range,
    }


def update_zoo_json(records: dict[str, dict]) -> None:
    """Merge ``records`` into zoo.json (other models' records are kept), written atomically."""
    existing = json.loads(ZOO_JSON.read_text()) if ZOO_JSON.is_file() else {}
    existing.update(records)
    tmp = ZOO_JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(existing.items())), indent=2) + "\n")
    os.replace(tmp, ZOO_JSON)


def main(argv: list[str] | None = None) -> int:
    """Train the requested (default: all) zoo models; returns 1 if any misses its min accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(ZOO), help="train only these models")
    args = parser.parse_args(argv)
    records: dict[str, dict] = {}
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for model_id in args.only or list(ZOO):
            records[model_id] = train_model(model_id)
            update_zoo_json({model_id: records[model_id]})
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    failed = [m for m, r in records.items() if r["test_accuracy"] < ZOO[m].min_accuracy]
    for model_id in failed:
        print(f"[{model_id}] below its minimum accuracy {ZOO[model_id].min_accuracy}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
