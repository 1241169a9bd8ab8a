"""Oracle tests for SAMP (explainers/samp.py, specs/samp.md §6) on tiny hand-built models, plus one
run through the public API, the cluster and the store."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainers import batching
from explainers.base import ParamError
from explainers.registry import get_explainer
from explainers.samp import Samp, SampParams, _top_k, auto_pixels_per_step
from model_registry.base import ModelHandle
from tests import toy_models as toys

ATOL = 1e-4
TARGET = torch.tensor([0, 1, 2])


def explain(model: ModelHandle, x: torch.Tensor, target=TARGET, background=None, **params):
    return Samp().explain(model, x, torch.as_tensor(target), SampParams(**params), background)


def reference_blur(x: torch.Tensor, klen: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Independent blur for the toys' Normalize(MEAN, STD): normalise, 2-D Gaussian with zero
    padding (one conv2d per channel), un-normalise (spec §2: the blur lives in normalised space)."""
    mean, std = torch.tensor(toys.MEAN).reshape(1, 3, 1, 1), torch.tensor(toys.STD).reshape(1, 3, 1, 1)
    r = torch.arange(klen, dtype=torch.float64) - klen // 2
    k1 = torch.exp(-(r**2) / (2 * sigma**2))
    k2 = (k1[:, None] * k1[None, :] / k1.sum() ** 2).float()
    z = F.conv2d((x - mean) / std, k2.expand(3, 1, klen, klen).contiguous(), padding=klen // 2, groups=3)
    return z * std + mean


def softplus_image_net(seed: int = 0) -> ModelHandle:
    """A smooth non-linear image model: Normalize → flatten → 32 softplus units → 3 logits."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = nn.Sequential(
            toys.Normalize(toys.MEAN, toys.STD), nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.Softplus(), nn.Linear(32, 3)
        ).eval()
    return ModelHandle("toy_softplus_image", module, "image", toys.IMAGE_SHAPE, ["a", "b", "c"],
                       normalizer_mean=list(toys.MEAN))


def active_pixels(start: torch.Tensor, end: torch.Tensor) -> np.ndarray:
    """Pixels that differ from their end value in some channel, per image."""
    return (~torch.isclose(start, end, rtol=1e-5, atol=1e-8)).any(dim=1).flatten(1).sum(dim=1).numpy()


# -- linear model: every path gives w · (end − start) exactly ------------------------------------


@pytest.mark.parametrize("pixels_per_step", [1, 7, 64])
@pytest.mark.parametrize(("n_frag", "momentum"), [(0, 0.0), (10, 0.0), (10, 0.5), (0, 0.5)])
def test_linear_model_single_paths_are_weight_times_displacement(pixels_per_step, n_frag, momentum):
    model = toys.linear_image()
    x = toys.random_images(3)
    w = toys.effective_image_weight(model)[TARGET]
    baselines = {"deletion": torch.tensor(toys.MEAN).reshape(1, 3, 1, 1), "insertion": reference_blur(x)}
    for path, baseline in baselines.items():
        res = explain(model, x, paths=path, pixels_per_step=pixels_per_step, n_frag=n_frag, momentum=momentum)
        expected = (w * (x - baseline)).sum(dim=1).numpy()
        np.testing.assert_allclose(res.attributions, expected, atol=ATOL, rtol=0)
        assert np.abs(res.extras[f"{path}_completeness_gap"]).max() < ATOL


@pytest.mark.parametrize(("baseline", "value"), [("zero", 0.0), ("background_mean", None)])
def test_deletion_baseline_choice(baseline, value):
    model = toys.linear_image()
    x, background = toys.random_images(3), toys.random_images(5, seed=3)
    end = background.mean(0) if value is None else torch.full((3, 8, 8), value)
    res = explain(model, x, background=background, paths="deletion", baseline=baseline, n_frag=5)
    w = toys.effective_image_weight(model)[TARGET]
    np.testing.assert_allclose(res.attributions, (w * (x - end)).sum(dim=1).numpy(), atol=ATOL, rtol=0)


def test_model_without_normaliser_deletes_to_black():
    model = toys.linear_image(normalize=False)
    x = toys.random_images(3)
    res = explain(model, x, paths="deletion", n_frag=0, momentum=0)
    w = toys.effective_image_weight(model)[TARGET]
    np.testing.assert_allclose(res.attributions, (w * x).sum(dim=1).numpy(), atol=ATOL, rtol=0)


def test_greedy_order_on_a_linear_model():
    """One pixel per step, no IC or momentum: each step's logit change is one pixel's w·(end − x),
    so the deletion curve's increments are those values in ascending order (steepest descent
    first) and the insertion curve's in descending order."""
    model = toys.linear_image()
    x = toys.random_images(1)
    w = toys.effective_image_weight(model)[0]
    res = explain(model, x, target=[0], pixels_per_step=1, n_frag=0, momentum=0)
    ends = {"deletion": (x, torch.tensor(toys.MEAN).reshape(1, 3, 1, 1)), "insertion": (reference_blur(x), x)}
    for path, (start, end) in ends.items():
        per_pixel = (w * (end - start)).sum(dim=1).flatten().numpy()
        curve = res.extras[f"{path}_path_logits"][0]
        increments = np.diff(curve[~np.isnan(curve)])
        expected = np.sort(per_pixel) if path == "deletion" else np.sort(per_pixel)[::-1]
        np.testing.assert_allclose(increments, expected, atol=ATOL)
        assert res.extras[f"{path}_steps"][0] == 64


