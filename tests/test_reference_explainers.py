"""Oracle tests for the Captum and SHAP reference explainers: tiny hand-built models whose correct
attributions are known in closed form (tests/toy_models.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers import captum_ref, shap_ref
from explainers.base import ParamError
from explainers.registry import get_explainer
from model_registry.base import ModelHandle
from tests import toy_models as toys

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:shap")

ATOL = 1e-4
REFERENCE_IDS = [cls.spec.id for cls in (*captum_ref.EXPLAINERS, *shap_ref.EXPLAINERS)]


def explain(explainer_id: str, model: ModelHandle, x: torch.Tensor, target, background=None, **params) -> np.ndarray:
    e = get_explainer(explainer_id)
    return e.explain(model, x, torch.as_tensor(target), e.Params(**params), background).attributions


def baseline_for(choice: str, model: ModelHandle, background: torch.Tensor) -> torch.Tensor:
    """Hand-written expected baseline per choice (independent of captum_ref.reference_input)."""
    table = {
        "normalized_zero": torch.tensor(toys.MEAN).reshape(3, 1, 1) if model.task == "image" else torch.tensor(toys.TABLE_MEAN),
        "zero": torch.zeros(()),
        "background_mean": background.mean(0),
    }
    return table[choice]


# -- gradient methods on linear models ----------------------------------------------------------


@pytest.mark.parametrize("choice", captum_ref.BASELINES)
def test_integrated_gradients_on_linear_image_is_weight_times_displacement(choice: str) -> None:
    model = toys.linear_image()
    x, bg = toys.random_images(3), toys.random_images(5, seed=1)
    target = [0, 2, 1]
    w = toys.effective_image_weight(model)[target]
    expected = (w * (x - baseline_for(choice, model, bg))).sum(1).numpy()
    e = get_explainer("integrated_gradients")
    result = e.explain(model, x, torch.tensor(target), e.Params(baseline=choice, n_steps=8), bg)
    assert result.attributions.shape == (3, 8, 8) and result.attributions.dtype == np.float32
    np.testing.assert_allclose(result.attributions, expected, atol=ATOL)
    np.testing.assert_allclose(result.extras["convergence_delta"], 0.0, atol=ATOL)


@pytest.mark.parametrize("choice", captum_ref.BASELINES)
def test_integrated_gradients_on_linear_table(choice: str) -> None:
    model = toys.linear_table()
    x, bg = toys.random_table(4), toys.random_table(6, seed=2)
    target = [0, 1, 1, 0]
    expected = (toys.effective_table_weight(model)[target] * (x - baseline_for(choice, model, bg))).numpy()
    got = explain("integrated_gradients", model, x, target, bg, baseline=choice, n_steps=4, method="riemann_middle")
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_input_x_gradient_on_linear_is_weight_times_input() -> None:
    model = toys.linear_image()
    x = toys.random_images(2)
    w = toys.effective_image_weight(model)[[1, 0]]
    np.testing.assert_allclose(explain("input_x_gradient", model, x, [1, 0]), (w * x).sum(1).numpy(), atol=ATOL)


def test_saliency_on_linear_is_absolute_weight_summed_over_channels() -> None:
    model = toys.linear_image()
    x = toys.random_images(2)
    w = toys.effective_image_weight(model)[[2, 2]]
    np.testing.assert_allclose(explain("saliency", model, x, [2, 2]), w.abs().sum(1).numpy(), atol=ATOL)
    np.testing.assert_allclose(explain("saliency", model, x, [2, 2], abs=False), w.sum(1).numpy(), atol=ATOL)


def test_smoothgrad_on_linear_equals_saliency_because_the_gradient_is_constant() -> None:
    model = toys.linear_image()
    x = toys.random_images(2)
    expected = toys.effective_image_weight(model)[[0, 1]].abs().sum(1).numpy()
    np.testing.assert_allclose(explain("smoothgrad", model, x, [0, 1], nt_samples=5, stdevs=0.3), expected, atol=ATOL)


def test_gradient_shap_with_one_background_sample_is_weight_times_displacement() -> None:
    model = toys.linear_image()
    x, bg = toys.random_images(2), toys.random_images(1, seed=3)
    expected = (toys.effective_image_weight(model)[[0, 1]] * (x - bg)).sum(1).numpy()
    np.testing.assert_allclose(explain("gradient_shap", model, x, [0, 1], bg, n_samples=7), expected, atol=ATOL)


# -- Grad-CAM on a hand-built conv net ------------------------------------------------------------


class _SumConvHead(nn.Module):
    """conv (1×1, weights 1: A = Σ_c x_c) → global mean → linear head v (no bias)."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.head = nn.Linear(1, len(v), bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.head.weight.copy_(v.reshape(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_matches_the_closed_form_on_a_sum_conv_head() -> None:
    """y_k = v_k · mean(A) ⇒ α_k = v_k / HW and Grad-CAM = ReLU(α_k · A) (Selvaraju et al. eq. 1–2)."""
    v = torch.tensor([2.0, -3.0])
    model = ModelHandle("sum_conv", _SumConvHead(v).eval(), "image", (3, 8, 8), ["a", "b"], gradcam_layer="conv")
    x = toys.random_images(2)
    a = x.sum(1)
    got = explain("gradcam", model, x, [0, 1])
    np.testing.assert_allclose(got[0], (2.0 / 64 * a[0]).numpy(), atol=1e-6)
    np.testing.assert_allclose(got[1], 0.0, atol=1e-7)  # negative evidence removed by the ReLU
    np.testing.assert_allclose(explain("gradcam", model, x, [0, 1], relu=False)[1], (-3.0 / 64 * a[1]).numpy(), atol=1e-6)


