"""OSA-DAS: occlusion sensitivity with augmentation subspaces (Valois, Niinuma, Fukui, "Occlusion
Sensitivity Analysis with Augmentation Subspace Perturbation in Deep Feature Space", WACV 2024,
arXiv 2311.15022). Our reconstruction of /work/shared/specs/osadas.md §2 (the paper's full text was
not available; the details below are the spec's design choices):

* N augmentation views with fixed parameters drawn from ``seed`` (:func:`sample_views`); view 1 is
  the identity. The same views serve every sample and every window (common random numbers, §2.5).
* For the clean image and for every window q (side ``patch``, step ``stride``, the last window
  touching the image edge): occlude first, then apply the N views; the N output vectors (logits,
  probabilities or penultimate features), each scaled to unit L2 norm, span an uncentred subspace
  (§2.3: eigendecomposition of the N×N Gram matrix in float64; the top ``subspace_dim`` directions
  with singular value > 1e-6·σ₁).
* Similarity S = ‖U₀ᵀU_q‖²_F / min(k₀, k_q), the mean cos² of the canonical angles (§2.4); the
  window's score is 1 − S ("orthogonal degree").
* Heatmap: each pixel gets the mean score of the windows covering it (§2.5). Raw, unsigned and
  class-agnostic; ``target`` is only validated.

Optional gradient pre-selection (§2.7a): one backward pass of |∂ top logit / ∂x|, summed per window;
only the top ``preselect`` fraction of windows is evaluated and the others get the lowest evaluated
score of their sample.

Cost: N·(1 + P) forward passes per sample (P windows), run under ``torch.inference_mode`` in chunks
whose occluded × augmented images are built on ``x``'s device.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainers._common import check_inputs, classifier_layer, hooks
from explainers.base import Explainer, Params, Passes, Result, Spec, param, preset_choice, preset_param
from explainers.batching import measured_pass, pass_slices
from model_registry.base import ModelHandle

AUG_FIELDS = (
    "flip", "angle", "crop_scale", "crop_ratio", "crop_u", "crop_v",
    "brightness", "contrast", "saturation", "hue", "blur_sigma", "blur_size",
)
"""Columns of one view's parameters (see :func:`sample_views` for their ranges)."""
_IDENTITY = (0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0)
_COL = {name: i for i, name in enumerate(AUG_FIELDS)}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey weights (as torchvision's rgb_to_grayscale)
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
CHUNK_ELEMENTS = {"cpu": 2**21, "cuda": 2**25}
"""Occluded × augmented images are built this many values at a time, by device type."""
_DEFAULT_CHUNK = 2**23
RANK_TOL = 1e-6
"""Singular values ≤ RANK_TOL·σ₁ do not count towards a subspace's rank (spec §6.4)."""


# -- augmentation views ----------------------------------------------------------------------------


def _flip(rng: np.random.Generator, row: np.ndarray) -> None:
    row[_COL["flip"]] = 1.0


def _rotate(rng: np.random.Generator, row: np.ndarray) -> None:
    row[_COL["angle"]] = rng.uniform(-15.0, 15.0)


def _crop(rng: np.random.Generator, row: np.ndarray) -> None:
    row[_COL["crop_scale"]] = rng.uniform(0.8, 1.0)
    row[_COL["crop_ratio"]] = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    row[_COL["crop_u"]], row[_COL["crop_v"]] = rng.uniform(0.0, 1.0, size=2)


def _jitter(rng: np.random.Generator, row: np.ndarray) -> None:
    row[[_COL["brightness"], _COL["contrast"], _COL["saturation"]]] = rng.uniform(0.7, 1.3, size=3)
    row[_COL["hue"]] = rng.uniform(-0.05, 0.05)


def _gaussian_blur(rng: np.random.Generator, row: np.ndarray) -> None:
    row[_COL["blur_size"]] = rng.choice((5, 7, 9))
    row[_COL["blur_sigma"]] = rng.uniform(0.1, 2.0)


_OPS: tuple[Callable[[np.random.Generator, np.ndarray], None], ...] = (_flip, _rotate, _crop, _jitter, _gaussian_blur)


def sample_views(n_views: int, seed: int) -> np.ndarray:
    """N×len(AUG_FIELDS) view parameters drawn from ``seed`` (spec §2.2): row 0 is the identity; each
    other row composes 1–2 distinct ops out of horizontal flip, rotation ±15°, resized crop (area
    0.8–1, aspect 3/4–4/3), colour jitter (brightness, contrast, saturation ×0.7–1.3, hue ±0.05)
    and Gaussian blur (size 5/7/9, σ 0.1–2)."""
    rng = np.random.default_rng(seed)
    views = np.tile(np.asarray(_IDENTITY), (n_views, 1))
    for row in views[1:]:
        for op in rng.choice(len(_OPS), size=rng.integers(1, 3), replace=False):
            _OPS[op](rng, row)
    return views


def _view_theta(row: np.ndarray, height: int, width: int) -> np.ndarray:
    """2×3 ``affine_grid`` matrix (output → input, normalised coordinates) of flip ∘ rotation ∘ crop."""
    scale, ratio = row[_COL["crop_scale"]], row[_COL["crop_ratio"]]
    w, h = min(1.0, math.sqrt(scale * ratio)), min(1.0, math.sqrt(scale / ratio))
    crop = np.array([[w, 0, (1 - w) * (2 * row[_COL["crop_u"]] - 1)], [0, h, (1 - h) * (2 * row[_COL["crop_v"]] - 1)], [0, 0, 1]])
    a = math.radians(row[_COL["angle"]])
    to_px, to_norm = np.diag([width / 2, height / 2, 1.0]), np.diag([2 / width, 2 / height, 1.0])
    rot = to_norm @ np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]) @ to_px
    flip = np.diag([-1.0 if row[_COL["flip"]] else 1.0, 1.0, 1.0])
    return (flip @ rot @ crop)[:2]


