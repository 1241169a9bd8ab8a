"""Reference attribution methods wrapped from Captum (Kokhlikyan et al. 2020, arXiv 2009.07896).

These are the baselines every Loupe method is compared against. Each class adapts one Captum
attribution to the explainer contract (explainers/base.py):

* maps are raw and signed; image maps are B×H×W (gradient methods sum over channels; perturbation
  methods, which move all channels of a pixel together, give every channel the same value and
  report that value), tables are B×F;
* the model is never moved; baselines, noise and targets follow ``x``'s device and dtype;
* stochastic methods explain each sample under its own seed, derived from ``(params.seed, the
  sample's bytes)``, so results do not depend on batch size or on a sample's neighbours.

Captum is imported inside ``explain`` so that listing explainers stays cheap.

Input checks, baselines and per-sample seeding come from :mod:`explainers._common`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from explainers._common import BASELINE_HELP, BASELINES, check_inputs, reference_input, sample_seed, seeded
from explainers.base import Explainer, Params, Passes, Result, Spec, param
from model_registry.base import ModelHandle

_FORWARD_ELEMENTS = 2**22  # input values per forward pass (16 MB of float32); never changes results
_MAX_FORWARD_ROWS = 4096


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A leaf view of ``x`` that requires grad, so Captum neither flips the caller's tensor nor warns."""
    return x.detach().requires_grad_(True)


def _channel_sum(attr: torch.Tensor) -> np.ndarray:
    """B×C×H×W → B×H×W (sum over channels); tables pass through. float32 numpy."""
    out = attr.sum(dim=1) if attr.dim() == 4 else attr
    return out.detach().float().cpu().numpy()


def _pixel_value(attr: torch.Tensor) -> np.ndarray:
    """For perturbations that move all channels of a pixel together every channel holds the same
    value; report it once (mean over channels). Tables pass through."""
    out = attr.mean(dim=1) if attr.dim() == 4 else attr
    return out.detach().float().cpu().numpy()


