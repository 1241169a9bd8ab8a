"""Metric tests against hand-computed values (explainers/evaluation.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from explainers import batching
from explainers import evaluation as ev
from explainers.base import Explainer, Params, Result, Spec
from explainers.registry import get_explainer
from tests import toy_models as toys

# A 1×2×2 linear model, no normalisation (substrate = black = 0):
# logit₀ = 4a + 3b + 2c + 1d for the image [[a, b], [c, d]], logit₁ = 1.
W0 = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])


def tiny_linear():
    weight = torch.stack([W0, torch.zeros_like(W0)])
    return toys.linear_image(normalize=False, weight=weight)


X = torch.ones(1, 1, 2, 2)  # f(x) = 10
MAP = np.array([[[1.0, 4.0], [3.0, 2.0]]])  # order: b (3), c (2), d (1), a (4)


def blur_factor(ksig: float = 1.0) -> float:
    """One axis of a 3-tap Gaussian on a 2-pixel row of ones with zero padding: centre + one side."""
    side = math.exp(-1 / (2 * ksig**2))
    return (1 + side) / (1 + 2 * side)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


# -- deletion / insertion -----------------------------------------------------------------------


def test_deletion_and_insertion_curves_by_hand_on_a_2x2_linear_image() -> None:
    c = ev.curves(tiny_linear(), X, MAP, [0], step_per=1, klen=3, ksig=1.0)
    assert c.step_per == 1 and c.n_forward == 10
    np.testing.assert_allclose(c.fractions, [0, 0.25, 0.5, 0.75, 1])
    deletion_logits = np.array([10, 7, 5, 4, 0.0])
    np.testing.assert_allclose(c.deletion[0], deletion_logits / 10, atol=1e-6)
    s2 = blur_factor() ** 2
    insertion_logits = 10 * s2 + (1 - s2) * np.cumsum([0, 3, 2, 1, 4])
    np.testing.assert_allclose(c.insertion[0], insertion_logits / 10, atol=1e-6)
    np.testing.assert_allclose(c.deletion_prob[0], sigmoid(deletion_logits - 1), atol=1e-6)
    np.testing.assert_allclose(c.insertion_prob[0], sigmoid(insertion_logits - 1), atol=1e-6)

    aucs = ev.curve_aucs(c)
    np.testing.assert_allclose(aucs["deletion_auc"], [2.6 / 5], atol=1e-6)
    np.testing.assert_allclose(aucs["insertion_auc"], [insertion_logits.mean() / 10], atol=1e-6)
    p = sigmoid(deletion_logits - 1)
    trapezoid = 0.25 * (p[0] / 2 + p[1] + p[2] + p[3] + p[4] / 2)
    np.testing.assert_allclose(aucs["deletion_auc_prob"], [trapezoid], atol=1e-6)


def test_partial_last_step_and_point_count() -> None:
    """U = 4, step_per = 3: n = ceil(4/3) = 2 steps, 3 points; the last step moves one unit."""
    c = ev.curves(tiny_linear(), X, MAP, [0], step_per=3, klen=3, ksig=1.0)
    np.testing.assert_allclose(c.fractions, [0, 0.75, 1])
    np.testing.assert_allclose(c.deletion[0], [1, 0.4, 0], atol=1e-6)  # b, c, d gone leaves 4a
    assert ev.curve_aucs(c)["deletion_auc"][0] == pytest.approx(1.4 / 3, abs=1e-6)


def test_deletion_auc_can_be_negative_and_insertion_above_one() -> None:
    """Deleting a unit with negative weight first raises the logit above f(x): normalised scores
    are not clipped (specs/samp.md §3)."""
    weight = torch.stack([torch.tensor([[[4.0, -3.0], [2.0, 1.0]]]), torch.zeros(1, 2, 2)])
    model = toys.linear_image(normalize=False, weight=weight)  # f(x) = 4
    c = ev.curves(model, X, np.array([[[0.0, 5.0], [1.0, 2.0]]]), [0], step_per=1, klen=3, ksig=1.0)
    np.testing.assert_allclose(c.deletion[0], np.array([4, 7, 6, 4, 0]) / 4, atol=1e-6)
    assert ev.curve_aucs(c)["deletion_auc"][0] > 1
    worst = ev.curves(model, X, np.array([[[9.0, 0.0], [8.0, 7.0]]]), [0], step_per=1, klen=3, ksig=1.0)
    np.testing.assert_allclose(worst.deletion[0], np.array([4, 0, -2, -3, 0]) / 4, atol=1e-6)
    assert ev.curve_aucs(worst)["deletion_auc"][0] < 0


def test_table_curves_by_hand_use_the_normaliser_mean_as_substrate() -> None:
    model = toys.linear_table()
    x = toys.random_table(2)
    maps = np.array([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]], dtype=np.float32)
    target = [0, 1]
    w = toys.effective_table_weight(model)[target].numpy()
    centred = x.numpy() - np.array(toys.TABLE_MEAN)
    c = ev.curves(model, x, maps, target, step_per=2)
    for b in range(2):
        order = np.argsort(-maps[b], kind="stable")
        kept = [np.setdiff1d(np.arange(6), order[: 2 * t]) for t in range(4)]
        deletion = np.array([(w[b] * centred[b])[k].sum() for k in kept])
        insertion = np.array([(w[b] * centred[b])[order[: 2 * t]].sum() for t in range(4)])
        np.testing.assert_allclose(c.deletion[b], deletion / deletion[0], atol=1e-5)
        np.testing.assert_allclose(c.insertion[b], insertion / insertion[-1], atol=1e-5)


def test_default_step_rule_gives_at_most_33_points() -> None:
    model = toys.tiny_convnet()  # 16×16 = 256 units → step_per 8, 33 points
    x = toys.random_images(2, (3, 16, 16))
    c = ev.curves(model, x, np.random.default_rng(0).random((2, 16, 16)), [0, 1])
    assert (c.step_per, c.deletion.shape, c.n_forward) == (8, (2, 33), 132)
    assert ev.default_step(100) == 4 and math.ceil(100 / 4) + 1 == 26


@pytest.mark.parametrize("block_elements", [ev.BLOCK_ELEMENTS, 5 * 768, 40 * 768])
def test_curves_do_not_depend_on_batch_size_or_block_size(block_elements: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 5 rows cut one sample's 33 steps into runs; 40 rows hold one whole curve."""
    model = toys.tiny_convnet()
    x = toys.random_images(3, (3, 16, 16))
    maps = np.random.default_rng(1).standard_normal((3, 16, 16))
    b = ev.curves(model, x, maps, [0, 1, 2], batch_size=256)
    monkeypatch.setattr(ev, "BLOCK_ELEMENTS", block_elements)
    a = ev.curves(model, x, maps, [0, 1, 2], batch_size=3)
    for name in ("deletion", "insertion", "deletion_prob", "insertion_prob"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)


