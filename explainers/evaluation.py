"""Measurements of explanation quality: deletion/insertion curves and AUCs, pointing game, mask
energy, sparsity, agreement between maps, and the model-randomisation sanity check.

Deletion and insertion follow specs/samp.md §3 (the SAMP authors' 2023 benchmark code, itself after
Petsiuk, Das, Saenko, "RISE", BMVC 2018):

* units are pixels (all channels together) for images and features for tables, ranked by the map in
  descending order (stable: ties keep index order);
* ``step_per`` units move per step; n = ceil(U / step_per) steps give n + 1 points. Default
  ``step_per`` = ceil(U / 32), so at most 33 points per curve;
* deletion starts from x and replaces units by the substrate ``model.baseline_value()`` (zero after
  the model's normalisation, black when it has none); insertion starts from blur(x) (tables: from
  the substrate) and pastes the original units back;
* score = target logit / f(x), where f(x) is the target logit of x: the first deletion point and the
  last insertion point. AUC = plain mean of the n + 1 normalised scores (not the trapezoid rule), so
  deletion can be < 0 and insertion > 1;
* the extra ``*_prob`` variants use the softmax probability of the target, unnormalised, integrated
  with the trapezoid rule over the fraction of units moved (the RISE convention).

All perturbed inputs of a block of (sample, step) rows are built on the model's device with one
broadcast comparison and one ``torch.where`` from each unit's rank, then fed to the model in
``batch_size`` slices under ``torch.inference_mode`` (on the CPU, each slice in passes sized by
:mod:`explainers.batching`). Nothing in the loop synchronises with the
device, so on a GPU building the next block overlaps the forward passes.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explainers.base import Explainer, Params
from explainers.batching import in_passes
from model_registry.base import ModelHandle

DEFAULT_POINTS = 32  # default step_per = ceil(U / DEFAULT_POINTS)
BLOCK_ELEMENTS = 2**24  # perturbed inputs are built this many values (64 MB of float32) at a time


@dataclass
class Curves:
    """Deletion and insertion curves of a batch. Curve arrays are B×(n+1), on the CPU."""

    fractions: np.ndarray
    """(n+1,) share of units moved at each point (0 … 1)."""
    deletion: np.ndarray
    """Target logit / f(x) along the deletion path (first column is 1)."""
    insertion: np.ndarray
    """Target logit / f(x) along the insertion path (last column is 1)."""
    deletion_prob: np.ndarray
    """Softmax probability of the target along the deletion path."""
    insertion_prob: np.ndarray
    """Softmax probability of the target along the insertion path."""
    step_per: int
    n_forward: int
    """Forward passes (rows) spent: 2 · B · (n + 1)."""


# -- inputs ------------------------------------------------------------------------------------------


def _as_tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    """``a`` (array-like or tensor) as a tensor of ``dtype``, where it already lives (no copy when
    it already has that dtype)."""
    return a.detach().to(dtype) if torch.is_tensor(a) else torch.as_tensor(np.asarray(a)).to(dtype)


def _unit_maps(x: torch.Tensor, maps: Any) -> torch.Tensor:
    """Maps as a float B×U tensor on ``x``'s device; the shape must be B×H×W (images) or B×F.
    Checked before the upload, so numpy maps cost the device no synchronisation."""
    m = _as_tensor(maps, torch.float32)
    expected = (x.shape[0], *x.shape[2:]) if x.dim() == 4 else tuple(x.shape)
    if tuple(m.shape) != expected:
        raise ValueError(f"maps have shape {tuple(m.shape)}; for inputs of shape {tuple(x.shape)} expected {expected}")
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    return m.reshape(len(m), -1).to(x.device)


def _check_blur(klen: int, ksig: float) -> None:
    if klen < 1 or klen % 2 == 0:
        raise ValueError(f"klen must be a positive odd kernel length, got {klen}")
    if ksig <= 0:
        raise ValueError(f"ksig must be positive, got {ksig}")


def _target(target: Any, n: int, device: torch.device) -> torch.Tensor:
    t = _as_tensor(target, torch.long).reshape(-1).to(device)
    if len(t) != n:
        raise ValueError(f"target has {len(t)} entries for a batch of {n} samples")
    return t


def substrate(model: ModelHandle, x: torch.Tensor) -> torch.Tensor:
    """The deletion fill ``model.baseline_value()`` as a 1×(sample shape) tensor on x's device."""
    return model.baseline_value().to(device=x.device, dtype=x.dtype).expand(x.shape[1:]).unsqueeze(0)


