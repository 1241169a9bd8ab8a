"""Oracle tests for OSA-DAS (explainers/osa_das.py; specs/osadas.md §7) on tiny hand-built models.

The naive reference here is written independently of the batched code: one window at a time, one
view at a time, numpy SVD for the subspaces and explicit loops for the heatmap. Only the view
function :func:`augment` (checked on its own below) is shared.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from explainers.osa_das import (
    AUG_FIELDS,
    OsaDas,
    Views,
    augment,
    auto_window,
    sample_views,
    similarity,
    subspaces,
    window_starts,
)
from explainers import batching
from explainers.batching import rows_per_pass, widest_output
from tests import toy_models as toys

EXPLAINER = OsaDas()


def _explain(model, x, **params):
    return EXPLAINER.explain(model, x, torch.zeros(len(x), dtype=torch.long), EXPLAINER.Params(**params))


def _orthonormal(d: int, k: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))[0]


# -- subspaces --------------------------------------------------------------------------------------


def test_similarity_is_mean_cos2_of_scipy_subspace_angles() -> None:
    for seed in range(3):
        a, b = _orthonormal(10, 3, seed), _orthonormal(10, 3, seed + 10)
        expected = np.mean(np.cos(scipy.linalg.subspace_angles(a, b)) ** 2)
        three = torch.tensor(3)
        got = similarity(torch.from_numpy(a), three, torch.from_numpy(b), three)
        assert float(got) == pytest.approx(expected, abs=1e-12)
        assert float(similarity(torch.from_numpy(a), three, torch.from_numpy(a), three)) == pytest.approx(1.0, abs=1e-12)


def test_subspaces_match_numpy_svd_of_normalised_columns() -> None:
    gen = np.random.default_rng(0)
    feats = gen.standard_normal((5, 8, 12))  # J sets of N=8 vectors in d=12
    basis, rank = subspaces(torch.from_numpy(feats), k=3)
    assert rank.tolist() == [3] * 5
    for j in range(5):
        f = (feats[j] / np.linalg.norm(feats[j], axis=1, keepdims=True)).T  # d×N, unit columns
        u = np.linalg.svd(f, full_matrices=False)[0][:, :3]
        np.testing.assert_allclose(basis[j].numpy() @ basis[j].numpy().T, u @ u.T, atol=1e-10)


def test_rank_is_clipped_to_numerical_rank_and_half_the_output_size() -> None:
    v = torch.tensor([1.0, 2.0, 0.5, -1.0, 0.0, 3.0], dtype=torch.float64)
    same = v.expand(1, 4, 6)  # four identical views: rank 1
    assert subspaces(same, k=3)[1].tolist() == [1]
    wide = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert subspaces(wide, k=3)[1].tolist() == [2]  # d = 4 → k ≤ 2


# -- windows and views ------------------------------------------------------------------------------


def test_window_starts_end_at_the_edge_and_auto_rule() -> None:
    assert window_starts(16, 4, 3) == [0, 3, 6, 9, 12]
    assert window_starts(16, 5, 4) == [0, 4, 8, 11]
    assert window_starts(8, 8, 4) == [0]
    assert auto_window(224) == (32, 16) and auto_window(64) == (9, 4) and auto_window(8) == (2, 1)


def test_sample_views_identity_first_and_seeded() -> None:
    views = sample_views(8, seed=3)
    assert views.shape == (8, len(AUG_FIELDS))
    np.testing.assert_array_equal(views[0], sample_views(1, seed=99)[0])
    assert not np.array_equal(views[1:], np.tile(views[0], (7, 1)))  # the others change something
    np.testing.assert_array_equal(views, sample_views(8, seed=3))
    assert not np.array_equal(views, sample_views(8, seed=4))


def _views(rows: list[dict], x: torch.Tensor) -> Views:
    table = np.tile(sample_views(1, 0), (len(rows) + 1, 1))
    for row, changes in zip(table[1:], rows):
        for name, value in changes.items():
            row[AUG_FIELDS.index(name)] = value
    return Views.build(table, x, torch.tensor(toys.MEAN), (0.0, 1.0))


def test_augment_identity_flip_and_brightness() -> None:
    x = toys.random_images(2, (3, 6, 6))
    out = augment(x, _views([{"flip": 1.0}, {"brightness": 1.5}, {"angle": 90.0}], x))
    assert out.shape == (2, 4, 3, 6, 6)
    assert torch.equal(out[:, 0], x)  # identity is an exact copy
    torch.testing.assert_close(out[:, 1], x.flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 2], (1.5 * x).clamp(0, 1), atol=1e-6, rtol=0)
    rotated = out[:, 3]
    assert torch.allclose(rotated, x.rot90(1, (-2, -1)), atol=1e-5) or torch.allclose(rotated, x.rot90(-1, (-2, -1)), atol=1e-5)


def test_augment_blur_keeps_constant_images_and_smooths() -> None:
    flat = torch.full((1, 3, 10, 10), 0.3)
    views = _views([{"blur_sigma": 1.5, "blur_size": 7}], flat)
    torch.testing.assert_close(augment(flat, views)[:, 1], flat, atol=1e-6, rtol=0)
    x = toys.random_images(1, (3, 10, 10))
    blurred = augment(x, views)[:, 1]
    assert blurred.std() < 0.7 * x.std()
    torch.testing.assert_close(blurred.mean(dim=(-1, -2)), x.mean(dim=(-1, -2)), atol=0.03, rtol=0)


# -- the explainer: oracles ---------------------------------------------------------------------------


def test_one_view_rank_one_is_cosine_occlusion() -> None:
    """N = 1, k = 1: every score is 1 − cos² between the logits of the clean and occluded image."""
    model, x = toys.tiny_convnet(), toys.random_images(2, (3, 16, 16))
    res = _explain(model, x, n_views=1, subspace_dim=1, patch=5, stride=4, occlusion="black")
    starts = window_starts(16, 5, 4)
    with torch.no_grad():
        clean = model.module(x).double()
        for i, top in enumerate(starts):
            for j, left in enumerate(starts):
                occluded = x.clone()
                occluded[:, :, top : top + 5, left : left + 5] = 0.0
                out = model.module(occluded).double()
                cos2 = (clean * out).sum(1) ** 2 / (clean.square().sum(1) * out.square().sum(1))
                np.testing.assert_allclose(res.extras["patch_scores"][:, i, j], (1 - cos2).numpy(), rtol=1e-4, atol=1e-9)
    assert res.extras["patch_scores"].max() > 1e-6  # the test is not vacuous


def _naive(model, x: torch.Tensor, n_views: int, k: int, patch: int, stride: int, seed: int) -> np.ndarray:
    """OSA-DAS one window and one view at a time (penultimate features, mean-colour occluder)."""
    views = Views.build(sample_views(n_views, seed), x, torch.tensor(toys.MEAN), (0.0, 1.0))
    head = model.module.head

    def subspace(image: torch.Tensor) -> np.ndarray:
        cols = []
        for v in range(n_views):
            seen = []
            handle = head.register_forward_pre_hook(lambda _, inp: seen.append(inp[0]))
            try:
                model.module(augment(image[None], views)[:, v])
            finally:
                handle.remove()
            f = seen[0][0].double().numpy()
            cols.append(f / np.linalg.norm(f))
        u, s, _ = np.linalg.svd(np.stack(cols, axis=1), full_matrices=False)
        return u[:, : min(k, int((s > 1e-6 * s[0]).sum()))]

    side = x.shape[-1]
    starts = window_starts(side, patch, stride)
    heat = np.zeros((len(x), side, side))
    count = np.zeros((side, side))
    for top in starts:
        for left in starts:
            count[top : top + patch, left : left + patch] += 1
    with torch.no_grad():
        for b in range(len(x)):
            u0 = subspace(x[b])
            for top in starts:
                for left in starts:
                    occluded = x[b].clone()
                    occluded[:, top : top + patch, left : left + patch] = torch.tensor(toys.MEAN)[:, None, None]
                    u = subspace(occluded)
                    score = 1 - np.square(u0.T @ u).sum() / min(u0.shape[1], u.shape[1])
                    heat[b, top : top + patch, left : left + patch] += score
    return heat / count


@pytest.mark.parametrize("rows_per_forward", [None, 3])
def test_batched_equals_naive_loop(rows_per_forward: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = toys.tiny_convnet(), toys.random_images(2, (3, 16, 16), seed=5)
    if rows_per_forward:  # forwards of 3 rows split each window's 4 views across forwards
        budget = rows_per_forward * widest_output(model.module, x[:1])
        monkeypatch.setitem(batching.PASS_VALUES, "cpu", budget)
        assert rows_per_pass(model.module, x, 0) == rows_per_forward
    res = _explain(model, x, n_views=4, subspace_dim=2, patch=5, stride=4, feature="penultimate", seed=7)
    expected = _naive(model, x, n_views=4, k=2, patch=5, stride=4, seed=7)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(res.attributions, expected, atol=1e-5)
    assert expected.max() > 1e-3


def test_same_seed_bit_identical_and_seed_matters() -> None:
    model, x = toys.tiny_convnet(), toys.random_images(2, (3, 16, 16))
    first = _explain(model, x, n_views=4, patch=4, stride=4, feature="penultimate", seed=11)
    again = _explain(model, x, n_views=4, patch=4, stride=4, feature="penultimate", seed=11)
    other = _explain(model, x, n_views=4, patch=4, stride=4, feature="penultimate", seed=12)
    assert np.array_equal(first.attributions, again.attributions)
    assert not np.allclose(first.attributions, other.attributions)


def test_constant_model_gives_zeros() -> None:
    res = _explain(toys.constant_image(), toys.random_images(2), n_views=6)
    np.testing.assert_allclose(res.attributions, 0.0, atol=1e-12)


def _region_model(mask: torch.Tensor):
    """Linear toy whose logits (with biases 0, 1, 2) depend only on the pixels in ``mask``."""
    return toys.linear_image(normalize=False, weight=toys.image_weights() * mask)


def _centre_mask() -> torch.Tensor:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    return mask


@pytest.mark.parametrize(
    ("n_views", "mask"),
    [(1, toys.region_mask()), (8, _centre_mask())],
    ids=["one-view-off-centre", "eight-views-centre"],
)
def test_one_region_model_peaks_on_its_region(n_views: int, mask: torch.Tensor) -> None:
    """With views, the region is centred: a flip or rotation shows the model content from the
    mirrored or rotated place, so an off-centre region legitimately shares its score there."""
    x = toys.random_images(4, seed=2)
    res = _explain(_region_model(mask), x, n_views=n_views, patch=2, stride=1)
    for heat in res.attributions:
        assert mask.numpy().flat[np.argmax(heat)], heat.round(3)


def test_extras_and_preselect() -> None:
    model, x = toys.tiny_convnet(), toys.random_images(3, (3, 16, 16))
    full = _explain(model, x, n_views=3, patch=4, stride=4, feature="penultimate")
    half = _explain(model, x, n_views=3, patch=4, stride=4, feature="penultimate", preselect=0.5)
    assert full.extras["patch_scores"].shape == (3, 4, 4) and full.extras["evaluated_windows"].all()
    assert full.extras["augmentations"].shape == (3, 3, len(AUG_FIELDS))
    np.testing.assert_array_equal(full.extras["augmentations"][2], sample_views(3, 0))
    assert full.extras["forwards_per_sample"] == 3 * 17 and half.extras["forwards_per_sample"] == 3 * 9
    chosen = half.extras["evaluated_windows"]
    assert chosen.sum(axis=(1, 2)).tolist() == [math.ceil(0.5 * 16)] * 3
    np.testing.assert_allclose(half.extras["patch_scores"][chosen], full.extras["patch_scores"][chosen], atol=1e-6)
    for scores, kept in zip(half.extras["patch_scores"], chosen):
        assert np.all(scores[~kept] == scores[kept].min())


def test_bad_inputs_name_the_problem() -> None:
    model, x = toys.tiny_convnet(), toys.random_images(1, (3, 16, 16))
    with pytest.raises(ValueError, match="patch 20 exceeds"):
        _explain(model, x, patch=20)
    with pytest.raises(ValueError, match="stride 5 exceeds patch 4"):
        _explain(model, x, patch=4, stride=5)
    with pytest.raises(ValueError, match="penultimate"):
        _explain(toys.constant_image(), toys.random_images(1), feature="penultimate")
    with pytest.raises(ValueError, match="shape"):
        _explain(model, toys.random_images(1), n_views=1)


# -- through the API, the cluster and the store ------------------------------------------------------


def _through_store(params: dict | None) -> None:
    import loupe

    first = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:4", explainer="osa_das", params=params)
    again = loupe.explain(model="shapes_cnn", dataset="shapes", samples="0:4", explainer="osa_das", params=params)
    assert first.attributions.shape == (4, 64, 64) and not first.cached and again.cached
    scores = first.extras["patch_scores"]
    assert scores.shape[0] == 4 and scores.max() > 0
    np.testing.assert_array_equal(again.extras["patch_scores"], scores)
    np.testing.assert_array_equal(again.extras["augmentations"], first.extras["augmentations"])
    np.testing.assert_array_equal(again.attributions, first.attributions)


def test_api_store_round_trip_small(fresh_home: Path) -> None:
    _through_store({"n_views": 2, "patch": 16, "stride": 16})


@pytest.mark.slow
def test_api_store_round_trip_defaults(fresh_home: Path) -> None:
    _through_store(None)
