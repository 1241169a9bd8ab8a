"""Built-in datasets: generated (``shapes``, ``highdim``) and bundled with scikit-learn (``digits``,
``breast_cancer``). Nothing is downloaded (DESIGN.md, "Practices").

Every loader returns a :class:`data.base.Dataset` whose evaluation split is the test split, so sample
ids are positions in the test split. Generated sets are written once to ``store.paths.dataset_cache()``
(temporary name, then ``os.replace``) and read from there afterwards; all randomness is seeded, so a
fresh ``LOUPE_HOME`` regenerates bit-identical arrays. Importing this module does no work.
"""
from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from data.base import Dataset, DatasetError, Split, Task
from store.paths import dataset_cache


@dataclass(frozen=True)
class BuiltinInfo:
    """What is known about a built-in dataset without loading it (the zoo uses this)."""

    task: Task
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]


SHAPES_SEED = 1234
SHAPES_N_TRAIN = 6000
SHAPES_N_TEST = 1000
SHAPES_SIZE = 64
HIGHDIM_SEED = 2024
HIGHDIM_N_SAMPLES = 4000
HIGHDIM_N_FEATURES = 5000
HIGHDIM_N_INFORMATIVE = 10
HIGHDIM_SEPARATIONS = (3.0, 2.4, 1.9, 1.5, 1.2, 1.0, 0.8, 0.7, 0.6, 0.5)
"""Per informative feature, the distance between the two class means in units of its standard
deviation (its own d′): every informative feature carries class evidence on its own, from a few
strong ones (a small tree separates the classes well) down to weak ones (d′ 0.5, still about 14
standard errors from zero over the training rows, while a noise feature's is 0)."""
SPLIT_SEED = 0
TEST_FRACTION = 0.25

BUILTIN_INFO: dict[str, BuiltinInfo] = {
    "shapes": BuiltinInfo("image", ("circle", "square", "triangle", "cross"), (3, SHAPES_SIZE, SHAPES_SIZE)),
    "digits": BuiltinInfo("image", tuple(str(d) for d in range(10)), (1, 32, 32)),
    "breast_cancer": BuiltinInfo("tabular", ("malignant", "benign"), (30,)),
    "highdim": BuiltinInfo("tabular", ("class_0", "class_1"), (HIGHDIM_N_FEATURES,)),
}


# ---------------------------------------------------------------------------------------------------
# shapes: one class-defining shape on a textured, cluttered background
# ---------------------------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (row, column) as float32 arrays of shape (1, size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy[None], xx[None]