def gaussian_kernel(
    klen: int, ksig: float, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """1-D normalised Gaussian of length ``klen`` (odd) and standard deviation ``ksig``, built on
    ``device`` (no host-to-device copy)."""
    _check_blur(klen, ksig)
    r = torch.arange(klen, device=device, dtype=torch.float64) - klen // 2
    k = torch.exp(-(r**2) / (2 * ksig**2))
    return (k / k.sum()).to(dtype)


def _band(k: torch.Tensor, n: int) -> torch.Tensor:
    """n×n matrix applying the 1-D kernel ``k`` with zero padding: B[i, j] = k[j − i + len(k)//2]."""
    pad = len(k) // 2
    idx = torch.arange(n, device=k.device)
    offset = idx[None, :] - idx[:, None] + pad
    inside = (offset >= 0) & (offset < len(k))
    return torch.where(inside, k[offset.clamp(0, len(k) - 1)], 0.0)


def blur(model: ModelHandle, x: torch.Tensor, klen: int = 11, ksig: float = 5.0) -> torch.Tensor:
    """Per-channel separable Gaussian blur with zero padding in the model's *normalised* space.

    Normalisation is a per-channel affine map and the blur is linear per channel, so blurring in
    normalised space equals blurring x − b with zero padding and adding b back, where b is the
    substrate (the input that normalises to zero)."""
    return _blur(x, substrate(model, x), gaussian_kernel(klen, ksig, x.device, x.dtype))


def _blur(x: torch.Tensor, base: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Blur of x − base with the 1-D kernel ``k`` along both axes (zero padding) plus base, as two
    band-matrix products (rows: B_H · z, columns: z · B_Wᵀ)."""
    return _band(k, x.shape[-2]) @ (x - base) @ _band(k, x.shape[-1]).T + base


def _ranks(m: torch.Tensor) -> torch.Tensor:
    """Rank position (0 = most salient) of every unit, descending, stable."""
    order = torch.argsort(m, dim=1, descending=True, stable=True)
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(m.shape[1], device=m.device).expand_as(order))
    return pos


def default_step(n_units: int) -> int:
    """ceil(U / 32): at most 33 points per curve."""
    return math.ceil(n_units / DEFAULT_POINTS)


def curve_passes(input_shape: Sequence[int], step_per: int = 0) -> int:
    """Forward rows the deletion and insertion curves cost per sample: 2 paths × (n + 1) points,
    n = ceil(U / step_per) for U units (pixels, or features of a table)."""
    n_units = math.prod(input_shape[1:]) if len(input_shape) == 3 else input_shape[0]
    return 2 * (math.ceil(n_units / (step_per or default_step(n_units))) + 1)


def _plan(x: torch.Tensor, step_per: int) -> tuple[int, int, int]:
    """(units U, step_per with the auto rule applied, points n + 1) for a batch ``x``."""
    n_units = math.prod(x.shape[2:]) if x.dim() == 4 else x.shape[1]
    step_per = step_per or default_step(n_units)
    if step_per < 1:
        raise ValueError(f"step_per must be ≥ 1 (0 = auto), got {step_per}")
    return n_units, step_per, math.ceil(n_units / step_per) + 1


def perturbation_batches(
    model: ModelHandle,
    x: torch.Tensor,
    maps: Any,
    *,
    step_per: int = 0,
    klen: int = 11,
    ksig: float = 5.0,
    batch_size: int = 256,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(path, rows)``: batches of perturbed inputs on the model's device, the deletion path
    first, then the insertion path; rows run sample-major, step-minor (row r = sample r // T at
    step r % T, T = n + 1 points).

    Rows are built a block at a time: the whole curves of as many samples as fit in
    :data:`BLOCK_ELEMENTS` values (at least a batch; or, for very long curves, a run of one
    sample's steps), by one broadcast comparison of each unit's move step against the step
    numbers and one ``torch.where`` over views (no gathers, no copies of x). Batches are
    ``batch_size`` slices of a block, so the loop itself launches no work besides the model's.
    A unit moves from the path's start to its end at step pos // step_per + 1."""
    device = model.device
    x = x.to(device)
    m = _unit_maps(x, maps)
    n_units, step_per, n_points = _plan(x, step_per)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    _check_blur(klen, ksig)
    index_type = torch.uint8 if n_points <= 256 else torch.int32
    block_rows = max(batch_size, BLOCK_ELEMENTS // math.prod(x.shape[1:]))
    plan = _RowPlan(
        moves_at=(_ranks(m) // step_per + 1).to(index_type),
        steps=torch.arange(n_points, device=device, dtype=index_type)[:, None],
        unit_shape=(1, *x.shape[2:]) if x.dim() == 4 else (n_units,),
        samples_per_block=max(1, block_rows // n_points),
        steps_per_block=min(n_points, block_rows),
        batch_size=batch_size,
    )
    base = substrate(model, x)
    yield from (("deletion", rows) for rows in plan.batches(x, base))
    # Built only now, so that on a GPU the blur queues behind the deletion forwards.
    start = _blur(x, base, gaussian_kernel(klen, ksig, device, x.dtype)) if x.dim() == 4 else base
    yield from (("insertion", rows) for rows in plan.batches(start, x))


@dataclass(frozen=True)
class _RowPlan:
    """How perturbed rows are built in blocks and cut into batches (see :func:`perturbation_batches`)."""

    moves_at: torch.Tensor  # B×U: step at which each unit moves
    steps: torch.Tensor  # T×1 step numbers
    unit_shape: tuple[int, ...]
    samples_per_block: int
    steps_per_block: int
    batch_size: int

    def batches(self, start: torch.Tensor, end: torch.Tensor) -> Iterator[torch.Tensor]:
        """Rows from ``start`` with the units moved by each step taken from ``end``."""
        n_samples, n_points = self.moves_at.shape[0], len(self.steps)
        for s0 in range(0, n_samples, self.samples_per_block):
            s1 = min(s0 + self.samples_per_block, n_samples)
            for t0 in range(0, n_points, self.steps_per_block):
                t = self.steps[t0 : t0 + self.steps_per_block]
                moved = (self.moves_at[s0:s1, None, :] <= t).reshape(s1 - s0, len(t), *self.unit_shape)
                block = torch.where(moved, _curve_view(end, s0, s1), _curve_view(start, s0, s1))
                yield from block.reshape(-1, *block.shape[2:]).split(self.batch_size)


def _curve_view(t: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
    """Samples s0:s1 of ``t`` with a broadcast step axis; a 1-row ``t`` broadcasts over samples."""
    return (t if t.shape[0] == 1 else t[s0:s1])[:, None]


@torch.inference_mode()
def curves(
    model: ModelHandle,
    x: torch.Tensor,
    maps: Any,
    target: Any,
    *,
    step_per: int = 0,
    klen: int = 11,
    ksig: float = 5.0,
    batch_size: int = 256,
) -> Curves:
    """Deletion and insertion curves (specs/samp.md §3) for a batch; see the module docstring."""
    device = model.device
    x = x.to(device)
    t = _target(target, len(x), device)
    n_units, step_per, n_points = _plan(x, step_per)
    batches = perturbation_batches(model, x, maps, step_per=step_per, klen=klen, ksig=ksig, batch_size=batch_size)
    out = torch.cat(_forwards(model.module, (rows for _, rows in batches))).float()  # deletion rows, then insertion
    out = out.reshape(2, len(x), n_points, -1)
    index = t[None, :, None, None].expand(2, -1, n_points, 1)
    logit = out.gather(3, index)[..., 0]
    prob = torch.softmax(out, dim=3).gather(3, index)[..., 0]
    deletion = logit[0] / logit[0, :, :1]
    insertion = logit[1] / logit[1, :, -1:]
    table = torch.stack([deletion, insertion, prob[0], prob[1]]).cpu().numpy()  # one copy back
    return Curves(
        fractions=np.minimum(np.arange(n_points) * step_per, n_units) / n_units,
        deletion=table[0],
        insertion=table[1],
        deletion_prob=table[2],
        insertion_prob=table[3],
        step_per=step_per,
        n_forward=2 * len(x) * n_points,
    )


def _forwards(module: torch.nn.Module, batches: Iterator[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of every batch, in order; on the CPU each batch runs in passes of at most as many
    rows as the first row's own pass allows (:func:`explainers.batching.in_passes`), elsewhere
    each batch in one pass."""
    outs: list[torch.Tensor] = []
    per_pass = 0
    for rows in batches:
        parts, per_pass = in_passes(module, lambda part: module(rows[part]), rows, per_pass, len(rows))
        outs += parts
    return outs


def curve_aucs(c: Curves) -> dict[str, np.ndarray]:
    """Per-sample AUCs: plain means of the normalised logit curves, trapezoids of the prob curves."""
    return {
        "deletion_auc": c.deletion.mean(axis=1),
        "insertion_auc": c.insertion.mean(axis=1),
        "deletion_auc_prob": np.trapezoid(c.deletion_prob, c.fractions, axis=1),
        "insertion_auc_prob": np.trapezoid(c.insertion_prob, c.fractions, axis=1),
    }


# -- map statistics --------------------------------------------------------------------------------


def _flat(maps: Any) -> np.ndarray:
    a = np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps, dtype=np.float64)
    return a.reshape(len(a), -1)


def gini(maps: Any) -> np.ndarray:
    """Per-sample Gini index of |map| (Hurley & Rickard, "Comparing Measures of Sparsity", IEEE
    Trans. Inf. Theory 2009, eq. for G): 1 − 2 Σ_k (c_(k)/‖c‖₁)(N − k + ½)/N over ascending c.
    One-hot → 1 − 1/N, uniform → 0, all-zero maps → 0."""
    c = np.sort(np.abs(_flat(maps)), axis=1)
    n = c.shape[1]
    total = c.sum(axis=1, keepdims=True)
    k = np.arange(1, n + 1)
    share = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
    g = 1.0 - 2.0 * (share * (n - k + 0.5) / n).sum(axis=1)
    return np.where(total[:, 0] > 0, g, 0.0)


def _rankdata(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=1)


def spearman(a: Any, b: Any) -> np.ndarray:
    """Per-sample Spearman rank correlation between two batches of maps (average ranks for ties;
    NaN when a map is constant)."""
    ra, rb = _rankdata(_flat(a)), _rankdata(_flat(b))
    if ra.shape != rb.shape:
        raise ValueError(f"maps to compare have different shapes: {ra.shape} vs {rb.shape}")
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=1) / denom


def topk_iou(a: Any, b: Any, fraction: float = 0.1, absolute: bool = True) -> np.ndarray:
    """Per-sample intersection over union of the top ceil(fraction · U) units of two maps (by |value|
    when ``absolute``; stable order for ties)."""
    fa, fb = _flat(a), _flat(b)
    if fa.shape != fb.shape:
        raise ValueError(f"maps to compare have different shapes: {fa.shape} vs {fb.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if absolute:
        fa, fb = np.abs(fa), np.abs(fb)
    k = math.ceil(fraction * fa.shape[1])
    top_a = np.argsort(-fa, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-fb, axis=1, kind="stable")[:, :k]
    inter = np.array([len(np.intersect1d(p, q)) for p, q in zip(top_a, top_b)])
    return inter / (2 * k - inter)


# -- ground-truth masks ----------------------------------------------------------------------------


def pointing_game(maps: Any, masks: Any, tolerance: float = 0.0) -> list[bool | None]:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016):
    a hit when the map's argmax (first in row-major order on ties) lies within ``tolerance`` pixels
    (Euclidean) of the ground-truth mask. None for an empty mask."""
    m = np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps)
    gt = np.asarray(masks, dtype=bool)
    if m.shape != gt.shape or m.ndim != 3:
        raise ValueError(f"pointing game needs B×H×W maps and masks of the same shape, got {m.shape} and {gt.shape}")
    hits: list[bool | None] = []
    for one, mask in zip(m, gt):
        if not mask.any():
            hits.append(None)
            continue
        peak = np.array(np.unravel_index(np.argmax(one), one.shape))
        inside = np.argwhere(mask)
        hits.append(bool(np.sqrt(((inside - peak) ** 2).sum(axis=1)).min() <= tolerance))
    return hits


def mask_energy(maps: Any, masks: Any) -> list[float | None]:
    """Share of the positive attribution mass inside the mask (the energy-based pointing game of
    Wang et al., "Score-CAM", CVPRW 2020). None when a map has no positive mass."""
    pos = np.clip(_flat(maps), 0, None)
    gt = np.asarray(masks, dtype=bool).reshape(len(pos), -1)
    if gt.shape != pos.shape:
        raise ValueError(f"masks of shape {np.shape(masks)} do not match maps with {pos.shape[1]} units each")
    total = pos.sum(axis=1)
    inside = (pos * gt).sum(axis=1)
    return [float(i / t) if t > 0 else None for i, t in zip(inside, total)]


# -- everything per sample -------------------------------------------------------------------------


def evaluate_with_curves(
    model: ModelHandle,
    x: torch.Tensor,
    maps: Any,
    target: Any,
    masks: Any = None,
    *,
    step_per: int = 0,
    klen: int = 11,
    ksig: float = 5.0,
    batch_size: int = 256,
    tolerance: float = 0.0,
) -> tuple[list[dict[str, Any]], Curves]:
    """Per-sample metric dicts plus the :class:`Curves` they came from (for plotting)."""
    c = curves(model, x, maps, target, step_per=step_per, klen=klen, ksig=ksig, batch_size=batch_size)
    columns: dict[str, Any] = {k: v.tolist() for k, v in curve_aucs(c).items()}
    columns["sparsity_gini"] = gini(maps).tolist()
    if masks is not None:
        columns["pointing_hit"] = pointing_game(maps, masks, tolerance)
        columns["mask_energy"] = mask_energy(maps, masks)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return rows, c


def evaluate(
    model: ModelHandle,
    x: torch.Tensor,
    maps: Any,
    target: Any,
    masks: Any = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Per sample: deletion_auc, insertion_auc, deletion_auc_prob, insertion_auc_prob,
    sparsity_gini, and pointing_hit + mask_energy when ``masks`` are given. ``settings`` are the
    keyword options of :func:`evaluate_with_curves` (step_per, klen, ksig, batch_size, tolerance);
    use that function to also get the curves."""
    return evaluate_with_curves(model, x, maps, target, masks, **settings)[0]


# -- sanity check ----------------------------------------------------------------------------------


def randomized_model(model: ModelHandle, seed: int = 0, modules: Sequence[str] | None = None) -> ModelHandle:
    """A deep copy of ``model`` whose parameters are re-initialised (seeded), in every submodule or
    only in the submodules named in ``modules`` (and their children): modules with
    ``reset_parameters`` use it (PyTorch's default init); other parameters are redrawn from a normal
    with their own mean and standard deviation. Buffers (e.g. normalisation) are kept.

    Each submodule draws from its own generator, seeded by a hash of ``seed`` and its name, so a
    submodule gets the same random weights whichever others are randomised with it (the cascading
    check of :mod:`explainers.sanity` relies on it). Hashing also keeps a model built under
    ``torch.manual_seed(0)`` from being "re-initialised" to exactly its own weights."""
    module = copy.deepcopy(model.module)
    device = model.device
    chosen = None if modules is None else tuple(modules)
    missing = [] if chosen is None else [n for n in chosen if n not in dict(module.named_modules())]
    if missing:
        raise ValueError(f"model {model.id!r} has no submodule(s) {missing}")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        for name, sub in module.named_modules():
            own = list(sub.parameters(recurse=False))
            if not own or (chosen is not None and not any(name == c or name.startswith(f"{c}.") for c in chosen)):
                continue
            digest = hashlib.sha256(f"loupe.randomized_model:{int(seed)}:{name}".encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            reset_parameters = getattr(sub, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                continue
            for p in own:
                std = float(p.std()) if p.numel() > 1 else 1.0
                p.normal_(float(p.mean()), std or 1.0)
    module.eval()
    which = "all" if chosen is None else ",".join(chosen)
    return dataclasses.replace(model, module=module, weights_hash=f"randomized:{seed}:{which}:{model.weights_hash}")


def randomization_check(
    explainer: Explainer,
    model: ModelHandle,
    x: torch.Tensor,
    target: Any,
    params: Params,
    maps: Any = None,
    background: torch.Tensor | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps",
    NeurIPS 2018, §3.1, full re-initialisation): per-sample Spearman correlation between |map| of
    the trained model and |map| of a re-initialised copy. Near 1 means the map ignores the weights.
    ``maps`` may pass the trained model's maps to avoid recomputing them."""
    if maps is None:
        maps = explainer.explain(model, x, target, params, background).attributions
    randomized = explainer.explain(randomized_model(model, seed), x, target, params, background).attributions
    return spearman(np.abs(_flat(maps)), np.abs(_flat(randomized)))
