"""User model and dataset loaders: oracle tests on tiny hand-built models and hand-written files.

Entries come from a real manifest file (so parsing, path resolution and loading are exercised
together); each test gets its own LOUPE_HOME and manifest under tmp_path.
"""
from __future__ import annotations

import importlib
import json
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.base import DatasetError
from data.loaders import load_dataset
from manifest import DATASET_KINDS, MODEL_KINDS, read_manifest
from model_registry.base import ModelError, weights_hash
from model_registry.loaders import MODEL_LOADERS, load_model
from data.loaders import DATASET_LOADERS

FACTORY = "loupe_test_factory"
FACTORY_SRC = textwrap.dedent(
    """
    import torch
    from torch import nn
    from model_registry.base import Normalize

    class TinyCNN(nn.Module):
        def __init__(self, n_classes=4):
            super().__init__()
            self.norm = Normalize([0.5, 0.4, 0.3], [0.25, 0.25, 0.25])
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
            self.head = nn.Linear(6, n_classes)

        def forward(self, x):
            h = torch.relu(self.conv2(torch.relu(self.conv1(self.norm(x)))))
            return self.head(h.mean((2, 3)))

    def build(n_classes=4):
        torch.manual_seed(7)
        return TinyCNN(n_classes)
    """
)
CLASSES = ["circle", "square", "triangle", "cross"]


class Evil:
    """Unpickling this creates ``marker`` (``builtins.open(marker, "w")``): code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOUPE_HOME with the factory module importable."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
    (tmp_path / f"{FACTORY}.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, FACTORY, raising=False)
    return tmp_path


def original() -> torch.nn.Module:
    return importlib.import_module(FACTORY).build().eval()


def x_batch(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def toml_value(value: object) -> str:
    """A TOML literal for ``value`` (JSON covers strings, numbers, booleans and arrays)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def model_toml(path: Path, kind: str, **extra: object) -> str:
    fields = {
        "id": "m", "kind": kind, "path": str(path), "task": "image", "input_shape": [3, 8, 8],
        "classes": CLASSES, **extra,
    }
    body = "\n".join(f"{k} = {toml_value(v)}" for k, v in fields.items())
    return f"[[model]]\n{body}\n"