def _circle(u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Disc of diameter ``s`` in local coordinates ``u, v`` (centred, rotated)."""
    return u**2 + v**2 <= (s / 2) ** 2


def _square(u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Square of side ``0.85 s`` (a little smaller than the disc so the areas are comparable)."""
    return np.maximum(np.abs(u), np.abs(v)) <= 0.425 * s


def _triangle(u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Equilateral triangle with circumradius ``0.55 s``, centroid at the origin, apex at -v."""
    r = 0.55 * s
    return (v <= r / 2) & (np.sqrt(3.0) * np.abs(u) - v <= r)


def _cross(u: np.ndarray, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Plus sign of span ``s`` with arms ``s/3`` thick."""
    half, arm = s / 2, s / 6
    au, av = np.abs(u), np.abs(v)
    return ((au <= arm) & (av <= half)) | ((av <= arm) & (au <= half))


SHAPE_MASKS: tuple[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
)
"""Mask functions in class order (``BUILTIN_INFO["shapes"].classes``)."""


def _upsample_matrix(coarse: int, size: int) -> np.ndarray:
    """(size × coarse) bilinear interpolation weights (align_corners=True) for smooth noise fields."""
    pos = np.linspace(0, coarse - 1, size)
    lo = np.clip(np.floor(pos).astype(int), 0, coarse - 2)
    frac = pos - lo
    w = np.zeros((size, coarse), dtype=np.float32)
    w[np.arange(size), lo] = 1 - frac
    w[np.arange(size), lo + 1] = frac
    return w


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth two-colour gradient along a random direction plus low-frequency colour noise, (n,3,H,W)."""
    yy, xx = _grid(size)
    c0, c1 = rng.uniform(0.15, 0.85, (2, n, 3, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    t = (np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2)) / size + 0.5
    img = c0 + (c1 - c0) * t[:, None]
    w = _upsample_matrix(9, size)
    coarse = rng.normal(0, 0.06, (n, 3, 9, 9)).astype(np.float32)
    return img + w @ coarse @ w.T


def _segments(rng: np.random.Generator, n: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` clutter items per image: dots (zero-length segments, radius 1.2–1.8) and short thin lines
    (length 4–9 px, half-width 0.6). Returns a boolean coverage (n,k,H,W) and per-item colour offsets."""
    yy, xx = np.arange(size, dtype=np.float32)[:, None], np.arange(size, dtype=np.float32)[None, :]
    p0 = rng.uniform(2, size - 3, (n, k, 2)).astype(np.float32)
    is_line = rng.random((n, k)) < 0.5
    length = np.where(is_line, rng.uniform(4, 9, (n, k)), 0.0).astype(np.float32)
    angle = rng.uniform(0, np.pi, (n, k)).astype(np.float32)
    d = np.stack([np.sin(angle), np.cos(angle)], -1) * length[..., None]
    radius = np.where(is_line, 0.6, rng.uniform(1.2, 1.8, (n, k))).astype(np.float32)
    # distance from every pixel to the segment p0 -> p0 + d
    py, px = yy - p0[..., 0, None, None], xx - p0[..., 1, None, None]  # (n,k,H,1), (n,k,1,W)
    dy, dx = d[..., 0, None, None], d[..., 1, None, None]
    denom = np.maximum(dy**2 + dx**2, 1e-6)
    proj = np.clip((py * dy + px * dx) / denom, 0, 1)
    dist2 = (py - proj * dy) ** 2 + (px - proj * dx) ** 2
    cover = dist2 <= radius[..., None, None] ** 2
    offsets = rng.uniform(-0.25, 0.25, (n, k, 3)).astype(np.float32)
    return cover, offsets


def _shape_masks(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """One randomly placed, sized (14–28 px) and rotated shape per image, fully inside the frame."""
    n = len(labels)
    yy, xx = _grid(size)
    s = rng.uniform(14, 28, (n, 1, 1)).astype(np.float32)
    margin = 0.62 * s + 1
    cy, cx = margin + rng.random((2, n, 1, 1)).astype(np.float32) * (size - 1 - 2 * margin)
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    ry, rx = yy - cy, xx - cx
    u = np.cos(theta) * rx + np.sin(theta) * ry
    v = -np.sin(theta) * rx + np.cos(theta) * ry
    masks = np.zeros((n, size, size), dtype=bool)
    for label, shape_fn in enumerate(SHAPE_MASKS):
        sel = labels == label
        masks[sel] = shape_fn(u[sel], v[sel], s[sel])
    return masks


def _shape_colours(rng: np.random.Generator, img: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A colour per image at RGB distance ≥ 0.5 from the mean background under the shape (the first
    of 16 random candidates that qualifies; the farthest candidate if none does). Shape (n,3)."""
    area = masks.sum((1, 2))[:, None]
    under = (img * masks[:, None]).sum((2, 3)) / area
    cand = rng.uniform(0, 1, (len(img), 16, 3)).astype(np.float32)
    dist = np.linalg.norm(cand - under[:, None], axis=-1)
    ok = dist >= 0.5
    pick = np.where(ok.any(1), ok.argmax(1), dist.argmax(1))
    return cand[np.arange(len(img)), pick]


def _shapes_chunk(rng: np.random.Generator, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render a chunk of images: background, 6 low-contrast clutter items, the shape, pixel noise.
    Returns uint8 images (n,3,H,W) and boolean shape masks (n,H,W)."""
    n = len(labels)
    img = _background(rng, n, size)
    cover, offsets = _segments(rng, n, 6, size)
    img = img + np.einsum("nkhw,nkc->nchw", cover.astype(np.float32), offsets)
    masks = _shape_masks(rng, labels, size)
    colours = _shape_colours(rng, img, masks)
    img = np.where(masks[:, None], colours[..., None, None], img)
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), masks


def generate_shapes(n: int, seed: int, size: int = SHAPES_SIZE, chunk: int = 500) -> dict[str, np.ndarray]:
    """Generate ``n`` shapes images (uint8 ``x``, int64 ``y``, bool ``masks``) from ``seed``.

    Classes are exactly balanced (``i % 4``, then a seeded permutation). Work is vectorised over chunks
    of ``chunk`` images, all drawn from one seeded generator, so the output depends only on the arguments.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPE_MASKS)).astype(np.int64)
    xs, ms = zip(*(_shapes_chunk(rng, labels[i : i + chunk], size) for i in range(0, n, chunk)))
    return {"x": np.concatenate(xs), "y": labels, "masks": np.concatenate(ms)}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temporary file in the same folder, then os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_npz(name: str, generate: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from ``dataset_cache()/name``, generating and writing them first when the file is absent
    or unreadable (a torn or truncated file is regenerated rather than trusted)."""
    path = dataset_cache() / name
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass
    arrays = generate()
    _write_npz(path, arrays)
    return arrays


def _generate_shapes_file() -> dict[str, np.ndarray]:
    """Both splits of shapes-v1, train and test from independent seeds derived from SHAPES_SEED."""
    train = generate_shapes(SHAPES_N_TRAIN, seed=SHAPES_SEED)
    test = generate_shapes(SHAPES_N_TEST, seed=SHAPES_SEED + 1)
    splits = (("train", train), ("test", test))
    return {f"{split}_{key}": arr for split, arrays in splits for key, arr in arrays.items()}


def _shapes_split(arrays: dict[str, np.ndarray], split: str) -> Split:
    """A shapes Split with images converted to float32 in [0, 1]."""
    x = arrays[f"{split}_x"].astype(np.float32) / np.float32(255)
    return Split(x=x, y=arrays[f"{split}_y"], masks=arrays[f"{split}_masks"])


def _load_shapes() -> Dataset:
    """The ``shapes`` dataset: 6,000 train / 1,000 test 64×64 RGB images of 4 classes, with masks."""
    arrays = _cached_npz("shapes-v1.npz", _generate_shapes_file)
    info = BUILTIN_INFO["shapes"]
    return Dataset(
        id="shapes",
        task=info.task,
        classes=list(info.classes),
        eval=_shapes_split(arrays, "test"),
        train=_shapes_split(arrays, "train"),
        meta={"generator": "shapes-v1", "seed": SHAPES_SEED},
    )


# ---------------------------------------------------------------------------------------------------
# scikit-learn bundled tables and images
# ---------------------------------------------------------------------------------------------------
def _stratified_split(x: np.ndarray, y: np.ndarray) -> tuple[Split, Split]:
    """Stratified 75/25 (train, test) split with the fixed SPLIT_SEED."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return Split(x=x_tr, y=y_tr.astype(np.int64)), Split(x=x_te, y=y_te.astype(np.int64))


def _load_digits() -> Dataset:
    """scikit-learn's 8×8 digits as 1×32×32 float32 in [0, 1]: value/16, bilinear upsampling
    (align_corners=False, as ``torch.nn.functional.interpolate``)."""
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy((bunch.images / 16.0).astype(np.float32)[:, None])
    x = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    train, test = _stratified_split(np.clip(x, 0, 1), bunch.target)
    info = BUILTIN_INFO["digits"]
    return Dataset(id="digits", task=info.task, classes=list(info.classes), eval=test, train=train,
                   meta={"source": "sklearn.datasets.load_digits"})


def _load_breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: raw float32 features (N×30), sklearn's names."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    classes = [str(c) for c in bunch.target_names]
    if tuple(classes) != BUILTIN_INFO["breast_cancer"].classes:
        raise DatasetError(f"breast_cancer: scikit-learn's class names changed to {classes}")
    train, test = _stratified_split(bunch.data.astype(np.float32), bunch.target)
    return Dataset(id="breast_cancer", task="tabular", classes=classes, eval=test, train=train,
                   feature_names=[str(f) for f in bunch.feature_names],
                   meta={"source": "sklearn.datasets.load_breast_cancer"})


# ---------------------------------------------------------------------------------------------------
# highdim: 5,000 features, 10 of them informative, scattered by a seeded permutation
# ---------------------------------------------------------------------------------------------------
def generate_highdim(seed: int = HIGHDIM_SEED) -> dict[str, np.ndarray]:
    """Balanced classes; every feature is standard normal noise except the informative ones, which
    are shifted by ±d′/2 (sign drawn per feature) towards their class (d′ from
    :data:`HIGHDIM_SEPARATIONS`), so each is informative on its own: v1 used
    ``make_classification``, whose informative features can carry no class signal except
    through their covariance with the others (4 of its 10 did, and no trained model used them).
    A seeded column permutation scatters the informative features. Returns float32 ``x``, int64
    ``y`` and the sorted informative column indices."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(HIGHDIM_N_SAMPLES) % 2)
    x = rng.standard_normal((HIGHDIM_N_SAMPLES, HIGHDIM_N_FEATURES), dtype=np.float32)
    signs = rng.choice([-1.0, 1.0], size=HIGHDIM_N_INFORMATIVE)
    shift = np.asarray(HIGHDIM_SEPARATIONS) / 2 * signs
    x[:, :HIGHDIM_N_INFORMATIVE] += ((2 * y - 1)[:, None] * shift).astype(np.float32)
    perm = rng.permutation(HIGHDIM_N_FEATURES)
    informative = np.flatnonzero(perm < HIGHDIM_N_INFORMATIVE)
    return {"x": x[:, perm], "y": y.astype(np.int64), "informative": informative}


def highdim_feature_names() -> list[str]:
    """Column names f0000..f4999."""
    return [f"f{j:04d}" for j in range(HIGHDIM_N_FEATURES)]


def _load_highdim() -> Dataset:
    """The ``highdim`` table (4,000 × 5,000, 2 classes), 75/25 stratified split."""
    arrays = _cached_npz(f"highdim-v2-{HIGHDIM_SEED}.npz", generate_highdim)
    names = highdim_feature_names()
    train, test = _stratified_split(arrays["x"], arrays["y"])
    return Dataset(id="highdim", task="tabular", classes=list(BUILTIN_INFO["highdim"].classes), eval=test,
                   train=train, feature_names=names,
                   meta={"generator": "highdim-v2", "seed": HIGHDIM_SEED,
                         "informative_features": [names[j] for j in arrays["informative"]]})


# ---------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------
BUILTIN_DATASETS: dict[str, Callable[[], Dataset]] = {
    "shapes": _load_shapes,
    "digits": _load_digits,
    "breast_cancer": _load_breast_cancer,
    "highdim": _load_highdim,
}


@functools.lru_cache(maxsize=None)
def load_builtin(dataset_id: str) -> Dataset:
    """The built-in dataset ``dataset_id``, loaded once per process; unknown ids raise DatasetError."""
    loader = BUILTIN_DATASETS.get(dataset_id)
    if loader is None:
        raise DatasetError(f"unknown built-in dataset {dataset_id!r}; known: {sorted(BUILTIN_DATASETS)}")
    return loader()