def _rows_per_forward(x: torch.Tensor) -> int:
    """How many samples one forward pass takes: about :data:`_FORWARD_ELEMENTS` input values, at
    least one sample, at most :data:`_MAX_FORWARD_ROWS`. A speed knob only."""
    return max(1, min(_MAX_FORWARD_ROWS, _FORWARD_ELEMENTS // x[0].numel()))


def _noise_std(model: ModelHandle, fraction: float) -> float:
    """A noise level given as a fraction of the model's input value range."""
    low, high = model.value_range
    return float(fraction) * float(high - low)


def _auto_window(side: int) -> int:
    """Default occlusion window / ablation cell: max(2, side // 8), capped at the image side."""
    return min(side, max(2, side // 8))


def _window(model: ModelHandle, explainer_id: str, size: int) -> int:
    """``size`` or, when 0, the auto rule; a window larger than the image raises."""
    side = min(model.input_shape[-2:])
    window = size or _auto_window(side)
    if window > side:
        raise ValueError(f"{explainer_id}: window {window} exceeds the {side}-pixel image side of {model.id!r}")
    return window


def _per_sample(
    x: torch.Tensor,
    target: torch.Tensor,
    seed: int,
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``run(sample, target)`` on each 1-row slice under that sample's own seed, stacked."""
    outs = []
    for i in range(len(x)):
        with seeded(sample_seed(seed, x[i]), x.device):
            outs.append(run(x[i : i + 1], target[i : i + 1]))
    return torch.cat(outs)


# -- gradient methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegratedGradientsParams(Params):
    n_steps: int = param(32, low=1, high=1024, help="points on the straight path from baseline to input")
    method: str = param(
        "gausslegendre",
        choices=("gausslegendre", "riemann_middle", "riemann_left", "riemann_right"),
        help="quadrature rule for the path integral (Captum's approximation method)",
    )
    baseline: str = param("normalized_zero", choices=BASELINES, help=BASELINE_HELP)


class IntegratedGradients(Explainer[IntegratedGradientsParams]):
    """Integrated Gradients (Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017, eq. 1): (x − x') ⊙ ∫₀¹ ∇f(x' + α(x − x')) dα. ``extras["convergence_delta"]`` is
    the per-sample completeness gap Σ attributions − (f(x) − f(x')). Captum's ``riemann_trapezoid``
    is not offered: its weights sum to (n − 1)/n (captum 0.9), so it misses completeness by 1/n even
    on a linear model."""

    spec = Spec(
        id="integrated_gradients",
        title="Integrated Gradients",
        paper="Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017",
        modalities=("image", "tabular"),
        needs_gradients=True,
        description="Path integral of gradients on the straight line from a baseline to the input.",
    )
    Params = IntegratedGradientsParams

    def passes(self, model: ModelHandle, params: IntegratedGradientsParams) -> Passes:
        """n_steps path points (forward + backward) and f(x), f(x') for the convergence delta."""
        return Passes.exact(params.n_steps + 2, params.n_steps)

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: IntegratedGradientsParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import IntegratedGradients as CaptumIG

        target = check_inputs(self.spec.id, model, x, target)
        ref = reference_input(model, x, params.baseline, background)
        attr, delta = CaptumIG(model.module).attribute(
            x,
            baselines=ref,
            target=target,
            n_steps=params.n_steps,
            method=params.method,
            internal_batch_size=max(len(x), _rows_per_forward(x)),
            return_convergence_delta=True,
        )
        return Result(_channel_sum(attr), extras={"convergence_delta": delta.detach().float().cpu().numpy()})


@dataclass(frozen=True)
class SaliencyParams(Params):
    abs: bool = param(True, help="take |gradient| (Simonyan et al.); off keeps the sign")


class Saliency(Explainer[SaliencyParams]):
    """Vanilla gradient saliency (Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional
    Networks", ICLR workshop 2014, eq. 3): ∂f_target/∂x, absolute by default, summed over channels."""

    spec = Spec(
        id="saliency",
        title="Saliency (gradient)",
        paper="Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks. ICLR Workshop 2014",
        modalities=("image", "tabular"),
        needs_gradients=True,
        description="Gradient of the target logit with respect to the input.",
    )
    Params = SaliencyParams

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: SaliencyParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import Saliency as CaptumSaliency

        target = check_inputs(self.spec.id, model, x, target)
        attr = CaptumSaliency(model.module).attribute(_leaf(x), target=target, abs=params.abs)
        return Result(_channel_sum(attr))


@dataclass(frozen=True)
class InputXGradientParams(Params):
    """Input × Gradient has no settings."""


class InputXGradient(Explainer[InputXGradientParams]):
    """Input × Gradient (Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black Box",
    arXiv 1605.01713, 2016): x ⊙ ∂f_target/∂x, summed over channels."""

    spec = Spec(
        id="input_x_gradient",
        title="Input × Gradient",
        paper="Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box. arXiv 1605.01713, 2016",
        modalities=("image", "tabular"),
        needs_gradients=True,
        description="Input times the gradient of the target logit.",
    )
    Params = InputXGradientParams

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: InputXGradientParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import InputXGradient as CaptumIxG

        target = check_inputs(self.spec.id, model, x, target)
        return Result(_channel_sum(CaptumIxG(model.module).attribute(_leaf(x), target=target)))


@dataclass(frozen=True)
class GradCamParams(Params):
    relu: bool = param(True, help="ReLU on the weighted activation sum (eq. 2 of Selvaraju et al.); off keeps negative evidence")


class GradCam(Explainer[GradCamParams]):
    """Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, eqs. 1–2) on ``model.gradcam_layer``: channel weights
    are spatially averaged gradients; the weighted activation map is upsampled bilinearly to H×W."""

    spec = Spec(
        id="gradcam",
        title="Grad-CAM",
        paper="Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. ICCV 2017",
        modalities=("image",),
        needs_gradients=True,
        needs_layer=True,
        description="Gradient-weighted class activation map of a convolution layer, upsampled to the image.",
    )
    Params = GradCamParams

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: GradCamParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import LayerAttribution, LayerGradCam

        target = check_inputs(self.spec.id, model, x, target)
        layers = dict(model.module.named_modules())
        if model.gradcam_layer not in layers:
            raise ValueError(f"gradcam: model {model.id!r} has no layer named {model.gradcam_layer!r}")
        cam = LayerGradCam(model.module, layers[model.gradcam_layer]).attribute(
            _leaf(x), target=target, relu_attributions=params.relu
        )
        up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
        return Result(_channel_sum(up), extras={"layer": model.gradcam_layer})


# -- perturbation methods --------------------------------------------------------------------------


@dataclass(frozen=True)
class OcclusionParams(Params):
    window: int = param(0, low=0, high=4096, help="square occlusion window in pixels; 0 = auto: max(2, side // 8)")
    stride: int = param(0, low=0, high=4096, help="window step in pixels; 0 = auto: max(1, window // 2)")
    fill: str = param("normalized_zero", choices=BASELINES, help="value the window is filled with; " + BASELINE_HELP)


class Occlusion(Explainer[OcclusionParams]):
    """Occlusion (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
    2014, §4.2): slide a window over the image (all channels), fill it, and give each pixel the
    mean drop f(x) − f(x_occluded) over the windows covering it (Captum adds edge windows so every
    pixel is covered)."""

    spec = Spec(
        id="occlusion",
        title="Occlusion",
        paper="Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014",
        modalities=("image",),
        needs_gradients=False,
        description="Output drop when a sliding window is filled with a baseline value.",
    )
    Params = OcclusionParams

    def resolve(self, model: ModelHandle, params: OcclusionParams) -> OcclusionParams:
        """``window`` and ``stride`` 0 replaced by the auto rule's values for the model's image side."""
        window = _window(model, self.spec.id, params.window)
        return replace(params, window=window, stride=params.stride or max(1, window // 2))

    def passes(self, model: ModelHandle, params: OcclusionParams) -> Passes:
        """f(x) plus one forward per window position (Captum's count: ceil((side − window) / stride) + 1
        per axis)."""
        window = _window(model, self.spec.id, params.window)
        stride = params.stride or max(1, window // 2)
        height, width = model.input_shape[-2:]
        return Passes.exact(1 + math.prod(math.ceil((side - window) / stride) + 1 for side in (height, width)))

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: OcclusionParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import Occlusion as CaptumOcclusion

        target = check_inputs(self.spec.id, model, x, target)
        window = _window(model, self.spec.id, params.window)
        stride = params.stride or max(1, window // 2)
        channels = x.shape[1]
        attr = CaptumOcclusion(model.module).attribute(
            x,
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=reference_input(model, x, params.fill, background),
            target=target,
            perturbations_per_eval=max(1, _rows_per_forward(x) // len(x)),
        )
        return Result(_pixel_value(attr), extras={"window": window, "stride": stride})


@dataclass(frozen=True)
class FeatureAblationParams(Params):
    cell: int = param(0, low=0, high=4096, help="images: square grid cell ablated as one feature; 0 = auto: max(2, side // 8). Tables ablate one feature at a time")
    fill: str = param("normalized_zero", choices=BASELINES, help="value ablated features are set to; " + BASELINE_HELP)


def _grid_mask(height: int, width: int, cell: int, device: torch.device) -> torch.Tensor:
    """1×1×H×W integer mask numbering the ``cell``×``cell`` grid cells row by row."""
    rows = torch.arange(height, device=device) // cell
    cols = torch.arange(width, device=device) // cell
    n_cols = math.ceil(width / cell)
    return (rows[:, None] * n_cols + cols[None, :]).reshape(1, 1, height, width)


class FeatureAblation(Explainer[FeatureAblationParams]):
    """Feature ablation (the perturbation baseline of Zeiler & Fergus 2014, as in Captum): replace
    one feature group by the fill value and record f(x) − f(x_ablated) for every member. Groups are
    grid cells (all channels) for images and single features for tables."""

    spec = Spec(
        id="feature_ablation",
        title="Feature ablation",
        paper="Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014",
        modalities=("image", "tabular"),
        needs_gradients=False,
        description="Output drop when a grid cell (images) or a feature (tables) is set to a baseline value.",
    )
    Params = FeatureAblationParams

    def resolve(self, model: ModelHandle, params: FeatureAblationParams) -> FeatureAblationParams:
        """``cell`` 0 replaced by the auto rule's value for the model's image side (tables ignore it)."""
        if len(model.input_shape) == 1:
            return params
        return replace(params, cell=_window(model, self.spec.id, params.cell))

    def passes(self, model: ModelHandle, params: FeatureAblationParams) -> Passes:
        """f(x) plus one forward per feature group (grid cell for images, feature for tables)."""
        if len(model.input_shape) == 1:
            return Passes.exact(1 + model.input_shape[0])
        cell = _window(model, self.spec.id, params.cell)
        height, width = model.input_shape[-2:]
        return Passes.exact(1 + math.ceil(height / cell) * math.ceil(width / cell))

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: FeatureAblationParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import FeatureAblation as CaptumAblation

        target = check_inputs(self.spec.id, model, x, target)
        mask, extras = None, {}
        if x.dim() == 4:
            cell = _window(model, self.spec.id, params.cell)
            mask, extras = _grid_mask(x.shape[-2], x.shape[-1], cell, x.device), {"cell": cell}
        attr = CaptumAblation(model.module).attribute(
            x,
            baselines=reference_input(model, x, params.fill, background),
            target=target,
            feature_mask=mask,
            perturbations_per_eval=max(1, _rows_per_forward(x) // len(x)),
        )
        return Result(_pixel_value(attr), extras=extras)


# -- stochastic gradient methods -------------------------------------------------------------------


@dataclass(frozen=True)
class GradientShapParams(Params):
    n_samples: int = param(16, low=1, high=1024, help="random (baseline, path point) draws per sample")
    stdevs: float = param(0.0, low=0.0, high=1.0, help="Gaussian input noise, as a fraction of the model's value range")
    seed: int = param(0, low=0, high=2**31 - 1, help="random seed (combined with each sample's bytes)")


class GradientShap(Explainer[GradientShapParams]):
    """GradientSHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
    NeurIPS 2017; expected-gradients form as in Captum): E over baselines b ~ background and
    α ~ U(0,1) of (x − b) ⊙ ∇f(b + α(x − b)). Needs ``background``."""

    spec = Spec(
        id="gradient_shap",
        title="GradientSHAP",
        paper="Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017",
        modalities=("image", "tabular"),
        needs_gradients=True,
        stochastic=True,
        description="Expected gradients over random background baselines and random path points.",
    )
    Params = GradientShapParams

    def passes(self, model: ModelHandle, params: GradientShapParams) -> Passes:
        """One forward + backward per (baseline, path point) draw."""
        return Passes.exact(params.n_samples, params.n_samples)

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: GradientShapParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import GradientShap as CaptumGradientShap

        target = check_inputs(self.spec.id, model, x, target)
        if background is None or len(background) == 0:
            raise ValueError(f"gradient_shap needs background samples for model {model.id!r}; pass background=...")
        baselines = background.to(device=x.device, dtype=x.dtype)
        method = CaptumGradientShap(model.module)

        def one(sample: torch.Tensor, row_target: torch.Tensor) -> torch.Tensor:
            return method.attribute(
                sample,
                baselines=baselines,
                target=row_target,
                n_samples=params.n_samples,
                stdevs=_noise_std(model, params.stdevs),
            )

        return Result(_channel_sum(_per_sample(x, target, params.seed, one)))


@dataclass(frozen=True)
class SmoothGradParams(Params):
    nt_samples: int = param(16, low=1, high=1024, help="noisy copies averaged per sample")
    stdevs: float = param(0.15, low=0.0, high=1.0, help="noise standard deviation as a fraction of the model's value range (Smilkov et al. suggest 0.1–0.2)")
    nt_type: str = param("smoothgrad", choices=("smoothgrad", "smoothgrad_sq", "vargrad"), help="mean, mean of squares, or variance of the noisy gradients")
    abs: bool = param(True, help="average |gradient| (Captum's Saliency default); off averages signed gradients")
    seed: int = param(0, low=0, high=2**31 - 1, help="random seed (combined with each sample's bytes)")


class SmoothGrad(Explainer[SmoothGradParams]):
    """SmoothGrad (Smilkov, Thorat, Kim, Viégas, Wattenberg, "SmoothGrad: removing noise by adding
    noise", arXiv 1706.03825, 2017, eq. 3): the gradient saliency averaged over Gaussian-noised
    copies of the input (Captum NoiseTunnel over Saliency)."""

    spec = Spec(
        id="smoothgrad",
        title="SmoothGrad",
        paper="Smilkov, Thorat, Kim, Viégas, Wattenberg. SmoothGrad: removing noise by adding noise. arXiv 1706.03825, 2017",
        modalities=("image", "tabular"),
        needs_gradients=True,
        stochastic=True,
        description="Gradient saliency averaged over noisy copies of the input.",
    )
    Params = SmoothGradParams

    def passes(self, model: ModelHandle, params: SmoothGradParams) -> Passes:
        """One forward + backward per noisy copy."""
        return Passes.exact(params.nt_samples, params.nt_samples)

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: SmoothGradParams,
                background: torch.Tensor | None = None) -> Result:
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        target = check_inputs(self.spec.id, model, x, target)
        tunnel = NoiseTunnel(CaptumSaliency(model.module))

        def one(sample: torch.Tensor, row_target: torch.Tensor) -> torch.Tensor:
            return tunnel.attribute(
                sample,
                nt_type=params.nt_type,
                nt_samples=params.nt_samples,
                nt_samples_batch_size=params.nt_samples,
                stdevs=_noise_std(model, params.stdevs),
                target=row_target,
                abs=params.abs,
            )

        return Result(_channel_sum(_per_sample(x, target, params.seed, one)))


EXPLAINERS = (
    IntegratedGradients,
    Saliency,
    InputXGradient,
    GradCam,
    Occlusion,
    FeatureAblation,
    GradientShap,
    SmoothGrad,
)