def entry_from(home: Path, text: str, kind: str = "model"):
    """The single entry of a manifest written with ``text`` (fails the test if it was rejected)."""
    manifest = read_manifest(_write(home / "manifest.toml", text))
    assert not manifest.errors, manifest.errors
    return (manifest.models if kind == "model" else manifest.datasets)[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(home: Path, kind: str, path: Path, **extra: object):
    return load_model(entry_from(home, model_toml(path, kind, **extra)), "cpu")


# -- models --------------------------------------------------------------------------------------------
def test_loader_tables_cover_every_kind() -> None:
    assert set(MODEL_LOADERS) == set(MODEL_KINDS)
    assert set(DATASET_LOADERS) == set(DATASET_KINDS)


def test_state_dict_with_factory_gives_the_same_logits(home: Path) -> None:
    net = original()
    weights = home / "net.pt"
    torch.save(net.state_dict(), weights)
    handle = load(home, "state_dict", weights, factory=f"{FACTORY}:build")
    x = x_batch()
    torch.testing.assert_close(handle.logits(x), net(x).detach(), rtol=0, atol=0)
    assert handle.hookable and handle.source == "manifest"
    assert handle.gradcam_layer == "conv2"
    assert handle.layers == ["conv1", "conv2"]
    assert handle.normalizer_mean == pytest.approx([0.5, 0.4, 0.3])
    assert handle.weights_hash == weights_hash(net)
    assert not handle.module.training


def test_factory_kwargs_are_passed(home: Path) -> None:
    net = importlib.import_module(FACTORY).build(n_classes=2)
    torch.save(net.state_dict(), home / "net2.pt")
    handle = load(home, "state_dict", home / "net2.pt", factory=f"{FACTORY}:build",
                  factory_kwargs={"n_classes": 2}, classes=["a", "b"])
    assert handle.logits(x_batch()).shape == (3, 2)


def test_torchscript_gives_the_same_logits_and_is_not_hookable(home: Path) -> None:
    net = original()
    torch.jit.script(net).save(str(home / "net.ts"))
    handle = load(home, "torchscript", home / "net.ts", normalize_mean=[0.1, 0.2, 0.3])
    x = x_batch()
    torch.testing.assert_close(handle.logits(x), net(x).detach())
    assert not handle.hookable and handle.gradcam_layer is None and handle.layers == []
    assert handle.normalizer_mean == [0.1, 0.2, 0.3]  # from the entry: hooks and types are gone


def test_torchscript_refuses_layers_it_cannot_hook(home: Path) -> None:
    torch.jit.script(original()).save(str(home / "net.ts"))
    with pytest.raises(ModelError, match="'m'.*layer 'conv2' cannot be hooked"):
        load(home, "torchscript", home / "net.ts", gradcam_layer="conv2")


def test_exported_program_loads_with_hookable_layers(home: Path) -> None:
    net = original()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (x_batch(2),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, home / "net.pt2")
    handle = load(home, "exported", home / "net.pt2", gradcam_layer="conv2")
    x = x_batch(5)
    torch.testing.assert_close(handle.logits(x), net(x).detach(), rtol=1e-5, atol=1e-6)
    assert handle.hookable and handle.gradcam_layer == "conv2"


def test_exported_with_a_fixed_batch_of_one_is_rejected_with_the_reason(home: Path) -> None:
    torch.export.save(torch.export.export(original(), (x_batch(1),)), home / "b1.pt2")
    with pytest.raises(ModelError, match=r"'m' does not accept input of shape \[2, 3, 8, 8\]"):
        load(home, "exported", home / "b1.pt2")


def test_wrong_input_shape_is_reported(home: Path) -> None:
    torch.save(original().state_dict(), home / "net.pt")
    entry = entry_from(home, model_toml(home / "net.pt", "state_dict", factory=f"{FACTORY}:build",
                                        input_shape=[4, 8, 8]))
    with pytest.raises(ModelError, match=r"'m' does not accept input of shape \[2, 4, 8, 8\]"):
        load_model(entry, "cpu")


def test_output_size_must_match_classes(home: Path) -> None:
    torch.save(original().state_dict(), home / "net.pt")
    with pytest.raises(ModelError, match=r"'m' outputs shape \[2, 4\].*lists 3 classes"):
        load(home, "state_dict", home / "net.pt", factory=f"{FACTORY}:build", classes=["a", "b", "c"])


def test_state_dict_that_does_not_fit_the_factory(home: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1)}, home / "bad.pt")
    with pytest.raises(ModelError, match="'m': the weights in .* do not fit"):
        load(home, "state_dict", home / "bad.pt", factory=f"{FACTORY}:build")


def test_missing_factory_module_is_reported(home: Path) -> None:
    torch.save(original().state_dict(), home / "net.pt")
    with pytest.raises(ModelError, match="'m': cannot import factory 'no_such_module:build'"):
        load(home, "state_dict", home / "net.pt", factory="no_such_module:build")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_corrupt_weights_file_names_the_model(home: Path, kind: str) -> None:
    bad = _write(home / "corrupt.bin", "this is not a model " * 20)
    with pytest.raises(ModelError, match="model 'm': .*corrupt.bin.* not a readable"):
        load(home, kind, bad, **({"factory": f"{FACTORY}:build"} if kind == "state_dict" else
                                 {"trust": True, "task": "tabular", "input_shape": [4]} if kind == "sklearn" else {}))


def test_pickled_module_is_refused_without_trust_and_loads_with_it(home: Path) -> None:
    net = original()
    torch.save(net, home / "whole.pt")
    with pytest.raises(ModelError, match="contains pickled Python objects.*set trust = true"):
        load(home, "state_dict", home / "whole.pt", factory=f"{FACTORY}:build")
    handle = load(home, "state_dict", home / "whole.pt", trust=True)
    torch.testing.assert_close(handle.logits(x_batch()), net(x_batch()).detach())


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_malicious_pickle_never_runs(home: Path, writer: str) -> None:
    marker = home / "PWNED"
    path = home / "evil.pt"
    if writer == "torch_save":
        torch.save({"weights": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Evil(marker)))
    assert not marker.exists()
    with pytest.raises(ModelError, match=r"'m'.*contains pickled Python objects \(.*open.*\); loading it can run code"):
        load(home, "state_dict", path, factory=f"{FACTORY}:build")
    assert not marker.exists()