def _colour_map(row: np.ndarray, channels: int) -> tuple[np.ndarray, float]:
    """(M, a) with jitter(z) = M z + a·mean(grey(z))·1 before clamping: brightness b·z, contrast
    c·z + (1 − c)·mean grey, saturation s·z + (1 − s)·grey, hue as a rotation of the YIQ chroma
    plane by 2π·hue (a linear stand-in for torchvision's HSV shift). Saturation and hue act on
    3-channel images only. a = (1 − c)·b because saturation and hue keep grey colours."""
    b, c = row[_COL["brightness"]], row[_COL["contrast"]]
    m = np.eye(channels) * b * c
    if channels == 3:
        s, t = row[_COL["saturation"]], 2 * math.pi * row[_COL["hue"]]
        sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA)
        yiq = np.asarray(_YIQ)
        hue = np.linalg.inv(yiq) @ np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]]) @ yiq
        m = hue @ sat @ m
    return m, (1 - c) * b


def _blur_kernel(row: np.ndarray, max_size: int) -> np.ndarray:
    """1-D normalised Gaussian of the view's size and σ, zero-padded to ``max_size`` taps."""
    size, sigma = int(row[_COL["blur_size"]]), row[_COL["blur_sigma"]]
    r = np.arange(size) - size // 2
    k = np.exp(-(r**2) / (2 * sigma**2))
    pad = (max_size - size) // 2
    return np.pad(k / k.sum(), (pad, pad))


@dataclass(frozen=True)
class Views:
    """The N views prepared for one image size on one device: which views use each stage and that
    stage's per-view tensors. Stages run in the order geometry → colour → blur."""

    n: int
    geo: list[int]
    grid: torch.Tensor  # len(geo)×H×W×2 sampling grids
    colour: list[int]
    matrix: torch.Tensor  # len(colour)×C×C
    offset: torch.Tensor  # len(colour)
    blur: list[int]
    kernel: torch.Tensor  # len(blur)×K
    fill: torch.Tensor  # 1×C×1×1 colour of the area a warp uncovers
    low: float
    high: float

    @classmethod
    def build(cls, views: np.ndarray, x: torch.Tensor, fill: torch.Tensor, value_range: tuple[float, float]) -> "Views":
        """Views for images shaped like ``x`` (B×C×H×W), on its device and dtype."""
        identity = np.asarray(_IDENTITY)
        channels, height, width = x.shape[1:]
        changed = lambda names: [j for j, row in enumerate(views) if any(row[_COL[n]] != identity[_COL[n]] for n in names)]  # noqa: E731
        geo = changed(("flip", "angle", "crop_scale", "crop_ratio"))
        colour = changed(("brightness", "contrast", "saturation", "hue") if channels == 3 else ("brightness", "contrast"))
        blur = [j for j in changed(("blur_sigma",)) if views[j, _COL["blur_sigma"]] > 0]
        max_size = min(2 * min(height, width) - 1, max([int(views[j, _COL["blur_size"]]) for j in blur], default=1))
        maps = [_colour_map(views[j], channels) for j in colour]
        as_t = lambda a, shape: torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(shape), dtype=x.dtype, device=x.device)  # noqa: E731
        return cls(
            n=len(views),
            geo=geo,
            grid=_grids([_view_theta(views[j], height, width) for j in geo], x),
            colour=colour,
            matrix=as_t([m for m, _ in maps], (len(colour), channels, channels)),
            offset=as_t([a for _, a in maps], (len(colour),)),
            blur=blur,
            kernel=as_t([_blur_kernel(_clip_size(views[j], max_size), max_size) for j in blur], (len(blur), max_size)),
            fill=fill.to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1).expand(1, channels, 1, 1),
            low=float(value_range[0]),
            high=float(value_range[1]),
        )