# -- step counts (spec §4) ------------------------------------------------------------------------


@pytest.mark.parametrize(("pixels_per_step", "n_frag"), [(8, 0), (8, 8), (10, 30), (64, 5), (16, 40)])
def test_step_counts_within_bounds(pixels_per_step, n_frag):
    model = toys.tiny_convnet()
    x = toys.random_images(3, (3, 16, 16))
    x[0, :, :4] = torch.tensor(toys.MEAN).reshape(3, 1, 1)  # 64 pixels already at the deletion baseline
    res = explain(model, x, pixels_per_step=pixels_per_step, n_frag=n_frag)
    starts = {"deletion": (x, torch.tensor(toys.MEAN).reshape(1, 3, 1, 1).expand_as(x)), "insertion": (reference_blur(x), x)}
    for path, (start, end) in starts.items():
        m = np.ceil(active_pixels(start, end) / pixels_per_step)
        steps = res.extras[f"{path}_steps"]
        assert (np.maximum(n_frag, m) <= steps).all() and (steps <= n_frag + m).all(), (path, steps, m)
        if n_frag == 0:
            np.testing.assert_array_equal(steps, m)
    assert active_pixels(x[:1], torch.tensor(toys.MEAN).reshape(1, 3, 1, 1))[0] == 256 - 64


def test_pixels_at_their_end_value_get_nothing():
    model = toys.tiny_convnet()
    x = toys.random_images(1, (3, 16, 16))
    x[0, :, :4] = torch.tensor(toys.MEAN).reshape(3, 1, 1)
    res = explain(model, x, target=[0], paths="deletion", pixels_per_step=16)
    assert np.all(res.attributions[0, :4] == 0) and np.any(res.attributions[0, 4:] != 0)


# -- completeness on a smooth net ------------------------------------------------------------------


