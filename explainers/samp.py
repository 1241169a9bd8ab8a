"""SAMP: Salient Manipulation Path attribution (Zhang, Zheng, Zhou, Lu, "Path Choice Matters for
Clear Attribution in Path Methods", ICLR 2024, arXiv 2401.10442): SAMP++'s paths under both presets;
``preset="paper"`` credits and combines them as published, the ``loupe`` default differently (below).

Follows specs/samp.md §2, itself after the authors' 2023 benchmark code (zbr17/ExplainAttr,
``sam.py`` / ``sam_naive.py``). A path runs from ``start`` to ``end`` in steps; each step

1. takes g = ∂ logit_target / ∂x at the current point (one forward + one backward), or under the
   momentum strategy (MS) the moving average g ← (1 − μ)·g_now + μ·g (μ = ``momentum``, 0 = off;
   the authors' ``momen`` weighs the current gradient, so their 0.5 is our 0.5);
2. scores every *active* pixel (some channel not ``isclose`` to its end value) by its signed
   first-order effect proj = Σ_c g · (end − x) and picks the ``pixels_per_step`` most salient: the
   smallest proj on the deletion path (steepest descent), the largest on the insertion path, as an
   exact top-k with ties broken by the lower pixel index (the code's quantile threshold can pick
   more than k on ties; spec §5.7);
3. moves those pixels (all channels) to their end values; under the infinitesimal constraint (IC)
   the whole step is shrunk uniformly so that its l1 length is at most D / ``n_frag``, D being the
   path's l1 length ‖start − end‖₁ (0 = off);
4. credits the step to its pixels (:func:`step_credit`, ``quadrature``): the paper adds g ⊙ Δx, summed
   over channels (left Riemann sum, g averaged under MS); ``trapezoid`` uses the mean of the raw
   gradients at both ends of the step; ``measured`` (the loupe default) adds to the trapezoid credit
   the step's residual f(x_{k+1}) − f(x_k) − Σ credit, spread in proportion to |credit|, so every path
   adds up exactly to its output change. The end gradient is the next step's, so neither costs a pass;
   each path takes one gradient at its last point.

The deletion path runs from x to the baseline (by default the input that is zero after the model's
normalisation: ``ModelHandle.baseline_value()``, black when the model exposes no normaliser); the
insertion path from blur(x) to x, with the deletion/insertion metric's blur
(:func:`explainers.evaluation.blur`: Gaussian, zero padding in normalised space). The deletion map
is negated, so each path map estimates f(x) − f(its baseline) per pixel; the two are combined by
``reduction`` ("sum" as in the paper; "norm": min-max each, then add, the authors' alternative and the
loupe default; "l1": divide each by its l1 norm, then add). Maps are raw, not normalised for display.

Batching: the rows of both paths for all images form one 2B batch that advances step by step;
rows whose path is finished leave the batch. Each step's forward + backward runs in passes sized by
:mod:`explainers.batching` on the CPU (all rows at once elsewhere). Rows are independent (the target
logits are summed before the backward pass), so batch size never changes results.

Steps per path, with m = ceil(P / pixels_per_step) for P initially active pixels: m without IC,
max(n_frag, m) ≤ steps ≤ n_frag + m with IC (spec §4). A guard stops a path after n_frag +
ceil(H·W / pixels_per_step) + 5 steps (spec §5.8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from explainers._common import BASELINES, check_inputs, reference_input
from explainers.base import Explainer, ParamError, Params, Passes, Result, Spec, param, preset_choice, preset_param
from explainers.batching import in_passes
from explainers.evaluation import blur
from model_registry.base import ModelHandle

PATHS = ("both", "deletion", "insertion")
REDUCTIONS = ("sum", "norm", "l1")
REDUCTION_HELP = ("combine the two path maps: sum (the paper's SAMP++), norm (the authors' alternative: min-max "
                  "normalise each, then add) or l1 (divide each by its l1 norm, then add)")
QUADRATURES = ("left", "trapezoid", "measured")
QUADRATURE_HELP = ("credit of each step: left = the (averaged) gradient at its start × its displacement (the paper); "
                   "trapezoid = the mean of the raw gradients at both ends × displacement; measured = the trapezoid "
                   "credit corrected so that each step adds up to its measured output change (exact completeness)")
RTOL, ATOL = 1e-5, 1e-8  # torch.isclose defaults, as the authors' stopping test (spec §5.8)
GUARD_SLACK = 5

# The paper's two settings of pixels per step (spec §2): 10 at 28–32 px (MNIST, CIFAR-10) and
# 224·16 = 3584 at 224×224 (ImageNet). Between and beyond, a power law through both in log-log.
_SMALL_PIXELS, _SMALL_STEP = 32 * 32, 10
_LARGE_PIXELS, _LARGE_STEP = 224 * 224, 224 * 16
_EXPONENT = math.log(_LARGE_STEP / _SMALL_STEP) / math.log(_LARGE_PIXELS / _SMALL_PIXELS)  # ≈ 1.511


def auto_pixels_per_step(n_pixels: int) -> int:
    """Pixels per step for an image of ``n_pixels`` = H·W pixels when ``pixels_per_step`` is 0:
    10 up to 32² pixels, else round(10 · (H·W / 32²)^p) with p = ln(358.4) / ln(49) ≈ 1.511, the
    power law through the paper's (32², 10) and (224², 3584). 64×64 → 81 (51 steps per path)."""
    if n_pixels <= _SMALL_PIXELS:
        return min(_SMALL_STEP, n_pixels)
    return min(n_pixels, round(_SMALL_STEP * (n_pixels / _SMALL_PIXELS) ** _EXPONENT))