def _grids(thetas: list[np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` sampling grids (V×H×W×2) of V 2×3 matrices for images shaped like ``x``."""
    c, h, w = x.shape[1:]
    if not thetas:
        return torch.empty(0, h, w, 2, dtype=x.dtype, device=x.device)
    theta = torch.as_tensor(np.stack(thetas), dtype=x.dtype, device=x.device)
    return F.affine_grid(theta, [len(thetas), c, h, w], align_corners=False)


def _clip_size(row: np.ndarray, max_size: int) -> np.ndarray:
    """The view with its blur size capped at ``max_size`` (reflect padding needs pad < image side)."""
    out = row.copy()
    out[_COL["blur_size"]] = min(out[_COL["blur_size"]], max_size)
    return out


def augment(x: torch.Tensor, views: Views) -> torch.Tensor:
    """All N views of every image: Q×C×H×W → Q×N×C×H×W. Each stage runs once over the views that
    use it; the identity view is an exact copy."""
    q, c, h, w = x.shape
    out = x[:, None].repeat(1, views.n, 1, 1, 1)
    if views.geo:
        # Images are folded into channels so that each view's grid is sampled once for all of them.
        g = len(views.geo)
        moved = (x - views.fill).reshape(1, q * c, h, w).expand(g, q * c, h, w)
        warped = F.grid_sample(moved, views.grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[:, views.geo] = warped.reshape(g, q, c, h, w).transpose(0, 1) + views.fill
    if views.colour:
        z = out[:, views.colour]
        luma = torch.tensor(_LUMA if c == 3 else [1.0 / c] * c, dtype=x.dtype, device=x.device)
        grey = torch.einsum("qvchw,c->qv", z, luma) / (h * w)
        mixed = sum(views.matrix[None, :, :, j, None, None] * z[:, :, j, None] for j in range(c))
        out[:, views.colour] = (mixed + (views.offset * grey)[..., None, None, None]).clamp(views.low, views.high)
    if views.blur:
        out[:, views.blur] = _separable_blur(out[:, views.blur], views.kernel)
    return out


def _separable_blur(z: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-view Gaussian blur of Q×V×C×H×W with V kernels of K taps (reflect padding)."""
    q, v, c, h, w = z.shape
    k = kernel.shape[1]
    weight = kernel[:, None, :].expand(v, c, k).reshape(v * c, 1, k)
    flat = F.pad(z.reshape(q, v * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    flat = F.conv2d(flat, weight[..., None], groups=v * c)
    flat = F.conv2d(flat, weight[:, :, None, :], groups=v * c)
    return flat.reshape(q, v, c, h, w)


# -- windows, fills and features -------------------------------------------------------------------


def window_starts(side: int, patch: int, stride: int) -> list[int]:
    """0, stride, 2·stride, … ≤ side − patch, plus side − patch when the step skips it."""
    starts = list(range(0, side - patch + 1, stride))
    return starts if starts[-1] == side - patch else [*starts, side - patch]


def auto_window(side: int) -> tuple[int, int]:
    """Default (patch, stride): patch = max(2, round(side / 7)) (32 px at 224, the spec's default),
    capped at the side; stride = max(1, patch // 2)."""
    patch = min(side, max(2, round(side / 7)))
    return patch, max(1, patch // 2)


def _mean_colour(model: ModelHandle, x: torch.Tensor) -> torch.Tensor:
    """The input that is zero after the model's normalisation (its mean colour, the ImageNet mean
    for ImageNet models); mid-grey of the value range for a model without a normaliser."""
    if model.normalizer_mean is None:
        return torch.full((x.shape[1],), sum(model.value_range) / 2, dtype=x.dtype, device=x.device)
    return model.baseline_value().to(device=x.device, dtype=x.dtype).reshape(-1).expand(x.shape[1])


def _fill_black(model: ModelHandle, x: torch.Tensor) -> torch.Tensor:
    return torch.full((1, x.shape[1], 1, 1), float(model.value_range[0]), dtype=x.dtype, device=x.device)


def _fill_blur(model: ModelHandle, x: torch.Tensor) -> torch.Tensor:
    from explainers.evaluation import blur

    return blur(model, x)


_FILLS: dict[str, Callable[[ModelHandle, torch.Tensor], torch.Tensor]] = {
    "mean": lambda model, x: _mean_colour(model, x).reshape(1, -1, 1, 1),
    "black": _fill_black,
    "blur": _fill_blur,
}


def _classifier_input(model: ModelHandle) -> nn.Linear:
    """The layer whose input is the penultimate feature (:func:`explainers._common.classifier_layer`)."""
    layer = classifier_layer(model.module)
    if layer is None:
        raise ValueError(f"osa_das: feature 'penultimate' needs an nn.Linear classifier layer; model {model.id!r} has none")
    return layer


@contextlib.contextmanager
def _penultimate(model: ModelHandle) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """A feature function returning the input of the classifier layer; the hook is removed on exit."""
    seen: list[torch.Tensor] = []

    def features(rows: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model.module(rows)
        return seen[-1].flatten(1)

    layer = _classifier_input(model)
    with hooks([layer.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))]):
        yield features


@contextlib.contextmanager
def _output(model: ModelHandle, transform: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    yield lambda rows: transform(model.module(rows))


FEATURES: dict[str, Callable[[ModelHandle], contextlib.AbstractContextManager]] = {
    "logits": lambda model: _output(model, lambda out: out),
    "probs": lambda model: _output(model, lambda out: torch.softmax(out.float(), dim=1)),
    "penultimate": _penultimate,
}


# -- subspaces -------------------------------------------------------------------------------------


def subspaces(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncentred subspaces of J sets of N output vectors (J×N×d): each vector is scaled to unit L2
    norm, the N×N Gram matrix is eigendecomposed in float64, and U = Fᵀ A diag(σ)⁻¹ keeps the top
    min(k, N, ⌊d/2⌋) directions: two k-dimensional subspaces of ℝᵈ share at least 2k − d
    dimensions, so for k > d/2 the similarity could not fall below (2k − d)/k (this matters for
    models with few classes only). Returns (U: J×d×k' float64 with columns past the rank set to zero,
    rank: J numerical rank clipped to k)."""
    f = features.double()
    f = f / f.norm(dim=2, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    eigval, eigvec = torch.linalg.eigh(f @ f.transpose(1, 2))  # ascending
    k = min(k, f.shape[1], max(1, f.shape[2] // 2))
    sigma = eigval.flip(1)[:, :k].clamp_min(0).sqrt()
    keep = sigma > RANK_TOL * sigma[:, :1]
    basis = f.transpose(1, 2) @ eigvec.flip(2)[:, :, :k] / torch.where(keep, sigma, 1.0)[:, None, :]
    return basis * keep[:, None, :], keep.sum(dim=1)


def similarity(u0: torch.Tensor, r0: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Mean cos² of the canonical angles, ‖U₀ᵀU‖²_F / min(k₀, k), clamped to [0, 1]; 1 when both
    subspaces are empty (zero outputs) and 0 when only one is. Shapes broadcast over the leading dim."""
    overlap = (u0.transpose(-1, -2) @ u).square().sum(dim=(-1, -2))
    smaller = torch.minimum(r0, r)
    s = overlap / smaller.clamp_min(1)
    return torch.where(smaller > 0, s.clamp(0, 1), (r0 == r).to(s.dtype))


# -- the explainer ---------------------------------------------------------------------------------


def auto_subspace_dim(d: int) -> int:
    """Subspace dimension k for d-dimensional output vectors when ``subspace_dim`` is 0: one direction
    per decade of d, k = min(3, max(1, ⌊log₁₀ d⌋)): the paper's k = 3 at 1,000 logits, 2 from 100 and
    1 below 100, where a second direction is spanned only by the views' small differences and is not
    identifiable (README, "SAMP and OSA-DAS": k = 3, clipped to 2, on the 4 logits of shapes_cnn let
    background windows reach the score's ceiling)."""
    return min(3, max(1, int(math.floor(math.log10(max(d, 1)) + 1e-9))))


def feature_dim(model: ModelHandle, feature: str) -> int:
    """Dimension d of the output vectors: the classes for logits and probabilities, the classifier
    layer's input for penultimate features."""
    return _classifier_input(model).in_features if feature == "penultimate" else len(model.classes)


PAPER = {"subspace_dim": 3, "feature": "logits"}
"""The spec's reconstruction of the paper's settings (specs/osadas.md §3: k = 3 on the logits)."""
LOUPE = {"subspace_dim": 0, "feature": "logits"}
"""Loupe's default: k by output dimension (:func:`auto_subspace_dim`), so k = 3 at 1,000 logits and
k = 1 on few-class models (README, "SAMP and OSA-DAS")."""


@dataclass(frozen=True)
class OsaDasParams(Params):
    presets: ClassVar[dict] = {"loupe": LOUPE, "paper": PAPER}
    preset: str = preset_choice()
    n_views: int = param(8, low=1, high=64, help="augmentation views per set (view 1 is the identity)")
    subspace_dim: int = preset_param(
        low=0, high=64, help="subspace dimension k; 0 = auto by output dimension d: min(3, max(1, ⌊log10 d⌋)) "
        "(3 at 1,000 logits, 1 below 100); clipped to n_views and to half the output dimension")
    patch: int = param(0, low=0, high=4096, help="square occluder side in pixels; 0 = auto: max(2, round(side / 7)) (32 px at 224)")
    stride: int = param(0, low=0, high=4096, help="window step in pixels; 0 = auto: max(1, patch // 2)")
    occlusion: str = param("mean", choices=tuple(_FILLS), help="occluder: mean = the model's mean colour (zero after its normalisation), black, or blur = the blurred image")
    feature: str = preset_param(choices=tuple(FEATURES), help="output vector spanning the subspaces: logits, softmax probabilities, or the classifier layer's input")
    seed: int = param(0, low=0, high=2**31 - 1, help="seed of the augmentation parameters (the same views for every sample)")
    preselect: float = param(1.0, low=0.01, high=1.0, help="fraction of windows evaluated, chosen by one gradient pass (|∂ top logit/∂x| summed per window); 1 = all")


@dataclass(frozen=True)
class _Grid:
    """Window positions and the per-pixel coverage they imply."""

    tops: torch.Tensor
    lefts: torch.Tensor
    rows: torch.Tensor  # gh×H indicator of the rows each window row covers
    cols: torch.Tensor  # gw×W

    @classmethod
    def build(cls, height: int, width: int, patch: int, stride: int, device: torch.device) -> "_Grid":
        tops = torch.tensor(window_starts(height, patch, stride), device=device)
        lefts = torch.tensor(window_starts(width, patch, stride), device=device)
        span = lambda starts, n: ((torch.arange(n, device=device) >= starts[:, None]) & (torch.arange(n, device=device) < starts[:, None] + patch)).double()  # noqa: E731
        return cls(tops, lefts, span(tops, height), span(lefts, width))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.tops), len(self.lefts)

    def heatmap(self, scores: torch.Tensor) -> torch.Tensor:
        """B×gh×gw window scores → B×H×W mean over the windows covering each pixel."""
        cover = self.rows.sum(dim=0)[:, None] * self.cols.sum(dim=0)[None, :]
        return self.rows.T @ scores @ self.cols / cover

    def pooled(self, saliency: torch.Tensor) -> torch.Tensor:
        """B×H×W → B×gh×gw sums over each window."""
        return self.rows @ saliency.double() @ self.cols.T


class OsaDas(Explainer[OsaDasParams]):
    """OSA-DAS occlusion map (see the module docstring; spec §2)."""

    spec = Spec(
        id="osa_das",
        title="OSA-DAS occlusion",
        paper="Valois, Niinuma, Fukui. Occlusion Sensitivity Analysis with Augmentation Subspace Perturbation in Deep Feature Space. WACV 2024",
        modalities=("image",),
        needs_gradients=False,
        class_agnostic=True,
        description="How far occluding each window rotates the subspace spanned by the outputs of augmented views.",
    )
    Params = OsaDasParams

    def resolve(self, model: ModelHandle, params: OsaDasParams) -> OsaDasParams:
        """Auto values replaced by the values used on ``model``: the window (``patch``, ``stride``)
        from the image side, k from the output dimension, and k clipped to n_views and to half the
        output dimension (:func:`subspaces`). A window that does not fit raises ValueError."""
        patch, stride = _window(params, min(model.input_shape[-2:]))
        d = feature_dim(model, params.feature)
        k = min(params.subspace_dim or auto_subspace_dim(d), params.n_views, max(1, d // 2))
        return replace(params, patch=patch, stride=stride, subspace_dim=k)

    def passes(self, model: ModelHandle, params: OsaDasParams) -> Passes:
        """N·(1 + P') forwards for P' evaluated windows, plus one forward + backward for the
        gradient pre-selection when ``preselect`` < 1 (module docstring, "Cost")."""
        height, width = model.input_shape[-2:]
        patch, stride = _window(params, min(height, width))
        n_windows = len(window_starts(height, patch, stride)) * len(window_starts(width, patch, stride))
        if params.preselect >= 1.0:
            return Passes.exact(params.n_views * (1 + n_windows))
        chosen = max(1, math.ceil(params.preselect * n_windows))
        return Passes.exact(params.n_views * (1 + chosen) + 1, 1)

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: OsaDasParams,
                background: torch.Tensor | None = None) -> Result:
        check_inputs(self.spec.id, model, x, target)
        params = self.resolve(model, params)
        height, width = x.shape[-2:]
        patch, stride = params.patch, params.stride
        grid = _Grid.build(height, width, patch, stride, x.device)
        table = sample_views(params.n_views, params.seed)
        views = Views.build(table, x, _mean_colour(model, x), model.value_range)
        fill = _FILLS[params.occlusion](model, x)
        chosen = _preselect(model, x, grid, params.preselect)  # B×P' window indices
        with FEATURES[params.feature](model) as features, torch.inference_mode():
            out = _run_jobs(model.module, features, x, fill, views, grid, chosen, patch)  # B×(1+P')×N×d
            scores, rank = _window_scores(out, chosen, grid, params.subspace_dim)
            heat = grid.heatmap(scores)
            evaluated = torch.zeros_like(scores, dtype=torch.bool).flatten(1).scatter_(1, chosen, True)
        b = len(x)
        return Result(
            heat.float().cpu().numpy(),
            extras={
                "patch_scores": scores.float().cpu().numpy(),
                "evaluated_windows": evaluated.reshape(scores.shape).cpu().numpy(),
                "reference_rank": rank.cpu().numpy(),
                "augmentations": np.broadcast_to(table, (b, *table.shape)).copy(),
                "augmentation_fields": ",".join(AUG_FIELDS),
                "patch": patch,
                "stride": stride,
                "forwards_per_sample": params.n_views * (1 + chosen.shape[1]),
            },
        )


def _window_scores(out: torch.Tensor, chosen: torch.Tensor, grid: "_Grid", k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B×gh×gw scores 1 − S(U₀, U_q), B reference ranks) from output vectors B×(1+P')×N×d."""
    basis, rank = subspaces(out.flatten(0, 1), k)
    basis, rank = basis.unflatten(0, out.shape[:2]), rank.unflatten(0, out.shape[:2])
    sim = similarity(basis[:, :1], rank[:, :1], basis[:, 1:], rank[:, 1:])
    scores = _scatter_scores(1 - sim, chosen, grid.shape[0] * grid.shape[1])
    return scores.reshape(len(out), *grid.shape), rank[:, 0]


def _window(params: OsaDasParams, side: int) -> tuple[int, int]:
    """(patch, stride) from the params or the auto rule; a patch larger than the image, or a stride
    larger than the patch, raises."""
    auto_patch, _ = auto_window(side)
    patch = params.patch or auto_patch
    if patch > side:
        raise ValueError(f"osa_das: patch {patch} exceeds the {side}-pixel image side")
    stride = params.stride or max(1, patch // 2)
    if stride > patch:
        raise ValueError(f"osa_das: stride {stride} exceeds patch {patch}, which would leave pixels no window covers")
    return patch, stride


def _preselect(model: ModelHandle, x: torch.Tensor, grid: _Grid, fraction: float) -> torch.Tensor:
    """B×P' indices (ascending) of the windows to evaluate: all of them when ``fraction`` is 1, else
    the top ceil(fraction·P) by window sums of |∂ top logit / ∂x| summed over channels (spec §2.7a)."""
    n_windows = grid.shape[0] * grid.shape[1]
    if fraction >= 1.0:
        return torch.arange(n_windows, device=x.device).expand(len(x), n_windows)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        logits = model.module(leaf)
        (grad,) = torch.autograd.grad(logits.max(dim=1).values.sum(), leaf)
    pooled = grid.pooled(grad.abs().sum(dim=1)).reshape(len(x), -1)
    keep = max(1, math.ceil(fraction * n_windows))
    top = torch.argsort(pooled, dim=1, descending=True, stable=True)[:, :keep]
    return top.sort(dim=1).values


def _scatter_scores(scores: torch.Tensor, chosen: torch.Tensor, n_windows: int) -> torch.Tensor:
    """B×P' scores of the chosen windows → B×P, the others set to their sample's lowest score."""
    full = scores.min(dim=1, keepdim=True).values.expand(-1, n_windows).clone()
    return full.scatter_(1, chosen, scores)


@torch.inference_mode()
def _run_jobs(
    module: nn.Module,
    features: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    fill: torch.Tensor,
    views: Views,
    grid: _Grid,
    chosen: torch.Tensor,
    patch: int,
) -> torch.Tensor:
    """Output vectors of every (sample, clean or occluded image, view): B×(1+P')×N×d. The first row
    (the first sample's clean image under the identity view, i.e. ``x[:1]`` itself) goes alone and
    its pass sizes the others (:func:`explainers.batching.measured_pass`: on the CPU so that
    activations stay in cache, elsewhere a whole chunk per pass).

    Jobs run sample-major: job j = sample j // (1+P'), image j % (1+P') (0 = clean, i = window
    chosen[i−1]); chunks of jobs are occluded, augmented and forwarded together, a chunk holding
    :data:`CHUNK_ELEMENTS` values or at least one pass's rows."""
    b, per = len(x), 1 + chosen.shape[1]
    height, width = x.shape[-2:]
    gw = grid.shape[1]
    # A clean job gets a window starting past the image, so it occludes nothing.
    tops = torch.cat([torch.full((b, 1), height, device=x.device), grid.tops[chosen // gw]], dim=1).reshape(-1)
    lefts = torch.cat([torch.full((b, 1), width, device=x.device), grid.lefts[chosen % gw]], dim=1).reshape(-1)
    sample = torch.arange(b, device=x.device).repeat_interleave(per)
    per_sample_fill = fill.shape[-2:] == x.shape[-2:]
    chunk = max(1, CHUNK_ELEMENTS.get(x.device.type, _DEFAULT_CHUNK) // (views.n * x[0].numel()))
    first, micro = measured_pass(module, features, x[:1], chunk * views.n)
    chunk = max(chunk, -(-micro // views.n))
    rr, cc = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    outs = []
    for start in range(0, b * per, chunk):
        s, t, left = sample[start : start + chunk], tops[start : start + chunk], lefts[start : start + chunk]
        inside = ((rr >= t[:, None]) & (rr < t[:, None] + patch))[:, :, None] & ((cc >= left[:, None]) & (cc < left[:, None] + patch))[:, None, :]
        occluded = torch.where(inside[:, None], fill[s] if per_sample_fill else fill, x[s])
        rows = augment(occluded, views).flatten(0, 1)
        parts = [] if start else [first]  # the first row's output came from the sizing pass
        parts += [features(rows[part]) for part in pass_slices(len(rows), micro, 0 if start else 1)]
        outs.append(torch.cat(parts).reshape(len(s), views.n, -1))
    return torch.cat(outs).reshape(b, per, views.n, -1)


EXPLAINERS = (OsaDas,)