# -- datasets ------------------------------------------------------------------------------------------
def dataset_toml(path: Path, kind: str, **extra: object) -> str:
    fields = {"id": "d", "kind": kind, "path": str(path), **extra}
    return "[[dataset]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in fields.items()) + "\n"


def load_ds(home: Path, path: Path, kind: str, **extra: object):
    return load_dataset(entry_from(home, dataset_toml(path, kind, **extra), kind="dataset"))


def _image_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (5, 4)) -> dict[str, list[np.ndarray]]:
    """cat/ and dog/ with 2 and 1 images whose pixels encode (class, index)."""
    pixels: dict[str, list[np.ndarray]] = {}
    for cls, count in (("dog", 1), ("cat", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            arr = np.full(shape, 10 * i + (100 if cls == "dog" else 50), dtype=np.uint8)
            arr[0, 0] = 255
            Image.fromarray(arr, mode=mode).save(root / cls / f"img{i}.png")
            pixels.setdefault(cls, []).append(arr)
    (root / "cat" / "notes.txt").write_text("not an image: ignored")
    return pixels


def test_image_folder_labels_ids_and_values(home: Path) -> None:
    pixels = _image_folder(home / "imgs")
    ds = load_ds(home, home / "imgs", "image_folder")
    assert ds.classes == ["cat", "dog"] and ds.task == "image"
    assert ds.input_shape == (3, 4, 5) and ds.eval.x.dtype == np.float32
    assert ds.labels([0, 1, 2]).tolist() == [0, 0, 1]
    np.testing.assert_allclose(ds.inputs([1]).numpy()[0], pixels["cat"][1].transpose(2, 0, 1) / 255.0)
    np.testing.assert_allclose(ds.inputs([2]).numpy()[0, :, 1, 1], [100 / 255] * 3)
    assert ds.train is None


def test_image_folder_grayscale_and_resize(home: Path) -> None:
    _image_folder(home / "imgs", mode="L")
    ds = load_ds(home, home / "imgs", "image_folder", image_size=[6, 7])
    assert ds.input_shape == (1, 6, 7)
    ds3 = load_ds(home, home / "imgs", "image_folder", channels=3)
    assert ds3.input_shape == (3, 4, 5)


def test_palette_images_count_as_colour(home: Path) -> None:
    for cls in ("a", "b"):
        (home / "pal" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4), (204, 0, 51)).convert("P").save(home / "pal" / cls / "x.png")  # web palette
    ds = load_ds(home, home / "pal", "image_folder")
    assert ds.input_shape == (3, 4, 4)
    np.testing.assert_allclose(ds.inputs([0]).numpy()[0, :, 0, 0], np.array([204, 0, 51]) / 255, atol=1e-6)


def test_image_folder_size_mismatch_and_corrupt_file_name_the_file(home: Path) -> None:
    _image_folder(home / "imgs")
    Image.new("RGB", (9, 9)).save(home / "imgs" / "dog" / "big.png")
    with pytest.raises(DatasetError, match=r"'d': image .*big.png.* is 9x9 .*image_size"):
        load_ds(home, home / "imgs", "image_folder")
    (home / "imgs" / "dog" / "big.png").unlink()
    (home / "imgs" / "dog" / "broken.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"'d': cannot read image .*broken.png"):
        load_ds(home, home / "imgs", "image_folder")


def test_image_folder_without_class_folders(home: Path) -> None:
    (home / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(home / "flat" / "a.png")
    with pytest.raises(DatasetError, match="'d': .* has no class subfolders"):
        load_ds(home, home / "flat", "image_folder")


def test_npz_with_masks_and_seeded_split(home: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 4, 4)).astype(np.float32)
    y = np.arange(8) % 2
    masks = rng.random((8, 4, 4)) > 0.5
    np.savez(home / "d.npz", x=x, y=y, masks=masks)
    ds = load_ds(home, home / "d.npz", "npz", classes=["even", "odd"])
    assert ds.task == "image" and ds.classes == ["even", "odd"] and len(ds) == 8
    np.testing.assert_array_equal(ds.masks([3]), masks[[3]])
    split = load_ds(home, home / "d.npz", "npz", test_fraction=0.25, seed=3)
    assert len(split) == 2 and split.train is not None and len(split.train.x) == 6
    rows = [int(np.flatnonzero((x == s).all(axis=(1, 2, 3)))[0]) for s in split.eval.x]
    assert rows == sorted(rows) and split.labels([0, 1]).tolist() == [r % 2 for r in rows]
    again = load_ds(home, home / "d.npz", "npz", test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.eval.x, split.eval.x)


def test_npz_tabular_defaults_classes(home: Path) -> None:
    np.savez(home / "t.npz", x=np.ones((3, 5)), y=np.array([0, 2, 1]))
    ds = load_ds(home, home / "t.npz", "npz")
    assert ds.task == "tabular" and ds.input_shape == (5,) and ds.classes == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.ones((3, 2)), "y": np.zeros(2)}, r"y in .* has shape \[2\] but x has 3 samples"),
        ({"x": np.array([[1.0, np.nan]]), "y": np.zeros(1)}, "NaN or infinite values .*sample 0"),
        ({"x": np.array([[1.0, np.inf]]), "y": np.zeros(1)}, "NaN or infinite"),
        ({"x": np.ones((2, 2))}, r"lacks arrays \['y'\]"),
        ({"x": np.array([["a", "b"]]), "y": np.zeros(1)}, "must be a numeric"),
        ({"x": np.ones((2, 2)), "y": np.array([0, 5])}, r"labels \[5\] outside 0..1"),
    ],
)
def test_npz_errors(home: Path, arrays: dict, message: str) -> None:
    np.savez(home / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=f"dataset 'd': .*{message}"):
        load_ds(home, home / "bad.npz", "npz", **({"classes": ["a", "b"]} if "y" in arrays else {}))