def test_cpu_passes_of_a_few_rows_equal_one_pass_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU each block runs in passes sized from its first row (here at most 3 rows); the
    curves equal those of one pass per block, and the passes really were that small."""
    model = toys.tiny_convnet()
    x = toys.random_images(2, (3, 16, 16))
    maps = np.random.default_rng(2).standard_normal((2, 16, 16))
    monkeypatch.delitem(batching.PASS_VALUES, "cpu")
    whole = ev.curves(model, x, maps, [0, 1], batch_size=64)
    monkeypatch.setitem(batching.PASS_VALUES, "cpu", 3 * batching.widest_output(model.module, x[:1]))
    seen: list[int] = []
    handle = model.module.register_forward_hook(lambda _m, inputs, _o: seen.append(len(inputs[0])))
    try:
        split = ev.curves(model, x, maps, [0, 1], batch_size=64)
    finally:
        handle.remove()
    assert seen[0] == 1 and max(seen) == 3 and sum(seen) == split.n_forward
    for name in ("deletion", "insertion", "deletion_prob", "insertion_prob"):
        np.testing.assert_allclose(getattr(split, name), getattr(whole, name), rtol=1e-5, atol=1e-6)


def test_long_curves_agree_with_coarser_steps() -> None:
    """step_per 1 on 16×16 gives 257 points (the int32 step index path); every second point is
    the step_per 2 curve."""
    model = toys.tiny_convnet()
    x = toys.random_images(2, (3, 16, 16))
    maps = np.random.default_rng(2).standard_normal((2, 16, 16))
    fine = ev.curves(model, x, maps, [1, 2], step_per=1, batch_size=100)
    coarse = ev.curves(model, x, maps, [1, 2], step_per=2)
    assert fine.deletion.shape == (2, 257) and coarse.deletion.shape == (2, 129)
    np.testing.assert_allclose(fine.deletion[:, ::2], coarse.deletion, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fine.insertion_prob[:, ::2], coarse.insertion_prob, rtol=1e-5, atol=1e-6)


def test_a_faithful_map_beats_its_reverse() -> None:
    model = toys.linear_image()
    x = toys.random_images(4)
    target = [0, 1, 2, 0]
    good = get_explainer("input_x_gradient").explain(model, x, torch.tensor(target), get_explainer("input_x_gradient").Params()).attributions
    good_aucs = ev.curve_aucs(ev.curves(model, x, good, target))
    bad_aucs = ev.curve_aucs(ev.curves(model, x, -good, target))
    assert (good_aucs["deletion_auc_prob"] < bad_aucs["deletion_auc_prob"]).all()
    assert (good_aucs["insertion_auc_prob"] > bad_aucs["insertion_auc_prob"]).all()


def test_blur_is_zero_padded_in_normalised_space() -> None:
    """Oracle: scipy correlation of x − mean with the outer-product kernel, zero padding, + mean."""
    model = toys.tiny_convnet()
    x = toys.random_images(2, (3, 16, 16))
    got = ev.blur(model, x, klen=5, ksig=2.0).numpy()
    k = ev.gaussian_kernel(5, 2.0).double().numpy()
    mean = np.array(toys.MEAN).reshape(3, 1, 1)
    centred = x.double().numpy() - mean
    expected = np.stack([[ndimage.correlate(ch, np.outer(k, k), mode="constant") for ch in img] for img in centred]) + mean
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(ev.gaussian_kernel(5, 2.0).sum(), 1.0, atol=1e-6)


def test_curve_inputs_are_validated() -> None:
    model = toys.tiny_convnet()
    x = toys.random_images(2, (3, 16, 16))
    with pytest.raises(ValueError, match=r"maps have shape \(2, 8, 8\).*expected \(2, 16, 16\)"):
        ev.curves(model, x, np.zeros((2, 8, 8)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        ev.curves(model, x, np.full((2, 16, 16), np.nan), [0, 1])
    with pytest.raises(ValueError, match="klen must be a positive odd"):
        ev.curves(model, x, np.zeros((2, 16, 16)), [0, 1], klen=4)
    with pytest.raises(ValueError, match="target has 1 entries"):
        ev.curves(model, x, np.zeros((2, 16, 16)), [0])


# -- map statistics -----------------------------------------------------------------------------


def test_gini_known_values() -> None:
    one_hot = np.zeros((1, 10))
    one_hot[0, 3] = -2.5
    maps = np.stack([one_hot[0], np.ones(10), np.r_[np.zeros(8), 1, 1], np.zeros(10)])
    np.testing.assert_allclose(ev.gini(maps), [1 - 1 / 10, 0.0, 1 - 2 * (0.5 * 1.5 / 10 + 0.5 * 0.5 / 10), 0.0])
    np.testing.assert_allclose(ev.gini(np.array([[0, 0, 1, 1]])), [0.5])


def test_spearman_known_values() -> None:
    a = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [3, 1, 4, 1, 5]], dtype=float)
    b = np.array([[2, 4, 6, 8, 10], [5, 4, 3, 2, 1], [2, 7, 1, 8, 2]], dtype=float)
    got = ev.spearman(a, b)
    np.testing.assert_allclose(got[:2], [1.0, -1.0])
    np.testing.assert_allclose(got[2], stats.spearmanr(a[2], b[2]).statistic)
    assert np.isnan(ev.spearman(np.ones((1, 4)), np.arange(4.0)[None]))[0]


def test_topk_iou_known_values() -> None:
    a = np.array([[5, 4, 3, 2, 1, 0]], dtype=float)
    b = np.array([[0, 4, 5, 1, 2, 3]], dtype=float)
    np.testing.assert_allclose(ev.topk_iou(a, b, fraction=0.5), [2 / 4])  # {0,1,2} vs {2,1,5}
    np.testing.assert_allclose(ev.topk_iou(a, a, fraction=0.2), [1.0])
    signed = np.array([[-9, 1, 2, 3, 0, 0]], dtype=float)
    np.testing.assert_allclose(ev.topk_iou(signed, np.array([[9, 0, 0, 0, 0, 0.0]]), fraction=1 / 6), [1.0])
    np.testing.assert_allclose(ev.topk_iou(signed, np.array([[9, 0, 0, 0, 0, 0.0]]), fraction=1 / 6, absolute=False), [0.0])


def test_pointing_game_hit_miss_tolerance_and_empty_mask() -> None:
    maps = np.zeros((4, 5, 5))
    maps[:, 0, 0] = 1.0  # argmax at (0, 0)
    masks = np.zeros((4, 5, 5), dtype=bool)
    masks[0, 0, 0] = True  # hit
    masks[1, 4, 4] = True  # miss
    masks[2, 0, 2] = True  # distance 2
    assert ev.pointing_game(maps, masks) == [True, False, False, None]
    assert ev.pointing_game(maps, masks, tolerance=2.0)[2] is True
    assert ev.pointing_game(maps, masks, tolerance=1.9)[2] is False


def test_mask_energy_counts_positive_mass_only() -> None:
    maps = np.array([[[1.0, -5.0], [3.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    masks = np.array([[[True, False], [False, False]]] * 2)
    assert ev.mask_energy(maps, masks) == [pytest.approx(0.25), None]


# -- evaluate ------------------------------------------------------------------------------------


def test_evaluate_returns_every_metric_per_sample() -> None:
    model = toys.one_region()
    x = toys.random_images(3) + 0.1
    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[:, 3, 5] = 1.0  # inside the region
    maps[2] = 0.0
    maps[2, 0, 0] = 1.0  # outside
    masks = np.broadcast_to(toys.region_mask().numpy(), (3, 8, 8))
    rows, c = ev.evaluate_with_curves(model, x, maps, [0, 0, 0], masks)
    assert [r["pointing_hit"] for r in rows] == [True, True, False]
    assert [r["mask_energy"] for r in rows] == [1.0, 1.0, 0.0]
    assert set(rows[0]) == {"deletion_auc", "insertion_auc", "deletion_auc_prob", "insertion_auc_prob", "sparsity_gini", "pointing_hit", "mask_energy"}
    assert rows[0]["deletion_auc"] == pytest.approx(c.deletion[0].mean())
    assert rows[0]["sparsity_gini"] == pytest.approx(1 - 1 / 64)
    plain = ev.evaluate(model, x, maps, [0, 0, 0])
    assert len(plain) == 3 and "pointing_hit" not in plain[0]
    assert plain[1]["insertion_auc"] == pytest.approx(rows[1]["insertion_auc"])


# -- model randomisation ------------------------------------------------------------------------


def test_randomized_model_changes_every_parameter_keeps_buffers_and_original() -> None:
    model = toys.tiny_convnet(seed=0)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rand = ev.randomized_model(model, seed=0)
    params = dict(rand.module.named_parameters())
    for name, value in rand.module.state_dict().items():
        if name in params:
            assert not torch.equal(value, before[name]), name
        else:
            assert torch.equal(value, before[name]), name
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, before[name])
    again = ev.randomized_model(model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(rand.module.parameters(), again.module.parameters()))
    assert rand.weights_hash != model.weights_hash


def test_randomized_model_redraws_parameters_without_reset_parameters() -> None:
    model = toys.linear_image()
    rand = ev.randomized_model(model, seed=3)
    assert not torch.equal(rand.module[-1].weight, model.module[-1].weight)


def test_randomization_check_is_low_for_integrated_gradients_on_a_conv_net() -> None:
    model = toys.tiny_convnet()
    x = toys.random_images(4, (3, 16, 16))
    e = get_explainer("integrated_gradients")
    rho = ev.randomization_check(e, model, x, torch.tensor([0, 1, 2, 0]), e.Params(n_steps=16))
    assert rho.shape == (4,)
    assert rho.max() < 0.6 and rho.mean() < 0.4


class _InputMagnitude(Explainer):
    """An "edge detector" that ignores the model: |x| summed over channels."""

    spec = Spec(id="input_magnitude", title="|x|", paper="", modalities=("image",), needs_gradients=False)
    Params = Params

    def explain(self, model, x, target, params, background=None) -> Result:
        return Result(x.abs().sum(1).numpy())


def test_randomization_check_is_exactly_one_for_a_model_independent_map() -> None:
    model = toys.tiny_convnet()
    x = toys.random_images(3, (3, 16, 16))
    rho = ev.randomization_check(_InputMagnitude(), model, x, torch.tensor([0, 1, 2]), Params())
    np.testing.assert_array_equal(rho, 1.0)
