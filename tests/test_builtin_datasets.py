"""Built-in datasets (data/builtin.py): determinism, shapes and ranges, masks, balance, oracles.

``shapes`` is generated once per session into the session's LOUPE_HOME (tests/conftest.py) through
``load_builtin``; one test regenerates it into a fresh LOUPE_HOME to prove bit-identical regeneration.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from data.base import Dataset, DatasetError
from data.builtin import (
    BUILTIN_DATASETS,
    BUILTIN_INFO,
    HIGHDIM_SEED,
    HIGHDIM_SEPARATIONS,
    SHAPE_MASKS,
    _segments,
    generate_highdim,
    generate_shapes,
    load_builtin,
)


@pytest.fixture(scope="module")
def shapes() -> Dataset:
    return load_builtin("shapes")


@pytest.fixture(scope="module")
def highdim() -> Dataset:
    return load_builtin("highdim")


# -- registry and errors ------------------------------------------------------------------------------
def test_unknown_dataset_raises_dataset_error_naming_known_ids() -> None:
    with pytest.raises(DatasetError, match="unknown built-in dataset 'nope'.*breast_cancer.*shapes"):
        load_builtin("nope")


def test_unknown_sample_ids_raise(shapes: Dataset) -> None:
    with pytest.raises(DatasetError, match="'shapes'.*unknown ids: \\[1000\\]"):
        shapes.inputs([0, 1000])


@pytest.mark.parametrize("dataset_id", sorted(BUILTIN_DATASETS))
def test_info_matches_loaded_dataset(dataset_id: str) -> None:
    """BUILTIN_INFO (what listings and the zoo use without loading) agrees with the real dataset."""
    ds = load_builtin(dataset_id)
    info = BUILTIN_INFO[dataset_id]
    assert ds.id == dataset_id
    assert (ds.task, tuple(ds.classes), ds.input_shape) == (info.task, info.classes, info.input_shape)
    assert ds.train is not None and ds.train.x.shape[1:] == ds.eval.x.shape[1:]
    assert ds.eval.x.dtype == np.float32 and ds.eval.y.dtype == np.int64
    assert set(np.unique(ds.eval.y)) == set(range(len(ds.classes)))
    assert ds.ids == list(range(len(ds.eval.x)))


def test_load_builtin_is_cached_per_process() -> None:
    assert load_builtin("digits") is load_builtin("digits")


# -- shapes -------------------------------------------------------------------------------------------
def test_shapes_sizes_dtypes_ranges_and_balance(shapes: Dataset) -> None:
    assert shapes.train.x.shape == (6000, 3, 64, 64) and shapes.eval.x.shape == (1000, 3, 64, 64)
    assert shapes.train.masks.shape == (6000, 64, 64) and shapes.eval.masks.dtype == bool
    for split in (shapes.train, shapes.eval):
        assert split.x.dtype == np.float32
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert np.bincount(shapes.train.y).tolist() == [1500] * 4
    assert np.bincount(shapes.eval.y).tolist() == [250] * 4
    assert shapes.meta == {"generator": "shapes-v1", "seed": shapes.meta["seed"]}


def test_shapes_regenerates_bit_identically_in_fresh_home(
    shapes: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh LOUPE_HOME regenerates the same bytes (and hence the same content hashes), quickly."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    start = time.perf_counter()
    fresh = BUILTIN_DATASETS["shapes"]()
    seconds = time.perf_counter() - start
    print(f"shapes generation (7,000 images + write): {seconds:.2f} s")
    assert seconds < 30
    assert (tmp_path / "datasets" / "shapes-v1.npz").is_file()
    assert not list((tmp_path / "datasets").glob("*.tmp"))
    for a, b in ((fresh.train, shapes.train), (fresh.eval, shapes.eval)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and np.array_equal(a.masks, b.masks)
    assert fresh.content_hash(range(10)) == shapes.content_hash(range(10))
    reread = BUILTIN_DATASETS["shapes"]()  # now from the file
    assert np.array_equal(reread.eval.x, fresh.eval.x)


def test_torn_cache_file_is_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    path = tmp_path / "datasets" / f"highdim-v2-{HIGHDIM_SEED}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    ds = BUILTIN_DATASETS["highdim"]()
    assert ds.eval.x.shape == (1000, 5000)
    assert path.stat().st_size > 80_000_000


def test_generate_shapes_is_deterministic_and_seed_dependent() -> None:
    a, b, c = generate_shapes(40, seed=7), generate_shapes(40, seed=7), generate_shapes(40, seed=8)
    for key in ("x", "y", "masks"):
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["x"], c["x"])


def test_every_mask_is_one_flat_coloured_region_that_differs_from_its_surroundings(shapes: Dataset) -> None:
    """The mask covers exactly the class shape: one 8-connected component, inside the frame, of a single
    colour (only the 0.03 pixel noise varies inside), and clearly different from the ring around it."""
    x, masks = shapes.eval.x, shapes.eval.masks
    area = masks.sum((1, 2))
    assert area.min() >= 60
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()
    ring = ndimage.binary_dilation(masks, structure=np.ones((1, 5, 5), bool)) & ~masks
    m = masks[:, None].astype(np.float32)
    r = ring[:, None].astype(np.float32)
    inside = (x * m).sum((2, 3)) / m.sum((2, 3))
    inside_std = np.sqrt(((x - inside[..., None, None]) ** 2 * m).sum((2, 3)) / m.sum((2, 3)))
    around = (x * r).sum((2, 3)) / r.sum((2, 3))
    assert inside_std.max() < 0.06
    assert np.linalg.norm(inside - around, axis=1).min() > 0.25
    eight = np.ones((3, 3), bool)  # triangle apexes can touch the body only diagonally
    assert all(ndimage.label(mask, structure=eight)[1] == 1 for mask in masks)


@pytest.mark.parametrize(
    ("label", "expected_area"),
    [(0, np.pi * 10**2), (1, 17.0**2), (2, 3 * np.sqrt(3) / 4 * 11.0**2), (3, 5 * 20**2 / 9)],
)
def test_shape_mask_functions_have_the_geometric_area(label: int, expected_area: float) -> None:
    """At size s=20 on a fine unrotated grid: circle π(s/2)², square (0.85 s)², triangle with
    circumradius 0.55 s: (3√3/4) r², cross of arm s/3: 2·s·s/3 − (s/3)² = 5s²/9."""
    step = 0.05
    v, u = np.mgrid[-15:15:step, -15:15:step]
    area = SHAPE_MASKS[label](u, v, np.float64(20.0)).sum() * step**2
    assert area == pytest.approx(expected_area, rel=0.02)


def test_clutter_items_are_much_smaller_than_any_class_shape(shapes: Dataset) -> None:
    """Distractors (dots and short thin lines) cover at most ~20 pixels, a third of the smallest shape."""
    cover, offsets = _segments(np.random.default_rng(0), 200, 6, 64)
    assert cover.sum((2, 3)).max() <= 20
    assert np.abs(offsets).max() <= 0.25
    assert shapes.eval.masks.sum((1, 2)).min() > 3 * 20


# -- digits -------------------------------------------------------------------------------------------
def _bilinear_oracle(images: np.ndarray, size: int) -> np.ndarray:
    """Independent separable bilinear upsampling, align_corners=False: output pixel p samples source
    coordinate (p + 0.5)·in/out − 0.5, clamped at the borders (np.interp clamps)."""
    n_in = images.shape[-1]
    src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    grid = np.arange(n_in)
    rows = np.apply_along_axis(lambda r: np.interp(src, grid, r), -1, images)
    return np.apply_along_axis(lambda c: np.interp(src, grid, c), -2, rows)


def test_digits_are_upsampled_sklearn_digits_with_matching_labels() -> None:
    from sklearn.datasets import load_digits

    ds = load_builtin("digits")
    bunch = load_digits()
    assert ds.eval.x.shape == (450, 1, 32, 32) and ds.train.x.shape == (1347, 1, 32, 32)
    assert ds.eval.x.min() >= 0 and ds.eval.x.max() <= 1 and ds.eval.x.max() > 0.99
    oracle = _bilinear_oracle(bunch.images / 16.0, 32).reshape(len(bunch.images), -1)
    test = ds.eval.x.reshape(len(ds.eval.x), -1).astype(np.float64)
    dist = ((test**2).sum(1)[:, None] - 2 * test @ oracle.T + (oracle**2).sum(1)[None]).clip(0)
    nearest = dist.argmin(1)
    assert np.sqrt(dist.min(1)).max() < 1e-4
    assert np.array_equal(bunch.target[nearest], ds.eval.y)
    assert len(set(nearest.tolist())) == 450


def test_digits_split_is_stratified() -> None:
    ds = load_builtin("digits")
    counts_test, counts_all = np.bincount(ds.eval.y), np.bincount(ds.eval.y) + np.bincount(ds.train.y)
    assert np.abs(counts_test - counts_all * 0.25).max() <= 1


# -- breast_cancer ------------------------------------------------------------------------------------
def test_breast_cancer_is_sklearns_raw_table() -> None:
    from sklearn.datasets import load_breast_cancer

    ds = load_builtin("breast_cancer")
    bunch = load_breast_cancer()
    assert ds.eval.x.shape == (143, 30) and ds.train.x.shape == (426, 30)
    assert ds.feature_names == list(bunch.feature_names) and ds.classes == ["malignant", "benign"]
    raw = bunch.data.astype(np.float32)
    rows = {row.tobytes(): int(label) for row, label in zip(raw, bunch.target)}
    assert all(rows[row.tobytes()] == label for row, label in zip(ds.eval.x, ds.eval.y))
    assert ds.eval.x[:, ds.feature_names.index("mean area")].min() > 100  # raw, not standardised
    assert abs(np.mean(ds.eval.y == 0) - np.mean(bunch.target == 0)) < 0.01


# -- highdim ------------------------------------------------------------------------------------------
def test_highdim_shape_names_and_balance(highdim: Dataset) -> None:
    assert highdim.eval.x.shape == (1000, 5000) and highdim.train.x.shape == (3000, 5000)
    assert highdim.feature_names[0] == "f0000" and highdim.feature_names[-1] == "f4999"
    assert len(set(highdim.feature_names)) == 5000
    assert np.bincount(highdim.eval.y).tolist() == pytest.approx([500, 500], abs=5)
    informative = highdim.meta["informative_features"]
    assert len(informative) == 10 and informative == sorted(informative)


def test_highdim_informative_features_are_shifted_by_their_separation(highdim: Dataset) -> None:
    """The generator's construction, measured back: each named informative column's class means
    differ by its d′ (the sorted differences are HIGHDIM_SEPARATIONS, within 5 standard errors of a
    difference of two means of 2,000 unit-variance values), with unit spread inside a class; every
    other column's class means agree within the same margin."""
    x = np.concatenate([highdim.train.x, highdim.eval.x]).astype(np.float64)
    y = np.concatenate([highdim.train.y, highdim.eval.y])
    gap = np.abs(x[y == 1].mean(0) - x[y == 0].mean(0))
    margin = 5 * np.sqrt(2 / 2000)
    informative = [highdim.feature_names.index(n) for n in highdim.meta["informative_features"]]
    np.testing.assert_allclose(np.sort(gap[informative])[::-1], HIGHDIM_SEPARATIONS, atol=margin)
    np.testing.assert_allclose(x[y == 0][:, informative].std(0), 1.0, atol=0.05)
    assert np.delete(gap, informative).max() < margin


def test_highdim_informative_features_carry_the_signal(highdim: Dataset) -> None:
    """Statistically: the Bonferroni-significant univariate associations are exactly the named
    informative columns, and the informative columns alone predict the class while ten noise columns do not."""
    from sklearn.feature_selection import f_classif
    from sklearn.linear_model import LogisticRegression

    names = highdim.feature_names
    informative = [names.index(n) for n in highdim.meta["informative_features"]]
    _, p = f_classif(highdim.train.x, highdim.train.y)
    significant = set(np.flatnonzero(p < 0.01 / 5000).tolist())
    assert significant == set(informative)  # each informative column on its own, and no other
    noise = [j for j in range(0, 5000, 499) if j not in informative][:10]

    def accuracy(columns: list[int]) -> float:
        model = LogisticRegression(max_iter=1000).fit(highdim.train.x[:, columns], highdim.train.y)
        return model.score(highdim.eval.x[:, columns], highdim.eval.y)

    assert accuracy(informative) > 0.95
    assert accuracy(noise) < 0.6


def test_generate_highdim_is_deterministic() -> None:
    a, b = generate_highdim(), generate_highdim()
    assert all(np.array_equal(a[k], b[k]) for k in ("x", "y", "informative"))