def test_npz_with_object_arrays_is_refused(home: Path) -> None:
    np.savez(home / "obj.npz", x=np.array([object(), 1], dtype=object), y=np.zeros(2))
    with pytest.raises(DatasetError, match="'d': cannot read .*obj.npz"):
        load_ds(home, home / "obj.npz", "npz")


def _table_rows() -> str:
    return "f1,f2,target\n1,2.5,cat\n3,4,dog\n5,6,cat\n"


def test_csv_and_parquet_give_the_same_dataset(home: Path) -> None:
    import duckdb

    csv = _write(home / "t.csv", _table_rows())
    duckdb.execute(f"COPY (SELECT * FROM read_csv_auto('{csv}')) TO '{home / 't.parquet'}' (FORMAT parquet)")
    for path in (csv, home / "t.parquet"):
        ds = load_ds(home, path, "table", label="target")
        assert ds.task == "tabular" and ds.feature_names == ["f1", "f2"] and ds.classes == ["cat", "dog"]
        np.testing.assert_array_equal(ds.eval.x, np.array([[1, 2.5], [3, 4], [5, 6]], dtype=np.float32))
        assert ds.labels(ds.ids).tolist() == [0, 1, 0]


def test_table_integer_labels_and_given_classes(home: Path) -> None:
    csv = _write(home / "t.csv", "a,y\n0.5,1\n1.5,0\n")
    ds = load_ds(home, csv, "table", label="y", classes=["neg", "pos"])
    assert ds.classes == ["neg", "pos"] and ds.labels([0, 1]).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("f1,f2,target\n1,x,a\n3,4,b\n", r"feature column 'f2' is not numeric \(row 0 holds 'x'\)"),
        ("f1,f2,target\n1,,a\n3,4,b\n", "feature column 'f2' has missing values"),
        ("f1,f2,target\n1,inf,a\n3,4,b\n", "feature column 'f2' has NaN or infinite values"),
        ("f1,f2,target\n1,nan,a\n3,4,b\n", "feature column 'f2' has NaN or infinite values"),
        ("", "no data rows"),
        ("f1,f2,target\n", "no data rows"),
        ("f1,f2,target\n1,2,a\n3,4\n5,6,a\n", "cannot read .*different number of fields"),
        ("f1,f2,label\n1,2,a\n", r"label column 'target' not found; columns: \['f1', 'f2', 'label'\]"),
    ],
)
def test_table_errors(home: Path, text: str, message: str) -> None:
    csv = _write(home / "bad.csv", text)
    with pytest.raises(DatasetError, match=f"dataset 'd': .*{message}"):
        load_ds(home, csv, "table", label="target")


def test_table_with_unsupported_suffix(home: Path) -> None:
    path = _write(home / "t.txt", _table_rows())
    with pytest.raises(DatasetError, match=r"'d': .*t.txt.* must end in one of \['.csv', '.parquet', '.pq'\]"):
        load_ds(home, path, "table", label="target")