def test_infinitesimal_constraint_gives_completeness_on_a_smooth_net():
    """IC with n_frag = 200 keeps each path's left Riemann sum (the paper's credit) within 5 % of
    f(end) − f(start); without IC the same net misses by more (spec §2, "Completeness")."""
    model = softplus_image_net()
    x = toys.random_images(3)
    target = model.logits(x).argmax(1)
    fine = explain(model, x, target, n_frag=200, momentum=0, quadrature="left")
    coarse = explain(model, x, target, n_frag=0, momentum=0, quadrature="left")
    with torch.no_grad():
        logit = lambda z: model.module(z).gather(1, target[:, None])[:, 0].numpy()  # noqa: E731
        changes = {"deletion": logit(x) - logit(torch.tensor(toys.MEAN).reshape(1, 3, 1, 1).expand_as(x)),
                   "insertion": logit(x) - logit(reference_blur(x))}
    for path, change in changes.items():
        np.testing.assert_allclose(fine.extras[f"{path}_output_change"], change, rtol=1e-4, atol=1e-5)
        assert (fine.extras[f"{path}_relative_gap"] <= 0.05).all(), fine.extras[f"{path}_relative_gap"]
        assert fine.extras[f"{path}_relative_gap"].mean() < coarse.extras[f"{path}_relative_gap"].mean()
        gap = fine.extras[f"{path}_completeness_gap"]
        np.testing.assert_allclose(np.abs(gap) / np.abs(change), fine.extras[f"{path}_relative_gap"], rtol=1e-4)


# -- quadrature: oracles with a closed-form path integral ----------------------------------------------