PAPER = {"n_frag": 50, "momentum": 0.5, "reduction": "sum", "quadrature": "left"}
"""SAMP++ as in the authors' 2023 code (spec §2): IC with n_frag 50, MS with 0.5, the two path maps
summed, left Riemann credit."""
LOUPE = {"n_frag": 50, "momentum": 0.5, "reduction": "norm", "quadrature": "measured"}
"""Loupe's default: the same paths (IC + MS), each step credited with its measured output change
(so each path's map adds up to f(end) − f(start)), the two maps min-max normalised before adding
(the authors' alternative reduction), because under "sum" the deletion path's overshooting map
outweighs the insertion path's and the map loses the insertion AUC to Integrated Gradients
(README, "SAMP and OSA-DAS")."""


@dataclass(frozen=True)
class SampParams(Params):
    presets: ClassVar[dict] = {"loupe": LOUPE, "paper": PAPER}
    preset: str = preset_choice()
    pixels_per_step: int = param(
        0, low=0, high=2**24,
        help="pixels moved per step; 0 = auto by image size (10 up to 32×32, 3584 at 224×224, a power law between)",
    )
    n_frag: int = preset_param(
        low=0, high=100_000,
        help="infinitesimal constraint (IC): each step's l1 length is at most 1/n_frag of the path's; 0 = off",
    )
    momentum: float = preset_param(
        low=0.0, high=0.99,
        help="momentum strategy (MS): weight of the previous gradient average in the moving average; 0 = off",
    )
    paths: str = param("both", choices=PATHS, help="deletion (x → baseline), insertion (blur(x) → x), or both")
    reduction: str = preset_param(choices=REDUCTIONS, help=REDUCTION_HELP)
    quadrature: str = preset_param(choices=QUADRATURES, help=QUADRATURE_HELP)
    blur_kernel: int = param(11, low=1, high=255, help="odd Gaussian kernel length of the insertion start blur(x) (paper: 11 at 28–32 px, 31 at 224 px)")
    blur_sigma: float = param(5.0, low=0.01, high=100.0, help="standard deviation of the blur, in pixels")
    baseline: str = param(
        "normalized_zero", choices=BASELINES,
        help="end of the deletion path: normalized_zero = the input that is zero after the model's own "
        "normalisation (black when the model has none); zero = all zeros in input space; "
        "background_mean = mean of the background samples",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blur_kernel % 2 == 0:
            raise ParamError(f"blur_kernel must be odd, got {self.blur_kernel}")


@dataclass
class PathRun:
    """What :func:`manipulation_paths` returns for R rows (one path of one image each)."""

    maps: torch.Tensor
    """R×H×W accumulated Σ_k g_k ⊙ Δx_k (channels summed); estimates f(end) − f(start)."""
    logits: torch.Tensor
    """R×(guard + 1) target logit at each visited point, then f(end); NaN after the end."""
    steps: torch.Tensor
    """R step counts (forward + backward passes)."""


def _grad(module: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂ logit_target / ∂x, logit_target) per row: one forward and one backward pass."""
    with torch.enable_grad():
        inp = x.detach().requires_grad_(True)
        logit = module(inp).gather(1, target[:, None])[:, 0]
        (g,) = torch.autograd.grad(logit.sum(), inp, materialize_grads=True)
    return g, logit.detach()


def _gradients(module: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, per_pass: int
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`_grad` of every row in passes of at most ``per_pass`` rows, and ``per_pass``; when it
    is 0 (the first step), :func:`explainers.batching.in_passes` sizes it (on the CPU from the first
    row's own pass, elsewhere all rows at once)."""
    parts, per_pass = in_passes(module, lambda rows: _grad(module, x[rows], target[rows]), x, per_pass, len(x))
    return torch.cat([g for g, _ in parts]), torch.cat([logit for _, logit in parts]), per_pass


def _top_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries per row, ties broken by the lower index (exact, O(U))."""
    k = min(k, score.shape[1])
    kth = score.topk(k, dim=1).values[:, -1:]
    above = score > kth
    tied = score == kth
    room = k - above.sum(dim=1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=1) <= room))


@dataclass
class _Step:
    """The last step of each path still running, credited once the gradient at its end is known."""

    left: torch.Tensor
    """R×H×W Σ_c ḡ_k·Δx_k with ḡ the (averaged, under MS) gradient that chose the step: the paper's credit."""
    delta: torch.Tensor | None
    """R×C×H×W displacement Δx_k = x_{k+1} − x_k (trapezoid and measured rules only)."""
    grad: torch.Tensor | None
    """R×C×H×W raw gradient g_k at x_k (trapezoid and measured rules only)."""
    logit: torch.Tensor
    """R target logit f(x_k)."""


def step_credit(rule: str, step: _Step, grad: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Per-pixel credit (R×H×W) of one step x_k → x_{k+1}, given g_{k+1} = ``grad`` and f(x_{k+1}) =
    ``logit`` at its end:

    * ``left``: Σ_c ḡ_k·Δx_k, the left Riemann sum of the authors' code (spec §2);
    * ``trapezoid``: Σ_c ½(g_k + g_{k+1})·Δx_k, the trapezoid rule on the raw gradients of the same
      straight segment (its second gradient is the next step's, so it costs no pass);
    * ``measured``: the trapezoid credit w plus the step's residual r = f(x_{k+1}) − f(x_k) − Σ w,
      spread over the pixels in proportion to |w| (to |Δx| where w is all zero), so that each step,
      and hence each path, adds up exactly to its measured output change (spec §2, "Completeness":
      the exact-completeness option)."""
    if rule == "left":
        return step.left
    if step.grad is None or step.delta is None:
        raise ValueError(f"the {rule!r} quadrature needs each step's raw gradient and displacement")
    w = 0.5 * ((step.grad + grad) * step.delta).sum(dim=1)
    if rule == "trapezoid":
        return w
    residual = (logit - step.logit) - w.flatten(1).sum(dim=1)
    weight = w.abs()
    total = weight.flatten(1).sum(dim=1)
    moved = step.delta.abs().sum(dim=1)
    weight = torch.where((total > 0)[:, None, None], weight, moved)
    total = weight.flatten(1).sum(dim=1)
    return w + (residual / total.clamp_min(torch.finfo(w.dtype).tiny))[:, None, None] * weight


def manipulation_paths(
    module: torch.nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    target: torch.Tensor,
    ascending: torch.Tensor,
    pixels_per_step: int,
    n_frag: int,
    momentum: float,
    quadrature: str = "left",
) -> PathRun:
    """Run R greedy manipulation paths (spec §2 pseudocode ``SAMP_PATH``) together as one batch.

    ``start``/``end`` are R×C×H×W, ``target`` R class indices, ``ascending`` R booleans: True picks
    the largest proj (insertion), False the smallest (deletion). Each step is credited by
    :func:`step_credit` under ``quadrature`` once the gradient at its end is known, so every path
    also takes one gradient at its last point (which gives f(end)). Finished rows leave the batch."""
    n_rows, _, height, width = start.shape
    guard = n_frag + math.ceil(height * width / pixels_per_step) + GUARD_SLACK
    device = start.device
    maps = torch.zeros(n_rows, height, width, device=device, dtype=start.dtype)
    logits = torch.full((n_rows, guard + 1), float("nan"), device=device, dtype=start.dtype)
    steps = torch.full((n_rows,), guard, device=device, dtype=torch.long)
    keep_raw = quadrature != "left"

    # The state is the remaining displacement gap = end − x. A step multiplies each pixel's gap (all
    # channels) by one factor f ∈ [0, 1]: 0 where the pixel finishes, 1 − scale where IC shrinks the
    # step, 1 elsewhere. So the per-pixel l1 size Σ_c |gap| and the isclose ratio
    # max_c |gap| / (ATOL + RTOL·|end|) (active while > 1, torch.isclose's test) scale by the same f,
    # and only gap itself is updated at full C×H×W size; a pixel that turns inactive is snapped (f = 0).
    rows = torch.arange(n_rows, device=device)
    gap, acc, avg, last = end - start, torch.zeros_like(maps), None, None
    magnitude = gap.abs()
    size = magnitude.sum(dim=1).flatten(1)
    ratio = (magnitude / (ATOL + RTOL * end.abs())).amax(dim=1).flatten(1)
    sign = torch.where(ascending, 1.0, -1.0).to(start.dtype)[:, None]
    cap = size.sum(dim=1) / n_frag if n_frag else torch.full((n_rows,), float("inf"), device=device, dtype=start.dtype)
    active = ratio > 1
    per_pass = 0  # rows per forward + backward pass, set by the first step
    for step in range(guard + 1):
        g, logit, per_pass = _gradients(module, end - gap, target, per_pass)
        logits[rows, step] = logit
        if last is not None:
            acc += step_credit(quadrature, last, g, logit)
        done = ~active.any(dim=1) if step < guard else torch.ones_like(rows, dtype=torch.bool)
        if done.any():
            maps[rows[done]] = acc[done]
            steps[rows[done]] = step
            keep = ~done
            rows, gap, size, ratio, end, target, sign, cap, acc, active, g, logit = (
                t[keep] for t in (rows, gap, size, ratio, end, target, sign, cap, acc, active, g, logit)
            )
            avg = None if avg is None else avg[keep]
            if not len(rows):
                break
        avg = g if avg is None or not momentum else avg.lerp_(g, 1 - momentum)
        proj = (avg * gap).sum(dim=1).flatten(1)
        chosen = _top_k(torch.where(active, sign * proj, -math.inf), pixels_per_step) & active
        # IC: shrink the step so that its l1 length Σ_chosen Σ_c |gap| is at most cap.
        scale = (cap / (size * chosen).sum(dim=1)).clamp(max=1.0)
        moved = chosen * scale[:, None]  # fraction of each pixel's gap covered by this step
        factor = 1 - moved
        active = ratio * factor > 1
        factor = factor * active
        size, ratio = size * factor, ratio * factor
        remaining = gap * factor.reshape(len(rows), 1, height, width)
        # Σ_c g·Δx = proj · fraction moved (the snap of a finishing pixel's last ≤ isclose-tolerance
        # sliver is not credited by the left rule, as in the authors' code)
        last = _Step(left=(proj * moved).reshape(acc.shape), delta=gap - remaining if keep_raw else None,
                     grad=g if keep_raw else None, logit=logit)
        gap = remaining
    return PathRun(maps=maps, logits=logits, steps=steps)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp(min=torch.finfo(maps.dtype).tiny)
    return (maps - low[:, None, None]) / span[:, None, None]


def _unit_l1(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its l1 norm (an all-zero map stays zero)."""
    return maps / maps.abs().flatten(1).sum(dim=1).clamp(min=torch.finfo(maps.dtype).tiny)[:, None, None]


_REDUCE = {
    "sum": lambda a, b: a + b,
    "norm": lambda a, b: _minmax(a) + _minmax(b),
    "l1": lambda a, b: _unit_l1(a) + _unit_l1(b),
}
_PATH_NAMES = {"both": ("deletion", "insertion"), "deletion": ("deletion",), "insertion": ("insertion",)}


def _endpoints(
    model: ModelHandle, x: torch.Tensor, params: SampParams, background: torch.Tensor | None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(start, end) of each path: deletion x → baseline, insertion blur(x) → x."""
    table = {
        "deletion": lambda: (x, reference_input(model, x, params.baseline, background).expand_as(x)),
        "insertion": lambda: (blur(model, x, params.blur_kernel, params.blur_sigma), x),
    }
    return {name: table[name]() for name in _PATH_NAMES[params.paths]}


class Samp(Explainer[SampParams]):
    """SAMP / SAMP+MS / SAMP+IC / SAMP++ (see the module docstring). ``extras`` per path p
    (``deletion``/``insertion``), one row per sample: ``p_path_logits`` (B×(guard + 1) target
    logits along the path from start to end, NaN-padded), ``p_steps``, ``p_output_change``
    (f(x) − f(p's baseline)), ``p_completeness_gap`` (Σ map − output change) and
    ``p_relative_gap`` (|gap| / |output change|)."""

    spec = Spec(
        id="samp",
        title="SAMP++ (salient manipulation path)",
        paper="Zhang, Zheng, Zhou, Lu. Path Choice Matters for Clear Attribution in Path Methods. ICLR 2024",
        modalities=("image",),
        needs_gradients=True,
        description="Path attribution along greedy deletion and insertion paths that move the most salient "
        "pixels first, with the infinitesimal constraint and momentum (SAMP++). The loupe preset credits each "
        "step with its measured output change and min-max normalises the two path maps; paper is SAMP++ as "
        "published.",
    )
    Params = SampParams

    def resolve(self, model: ModelHandle, params: SampParams) -> SampParams:
        """``pixels_per_step`` 0 replaced by :func:`auto_pixels_per_step` of the model's image size."""
        if params.pixels_per_step or len(model.input_shape) != 3:
            return params
        height, width = model.input_shape[-2:]
        return replace(params, pixels_per_step=auto_pixels_per_step(height * width))

    def passes(self, model: ModelHandle, params: SampParams) -> Passes:
        """Per path, one forward + backward per step and one more at its end (the gradient that
        closes the last step, which also gives f(end)). Steps depend on the data: with
        m = ceil(P / pixels_per_step) for P ≤ H·W active pixels, m steps without IC (at most
        ceil(H·W / pixels_per_step)), between n_frag and n_frag + m with IC (spec §4)."""
        height, width = model.input_shape[-2:]
        pixels = self.resolve(model, params).pixels_per_step
        most = math.ceil(height * width / pixels)
        low, high = (params.n_frag, params.n_frag + most) if params.n_frag else (1, most)
        n_paths = len(_PATH_NAMES[params.paths])
        return Passes((n_paths * (low + 1), n_paths * (high + 1)), (n_paths * (low + 1), n_paths * (high + 1)))

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: SampParams,
                background: torch.Tensor | None = None) -> Result:
        target = check_inputs(self.spec.id, model, x, target)
        if x.dim() != 4:
            raise ValueError(f"samp: model {model.id!r} takes inputs of shape {tuple(x.shape[1:])}; SAMP needs C×H×W images")
        params = self.resolve(model, params)
        ends = _endpoints(model, x, params, background)
        names = list(ends)
        start = torch.cat([ends[n][0] for n in names])
        end = torch.cat([ends[n][1] for n in names])
        ascending = torch.tensor([n == "insertion" for n in names], device=x.device).repeat_interleave(len(x))
        run = manipulation_paths(
            model.module, start, end, target.repeat(len(names)), ascending, params.pixels_per_step, params.n_frag,
            params.momentum, params.quadrature,
        )
        rows = torch.arange(len(end), device=x.device)
        f_start, f_end = run.logits[:, 0], run.logits[rows, run.steps]
        sign = torch.where(ascending, 1.0, -1.0).to(run.maps.dtype)  # deletion maps estimate f(x) − f(baseline)
        maps = (run.maps * sign[:, None, None]).split(len(x))
        change = ((f_end - f_start) * sign).split(len(x))
        combined = maps[0] if len(maps) == 1 else _REDUCE[params.reduction](*maps)
        extras: dict[str, object] = {"pixels_per_step": params.pixels_per_step}
        for i, name in enumerate(names):
            extras.update(_path_extras(name, maps[i], change[i], run.logits.split(len(x))[i], run.steps.split(len(x))[i]))
        return Result(combined.detach().float().cpu().numpy(), extras=extras)


def _path_extras(
    name: str, maps: torch.Tensor, change: torch.Tensor, logits: torch.Tensor, steps: torch.Tensor
) -> dict[str, np.ndarray]:
    """Per-sample extras of one path (see :class:`Samp`)."""
    gap = maps.flatten(1).sum(dim=1) - change
    rel = gap.abs() / change.abs()
    return {
        f"{name}_path_logits": logits.float().cpu().numpy(),
        f"{name}_steps": steps.cpu().numpy(),
        f"{name}_output_change": change.float().cpu().numpy(),
        f"{name}_completeness_gap": gap.float().cpu().numpy(),
        f"{name}_relative_gap": rel.float().cpu().numpy(),
    }


EXPLAINERS = (Samp,)