def test_gradcam_upsamples_a_coarse_layer_to_the_image_size() -> None:
    model = toys.tiny_convnet()
    strided = nn.Sequential(model.module.features, nn.AvgPool2d(2))
    coarse = ModelHandle("coarse", _Pooled(strided, model.module.head).eval(), "image", (3, 16, 16), model.classes, gradcam_layer="body.1")
    got = explain("gradcam", coarse, toys.random_images(2, (3, 16, 16)), [0, 1])
    assert got.shape == (2, 16, 16)


class _Pooled(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_gradcam_names_a_missing_layer() -> None:
    model = toys.tiny_convnet()
    model.gradcam_layer = "features.nope"
    with pytest.raises(ValueError, match="features.nope"):
        explain("gradcam", model, toys.random_images(1, (3, 16, 16)), [0])


# -- perturbation methods on linear models ------------------------------------------------------


def occlusion_by_hand(w: torch.Tensor, x: torch.Tensor, fill: torch.Tensor, window: int, stride: int) -> np.ndarray:
    """Mean over covering windows of Σ_window w·(x − fill); windows tile the image exactly here."""
    contrib = (w * (x - fill)).sum(1)  # B×H×W
    b, h, wd = contrib.shape
    total, count = torch.zeros_like(contrib), torch.zeros(h, wd)
    for r in range(0, h - window + 1, stride):
        for c in range(0, wd - window + 1, stride):
            drop = contrib[:, r : r + window, c : c + window].sum(dim=(1, 2))
            total[:, r : r + window, c : c + window] += drop[:, None, None]
            count[r : r + window, c : c + window] += 1
    return (total / count).numpy()


@pytest.mark.parametrize(("window", "stride"), [(2, 2), (3, 1)])
@pytest.mark.parametrize("choice", ["normalized_zero", "zero"])
def test_occlusion_on_linear_is_the_window_drop(window: int, stride: int, choice: str) -> None:
    model = toys.linear_image()
    x = toys.random_images(2)
    w = toys.effective_image_weight(model)[[1, 2]]
    expected = occlusion_by_hand(w, x, baseline_for(choice, model, x), window, stride)
    got = explain("occlusion", model, x, [1, 2], window=window, stride=stride, fill=choice)
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_occlusion_auto_window_rule_and_oversized_window() -> None:
    model = toys.tiny_convnet()  # 16×16: window max(2, 16 // 8) = 2, stride 1
    e = get_explainer("occlusion")
    result = e.explain(model, toys.random_images(1, (3, 16, 16)), torch.tensor([0]), e.Params())
    assert (result.extras["window"], result.extras["stride"]) == (2, 1)
    with pytest.raises(ValueError, match="window 17 exceeds"):
        e.explain(model, toys.random_images(1, (3, 16, 16)), torch.tensor([0]), e.Params(window=17))


@pytest.mark.parametrize("cell", [2, 3])
def test_feature_ablation_on_linear_image_is_the_cell_drop(cell: int) -> None:
    """Cell 3 on 8×8 leaves ragged 2-pixel cells at the right and bottom edges."""
    model = toys.linear_image()
    x = toys.random_images(2)
    contrib = (toys.effective_image_weight(model)[[0, 1]] * (x - torch.tensor(toys.MEAN).reshape(3, 1, 1))).sum(1)
    expected = torch.zeros_like(contrib)
    for r in range(0, 8, cell):
        for c in range(0, 8, cell):
            expected[:, r : r + cell, c : c + cell] = contrib[:, r : r + cell, c : c + cell].sum(dim=(1, 2))[:, None, None]
    np.testing.assert_allclose(explain("feature_ablation", model, x, [0, 1], cell=cell), expected.numpy(), atol=ATOL)


def test_feature_ablation_on_linear_table_is_one_feature_each() -> None:
    model = toys.linear_table()
    x = toys.random_table(3)
    expected = toys.effective_table_weight(model)[[1, 0, 1]] * (x - torch.tensor(toys.TABLE_MEAN))
    np.testing.assert_allclose(explain("feature_ablation", model, x, [1, 0, 1]), expected.numpy(), atol=ATOL)


# -- constant and one-region models -------------------------------------------------------------


CONSTANT_CASES = [
    (builder, explainer_id)
    for builder in (toys.constant_image, toys.constant_table)
    for explainer_id in REFERENCE_IDS
    if get_explainer(explainer_id).unsupported_reason(builder()) is None
]


def test_constant_cases_cover_every_reference_explainer() -> None:
    assert {explainer_id for _, explainer_id in CONSTANT_CASES} == set(REFERENCE_IDS)


@pytest.mark.parametrize(("builder", "explainer_id"), CONSTANT_CASES)
def test_constant_model_gets_all_zero_attributions(builder, explainer_id: str) -> None:
    model = builder()
    e = get_explainer(explainer_id)
    x = toys.random_images(2) if model.task == "image" else toys.random_table(2)
    bg = toys.random_images(4, seed=5) if model.task == "image" else toys.random_table(4, seed=5)
    got = e.explain(model, x, torch.tensor([1, 0]), e.Params(), bg).attributions
    assert got.shape == ((2, 8, 8) if model.task == "image" else (2, 6))
    np.testing.assert_array_equal(got, 0.0)


@pytest.mark.parametrize("explainer_id", ["integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "smoothgrad"])
def test_one_region_model_gradient_methods_put_everything_in_the_region(explainer_id: str) -> None:
    model = toys.one_region()
    x = toys.random_images(2) + 0.1
    got = explain(explainer_id, model, x, [0, 1], toys.random_images(3, seed=4))
    inside = toys.region_mask().numpy()
    np.testing.assert_array_equal(got[:, ~inside], 0.0)
    assert (np.abs(got[:, inside]) > 0).all()


@pytest.mark.parametrize("explainer_id", ["occlusion", "feature_ablation"])
def test_one_region_model_perturbation_maps_peak_in_the_region(explainer_id: str) -> None:
    model = toys.one_region()
    got = explain(explainer_id, model, toys.random_images(2) + 0.1, [0, 0], fill="zero")
    inside = toys.region_mask().numpy()
    for one in got:
        assert inside.reshape(-1)[np.argmax(one)]
        assert one[inside].max() > one[~inside].max()


# -- SHAP ---------------------------------------------------------------------------------------


def test_shap_on_a_linear_probability_black_box_is_weight_times_centred_input() -> None:
    """p₁ = ½ + w·x with an independent background: φ = w ⊙ (x − E[background]) exactly for class
    1 and its negative for class 0 (all 2^5 coalitions enumerated)."""
    model = toys.linear_probability_table()
    x, bg = toys.random_table(3, 5, scale=0.9), toys.random_table(8, 5, seed=7, scale=0.9)
    w = torch.tensor(toys.PROBABILITY_WEIGHT, dtype=torch.float64)
    phi = (w * (x.double() - bg.double().mean(0))).numpy()
    e = get_explainer("shap")
    result = e.explain(model, x, torch.tensor([1, 0, 1]), e.Params(), bg)
    np.testing.assert_allclose(result.attributions, phi * np.array([[1], [-1], [1]]), atol=1e-6)
    base = model.predict_proba(bg)[:, [1, 0, 1]].mean(0)
    np.testing.assert_allclose(result.extras["base_value"], base, atol=1e-6)


class _SparseLinearProbability(nn.Module):
    """p₁ = ½ + w·x over 200 features, only 3 of them with non-zero weight."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(200)
        w[[7, 50, 199]] = torch.tensor([0.2, -0.15, 0.1])
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = 0.5 + x @ self.w
        return torch.stack([torch.log1p(-u), torch.log(u)], dim=1)


def test_shap_feature_selection_finds_the_informative_features_of_a_wide_table() -> None:
    """With more features than max_features, LARS keeps the informative ones; the values stay exact."""
    model = ModelHandle("sparse", _SparseLinearProbability().eval(), "tabular", (200,), ["a", "b"], value_range=(-1.0, 1.0))
    x, bg = toys.random_table(2, 200, scale=0.9), toys.random_table(8, 200, seed=9, scale=0.9)
    got = explain("shap", model, x, [1, 1], bg, nsamples=256, max_features=10)
    expected = (model.module.w * (x - bg.mean(0))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_shap_uses_only_the_first_n_background_rows() -> None:
    model = toys.linear_probability_table()
    x, bg = toys.random_table(1, 5, scale=0.9), toys.random_table(8, 5, seed=7, scale=0.9)
    got = explain("shap", model, x, [1], bg, n_background=2)
    expected = (torch.tensor(toys.PROBABILITY_WEIGHT) * (x - bg[:2].mean(0))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


# -- stochastic methods: seeds ------------------------------------------------------------------


@pytest.mark.parametrize("explainer_id", ["smoothgrad", "gradient_shap"])
def test_seed_changes_stochastic_maps_and_restores_global_rng(explainer_id: str) -> None:
    model = toys.tiny_convnet()
    x, bg = toys.random_images(1, (3, 16, 16)), toys.random_images(4, (3, 16, 16), seed=2)
    torch.manual_seed(123)
    np.random.seed(123)
    a = explain(explainer_id, model, x, [0], bg, seed=0, stdevs=0.1)
    after_torch, after_np = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert (after_torch, after_np) == (torch.rand(1), np.random.rand())
    b = explain(explainer_id, model, x, [0], bg, seed=1, stdevs=0.1)
    assert not np.allclose(a, b)


# -- errors -------------------------------------------------------------------------------------


def test_background_mean_without_background_says_so() -> None:
    with pytest.raises(ValueError, match="background_mean.*background samples.*toy_linear_image"):
        explain("integrated_gradients", toys.linear_image(), toys.random_images(1), [0], baseline="background_mean")


@pytest.mark.parametrize("explainer_id", ["gradient_shap", "shap"])
def test_background_methods_without_background_say_so(explainer_id: str) -> None:
    model = toys.linear_table()
    with pytest.raises(ValueError, match=f"{explainer_id} needs background samples"):
        explain(explainer_id, model, toys.random_table(1), [0])


def test_out_of_range_target_names_the_class_and_model() -> None:
    with pytest.raises(ValueError, match=r"saliency: target class\(es\) \[3\] out of range for model 'toy_linear_image' with 3 classes"):
        explain("saliency", toys.linear_image(), toys.random_images(2), [0, 3])


def test_wrong_input_shape_and_target_length_are_named() -> None:
    with pytest.raises(ValueError, match=r"expects samples of shape \(3, 8, 8\)"):
        explain("saliency", toys.linear_image(), toys.random_images(2, (3, 4, 4)), [0, 1])
    with pytest.raises(ValueError, match="target has 1 entries for a batch of 2"):
        explain("saliency", toys.linear_image(), toys.random_images(2), [0])


def test_params_are_validated_with_named_fields() -> None:
    with pytest.raises(ParamError, match="baseline must be one of"):
        get_explainer("integrated_gradients").Params(baseline="grey")
    with pytest.raises(ParamError, match="n_steps must be ≥ 1"):
        get_explainer("integrated_gradients").Params(n_steps=0)
    with pytest.raises(ParamError, match="unknown parameter"):
        get_explainer("smoothgrad").Params.from_dict({"noise": 1})


def test_every_reference_param_has_help_text() -> None:
    for explainer_id in REFERENCE_IDS:
        for field in get_explainer(explainer_id).Params.schema():
            assert field["help"], f"{explainer_id}.{field['name']} has no help text"