class SeparableQuadratic(nn.Module):
    """logits_k = Σ_{c,h,w} a[k,c,h,w]·x² + b[k,c,h,w]·x: ∂f/∂x_i depends on x_i alone and is linear
    in it, so along any path that moves each coordinate monotonically in straight segments, pixel p's
    path integral is Σ_c a(end² − start²) + b(end − start), and the trapezoid rule is exact."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn((3, *toys.IMAGE_SHAPE), generator=gen))
        self.b = nn.Parameter(torch.randn((3, *toys.IMAGE_SHAPE), generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a * x[:, None] ** 2 + self.b * x[:, None]).flatten(2).sum(dim=2)


def quadratic_model() -> ModelHandle:
    return ModelHandle("toy_separable_quadratic", SeparableQuadratic().eval(), "image", toys.IMAGE_SHAPE, ["a", "b", "c"])


@pytest.mark.parametrize(("n_frag", "momentum"), [(0, 0.0), (10, 0.5), (30, 0.0)])
@pytest.mark.parametrize("quadrature", ["trapezoid", "measured"])
def test_trapezoid_credit_is_the_exact_path_integral_of_a_quadratic(quadrature, n_frag, momentum):
    from explainers.evaluation import blur

    model = quadratic_model()
    x = toys.random_images(3)
    a, b = model.module.a.detach()[TARGET], model.module.b.detach()[TARGET]
    integral = lambda start, end: (a * (end**2 - start**2) + b * (end - start)).sum(dim=1).numpy()  # noqa: E731
    expected = {"deletion": integral(torch.zeros_like(x), x), "insertion": integral(blur(model, x), x)}
    for path, exact in expected.items():
        res = explain(model, x, paths=path, pixels_per_step=5, n_frag=n_frag, momentum=momentum, quadrature=quadrature)
        np.testing.assert_allclose(res.attributions, exact, atol=1e-4, rtol=1e-4)
        assert np.abs(res.extras[f"{path}_relative_gap"]).max() < 1e-4
    left = explain(model, x, paths="deletion", pixels_per_step=5, n_frag=n_frag, momentum=momentum, quadrature="left")
    assert np.abs(left.attributions - expected["deletion"]).max() > 0.05, "the left rule is not exact here"


def test_measured_credit_adds_up_to_every_paths_output_change_on_a_smooth_net():
    """On a non-quadratic net the trapezoid rule is not exact; the measured credit spreads each
    step's residual over its pixels, so each path's map sums to f(end) − f(start) to rounding,
    and it stays close to the trapezoid credit pixel by pixel."""
    model = softplus_image_net()
    x = toys.random_images(3)
    target = model.logits(x).argmax(1)
    kw = {"pixels_per_step": 8, "n_frag": 0, "momentum": 0.5}
    measured, trapezoid = (explain(model, x, target, quadrature=q, **kw) for q in ("measured", "trapezoid"))
    for path in ("deletion", "insertion"):
        assert np.abs(measured.extras[f"{path}_relative_gap"]).max() < 1e-4
        assert np.abs(trapezoid.extras[f"{path}_relative_gap"]).max() > 1e-3
    for a, b in zip(measured.attributions, trapezoid.attributions):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


# -- batching, curves, reduction --------------------------------------------------------------------


def test_batched_equals_per_image():
    model = toys.tiny_convnet()
    x = toys.random_images(4, (3, 16, 16))
    x[1, :, :8] = torch.tensor(toys.MEAN).reshape(3, 1, 1)  # half of it already deleted: finishes early
    target = torch.tensor([0, 1, 2, 0])
    batched = explain(model, x, target, pixels_per_step=12, n_frag=10)
    singles = [explain(model, x[i : i + 1], target[i : i + 1], pixels_per_step=12, n_frag=10) for i in range(4)]
    np.testing.assert_allclose(np.concatenate([s.attributions for s in singles]), batched.attributions, rtol=5e-5, atol=1e-6)
    for name, value in batched.extras.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(np.concatenate([s.extras[name] for s in singles]), value, rtol=1e-5, atol=1e-6)
    assert len(set(batched.extras["deletion_steps"].tolist() + batched.extras["insertion_steps"].tolist())) > 1, \
        "rows should finish at different steps, so some leave the batch early"


def test_cpu_passes_of_a_few_rows_equal_one_pass(monkeypatch: pytest.MonkeyPatch):
    """Each step's forward + backward split into passes of at most 3 rows (the first row alone, as
    the CPU sizes them) gives what one pass over all 8 rows gives, and really ran in such passes."""
    model = toys.tiny_convnet()
    x = toys.random_images(4, (3, 16, 16))
    target = torch.tensor([0, 1, 2, 0])
    monkeypatch.delitem(batching.PASS_VALUES, "cpu")
    whole = explain(model, x, target, pixels_per_step=12, n_frag=10)
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 3 * batching.widest_output(model.module, x[:1]))
    seen: list[int] = []
    handle = model.module.register_forward_hook(lambda _m, inputs, _o: seen.append(len(inputs[0])))
    try:
        split = explain(model, x, target, pixels_per_step=12, n_frag=10)
    finally:
        handle.remove()
    assert seen[:4] == [1, 3, 2, 2] and max(seen) == 3  # step 1: 1 + 7 rows; f(end) comes with each path's last gradient
    np.testing.assert_allclose(split.attributions, whole.attributions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(split.extras["deletion_steps"], whole.extras["deletion_steps"])


def test_path_curves_run_from_start_to_end():
    model = toys.tiny_convnet()
    x = toys.random_images(3, (3, 16, 16))
    res = explain(model, x, pixels_per_step=16, n_frag=6)
    guard = 6 + math.ceil(256 / 16) + 5
    with torch.no_grad():
        logit = lambda z: model.module(z).gather(1, TARGET[:, None])[:, 0].numpy()  # noqa: E731
        ends = {"deletion": (x, torch.tensor(toys.MEAN).reshape(1, 3, 1, 1).expand_as(x)), "insertion": (reference_blur(x), x)}
        for path, (start, end) in ends.items():
            curve, steps = res.extras[f"{path}_path_logits"], res.extras[f"{path}_steps"]
            assert curve.shape == (3, guard + 1)
            np.testing.assert_allclose(curve[:, 0], logit(start), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(curve[np.arange(3), steps], logit(end), rtol=1e-4, atol=1e-5)
            assert all(np.isfinite(c[: s + 1]).all() and np.isnan(c[s + 1 :]).all() for c, s in zip(curve, steps))


@pytest.mark.parametrize("reduction", ["sum", "norm", "l1"])
def test_reduction_combines_the_two_path_maps(reduction):
    model = toys.tiny_convnet()
    x = toys.random_images(2, (3, 16, 16))
    target = torch.tensor([1, 2])
    both = explain(model, x, target, reduction=reduction, pixels_per_step=32, n_frag=4).attributions
    dele, ins = (explain(model, x, target, paths=p, pixels_per_step=32, n_frag=4).attributions for p in ("deletion", "insertion"))

    def minmax(a):
        low, high = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
        return (a - low) / (high - low)

    def unit_l1(a):
        return a / np.abs(a).sum(axis=(1, 2), keepdims=True)

    expected = {"sum": dele + ins, "norm": minmax(dele) + minmax(ins), "l1": unit_l1(dele) + unit_l1(ins)}[reduction]
    np.testing.assert_allclose(both, expected, rtol=1e-5, atol=1e-6)


def test_dtype_and_device_follow_the_input():
    model = toys.linear_image()
    model.module.double()
    x = toys.random_images(3).double()
    res = explain(model, x, paths="deletion", n_frag=3)
    w = toys.effective_image_weight(model)[TARGET].double()
    np.testing.assert_allclose(res.attributions, (w * (x - torch.tensor(toys.MEAN, dtype=torch.float64).reshape(1, 3, 1, 1))).sum(1).numpy(), atol=1e-5)
    assert next(model.module.parameters()).dtype == torch.float64


# -- selection, defaults, parameters ---------------------------------------------------------------


def test_top_k_is_exact_with_lower_index_first_on_ties():
    score = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    got = _top_k(score, 2)
    assert got.tolist() == [[False, True, True, False, False, False], [True, True, False, False, False, False]]
    gen = torch.Generator().manual_seed(0)
    ties = torch.randint(0, 4, (5, 50), generator=gen).float()
    order = torch.argsort(ties, dim=1, descending=True, stable=True)[:, :7]
    expected = torch.zeros_like(ties, dtype=torch.bool).scatter_(1, order, True)
    assert torch.equal(_top_k(ties, 7), expected) and (_top_k(ties, 7).sum(1) == 7).all()


def test_auto_pixels_per_step_matches_the_papers_settings():
    assert auto_pixels_per_step(28 * 28) == 10 and auto_pixels_per_step(32 * 32) == 10
    assert auto_pixels_per_step(224 * 224) == 224 * 16
    assert auto_pixels_per_step(64 * 64) == 81 and auto_pixels_per_step(4) == 4


def test_params_paper_preset_is_samp_plus_plus_and_bad_values_are_named():
    p = SampParams(preset="paper")
    assert (p.n_frag, p.momentum, p.paths, p.reduction, p.quadrature) == (50, 0.5, "both", "sum", "left")
    assert SampParams().preset == "loupe" and SampParams().quadrature == "measured"
    with pytest.raises(ParamError, match="blur_kernel must be odd"):
        SampParams(blur_kernel=10)
    with pytest.raises(ParamError, match="paths"):
        SampParams.from_dict({"paths": "sideways"})
    with pytest.raises(ParamError, match="momentum"):
        SampParams(momentum=1.0)


def test_registered_and_image_only():
    samp = get_explainer("samp")
    assert isinstance(samp, Samp) and samp.spec.needs_gradients
    assert "tabular" in samp.unsupported_reason(toys.linear_table())
    with pytest.raises(ValueError, match="out of range"):
        explain(toys.linear_image(), toys.random_images(3), target=[0, 1, 7])


# -- through the API, the cluster and the store ------------------------------------------------------


def _check_round_trip(params: dict | None) -> None:
    import loupe

    first = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:4", explainer="samp", params=params)
    again = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:4", explainer="samp", params=params)
    assert first.attributions.shape == (4, 64, 64) and not first.cached and again.cached
    np.testing.assert_array_equal(again.attributions, first.attributions)
    for path in ("deletion", "insertion"):
        curves, steps = again.extras[f"{path}_path_logits"], again.extras[f"{path}_steps"]
        assert curves.shape[0] == 4 and np.isfinite(curves[np.arange(4), steps]).all()
        np.testing.assert_array_equal(curves, first.extras[f"{path}_path_logits"])
    assert {"deletion_auc", "insertion_auc", "pointing_hit"} <= set(again.metrics[0])


def test_api_runs_through_the_store_with_small_params(fresh_home):
    _check_round_trip({"pixels_per_step": 1024, "n_frag": 3})


@pytest.mark.slow
def test_api_runs_through_the_store_with_defaults(fresh_home):
    _check_round_trip(None)
