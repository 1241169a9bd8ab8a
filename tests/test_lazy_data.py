"""Lazy datasets (issue #15, item 1): opening lists samples and decodes none; rows decode on access
through a bounded cache; content hashes come from the files' bytes; resize + centre crop follow
torchvision; uncompressed .npz members are memory-mapped; jobs carry sample references that the
worker opens itself, or arrays scattered beside the task graph, never arrays inside it."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import loupe
from data import loaders
from data.base import Dataset, DatasetError, Split
from data.images import ImageFiles, _resized
from data.lazy import ArrayRows, Rows
from data.registry import get_dataset, origin, register_dataset
from explainers.runner import explain_samples
from model_registry.base import ModelHandle
from model_registry.registry import current_manifest
from worker import cluster
from worker.samples import SampleRef, job_samples, sample_ref

SIZES = [(240, 320), (500, 375), (320, 240), (375, 500)]  # width x height, as PIL counts


def _jpegs(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 6, seed: int = 0) -> Path:
    """JPEGs of mixed sizes: smooth random colour fields (so JPEG keeps them close)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = SIZES[(i + len(c)) % len(SIZES)]
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR).save(root / c / f"{i:03d}.jpg", quality=90)
    return root


def _manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(body)
    monkeypatch.setenv("LOUPE_MANIFEST", str(path))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """A registered folder of 12 JPEGs of four sizes, resized and centre-cropped to 3×32×32."""
    _jpegs(tmp_path / "jpegs")
    _manifest(tmp_path, monkeypatch, f'''
[[dataset]]
id = "jpegs"
kind = "image_folder"
path = "{tmp_path / 'jpegs'}"
resize = 36
center_crop = 32
''')
    return get_dataset("jpegs")


def test_opening_lists_the_files_and_decodes_none(folder: Dataset):
    assert isinstance(folder.eval.x, ImageFiles) and folder.input_shape == (3, 32, 32) and len(folder) == 12
    assert folder.labels(folder.ids).tolist() == [0] * 6 + [1] * 6
    folder.content_hash(folder.ids)
    assert folder.eval.x.stats()["decoded"] == 0  # hashing reads bytes, never pixels
    x = folder.inputs([3, 7]).numpy()
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert folder.eval.x.stats()["decoded"] == 2
    np.testing.assert_array_equal(folder.inputs([7]).numpy()[0], x[1])
    assert folder.eval.x.stats()["decoded"] == 2  # served from the cache


def test_decode_cache_is_bounded(folder: Dataset, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_DECODE_CACHE_MB", str(3 * 12288 / 2**20))  # three 3×32×32 float32 rows
    rows = ImageFiles("jpegs", folder.eval.x.files, folder.eval.x.prep, (32, 32))
    rows[:]
    assert rows.stats() == {"decoded": 12, "cached_rows": 3, "cached_bytes": 3 * 12288}
    rows[[0]]
    assert rows.stats()["decoded"] == 13  # row 0 was evicted: decoded again
    rows[[11]]
    assert rows.stats()["decoded"] == 13


def test_content_hash_follows_the_files_bytes(folder: Dataset, tmp_path: Path):
    before = [folder.content_hash([i]) for i in folder.ids]
    again = loaders.load_dataset(current_manifest().dataset("jpegs"))  # a second, independent open
    assert [again.content_hash([i]) for i in again.ids] == before
    assert len(set(before)) == 12
    old_row = folder.inputs([4]).numpy()
    Image.new("RGB", (400, 300), (250, 10, 10)).save(tmp_path / "jpegs" / "a" / "004.jpg", quality=90)
    after = [folder.content_hash([i]) for i in folder.ids]
    assert [i for i in range(12) if after[i] != before[i]] == [4]
    new_row = folder.inputs([4]).numpy()  # the edited file is decoded again, not served from the cache
    assert not np.allclose(new_row, old_row) and abs(new_row[0, 0].mean() - 250 / 255) < 0.02


def test_resize_and_center_crop_follow_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert _resized((333, 500), 256) == (256, 384) and _resized((500, 333), 256) == (384, 256)
    for c, (size, bands) in {"wide": ((300, 100), "columns"), "tall": ((100, 300), "rows")}.items():
        (tmp_path / "bands" / c).mkdir(parents=True)
        img = np.zeros((size[1], size[0], 3), np.uint8)
        for k in range(3):  # red | green | blue thirds along the long side
            if bands == "columns":
                img[:, 100 * k:100 * (k + 1), k] = 255
            else:
                img[100 * k:100 * (k + 1), :, k] = 255
        Image.fromarray(img).save(tmp_path / "bands" / c / "x.png")
    _manifest(tmp_path, monkeypatch, f'''
[[dataset]]
id = "bands"
kind = "image_folder"
path = "{tmp_path / 'bands'}"
resize = 50
center_crop = [50, 50]
''')
    ds = get_dataset("bands")
    x = ds.inputs([0, 1]).numpy()
    assert x.shape == (2, 3, 50, 50)
    for i in range(2):  # resized to 150×50 / 50×150, the centre 50×50 is the green third
        centre = x[i][:, 5:45, 5:45]
        np.testing.assert_allclose(centre[1], 1.0, atol=1 / 255)
        np.testing.assert_allclose(centre[[0, 2]], 0.0, atol=1 / 255)


def test_crop_larger_than_the_image_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "small" / "a").mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(tmp_path / "small" / "a" / "tiny.png")
    _manifest(tmp_path, monkeypatch, f'''
[[dataset]]
id = "small"
kind = "image_folder"
path = "{tmp_path / 'small'}"
center_crop = 16
''')
    ds = get_dataset("small")
    with pytest.raises(DatasetError, match=r"'small': image .*tiny.png.* is 20x10 after resizing, smaller than "
                                           r"center_crop 16x16 .*set resize"):
        ds.inputs([0])


def test_builtin_content_hashes_are_unchanged():
    """Values of the previous version (c62b468): every stored key of a built-in dataset stays valid."""
    assert loupe.dataset("digits").content_hash([0]) == \
        "d79f4248e4a7e49fc4d647b6ab3763d163a0bd657193350f81de3505a508397c"
    assert loupe.dataset("breast_cancer").content_hash([3, 1, 2]) == \
        "17cd390f82da82809b9d7799e9da66cbfff49a067a8c045dd07496e7f695a7c2"
    assert loupe.dataset("shapes").content_hash([0]) == \
        "c654e8f65b5b411fda55afaff32d3086268c13a0b8363f859b2ccffc09bb97d6"


def _npz_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _manifest(tmp_path, monkeypatch, f'''
[[dataset]]
id = "arrays"
kind = "npz"
path = "{tmp_path / name}"
''')


def test_uncompressed_npz_opens_memory_mapped_with_the_same_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 1, 8, 8)), np.arange(20) % 2
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    _npz_entry(tmp_path, monkeypatch, "plain.npz")
    mapped = get_dataset("arrays")
    assert isinstance(mapped.eval.x, ArrayRows) and isinstance(mapped.eval.x.array, np.memmap)
    np.testing.assert_array_equal(mapped.inputs([5, 2]).numpy(), x[[5, 2]].astype(np.float32))
    in_memory = Dataset("arrays", "image", ["0", "1"], Split(x.astype(np.float32), y))
    assert mapped.content_hash([5, 2]) == in_memory.content_hash([5, 2])
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    _npz_entry(tmp_path, monkeypatch, "packed.npz")
    assert isinstance(get_dataset("arrays").eval.x, np.ndarray)


def test_large_mapped_npz_is_checked_as_rows_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    x = np.zeros((10, 4))
    x[5, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(10))
    monkeypatch.setattr(loaders, "SCAN_BYTES", 0)  # as if the file were too large to scan at open
    _npz_entry(tmp_path, monkeypatch, "nan.npz")
    ds = get_dataset("arrays")
    assert ds.inputs([0, 4]).shape == (2, 4)
    with pytest.raises(DatasetError, match=r"'arrays': x in .*nan.npz.* has NaN or infinite values \(first in sample 5\)"):
        ds.inputs([3, 5])


def test_rows_index_like_arrays(folder: Dataset):
    rows: Rows = folder.eval.x
    full = np.asarray(rows)
    np.testing.assert_array_equal(rows[2], full[2])
    np.testing.assert_array_equal(rows[-1], full[11])
    np.testing.assert_array_equal(rows[3:9:2], full[3:9:2])
    np.testing.assert_array_equal(rows[np.arange(12) % 3 == 0], full[::3])
    np.testing.assert_array_equal(rows.take(np.array([5, 1]))[[1]], full[[1]])
    with pytest.raises(IndexError, match="row 12 is out of range for 12 rows"):
        rows[[12]]


# -- samples travel outside the task graph ---------------------------------------------------------
def test_jobs_carry_references_to_files_the_worker_can_read(folder: Dataset):
    client = cluster.get_client()
    sent = job_samples(folder, (1, 2, 3), client)
    assert set(sent) == {"samples"} and isinstance(sent["samples"], SampleRef)
    assert len(pickle.dumps(sent)) < 4096  # ids, the manifest entry and a hash: no pixels
    assert folder.eval.x.stats()["decoded"] == 0


def test_worker_refuses_samples_whose_files_changed(folder: Dataset, tmp_path: Path):
    ref = sample_ref(folder, (0, 1))
    assert ref is not None and ref.open() is folder
    Image.new("RGB", (320, 240), (0, 0, 0)).save(tmp_path / "jpegs" / "a" / "001.jpg")
    with pytest.raises(DatasetError, match=r"'jpegs': samples 0…1 on the worker differ from the ones the request "
                                           r"was made for"):
        ref.open()


class _Tiny224(nn.Module):
    """A small CNN on 3×224×224 inputs (two classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _tiny224_entry(tmp_path: Path) -> str:
    """Saves :class:`_Tiny224` as TorchScript and returns its manifest entry (model id ``tiny224``)."""
    torch.jit.script(_Tiny224()).save(str(tmp_path / "tiny.ts"))
    return f'''
[[model]]
id = "tiny224"
kind = "torchscript"
path = "{tmp_path / 'tiny.ts'}"
task = "image"
input_shape = [3, 224, 224]
classes = ["a", "b"]
'''


def test_manifest_folder_explained_on_the_cluster_equals_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The worker reads the samples itself (by reference) and gets what this process reads."""
    _jpegs(tmp_path / "jpegs")
    _manifest(tmp_path, monkeypatch, _tiny224_entry(tmp_path) + f'''
[[dataset]]
id = "jpegs224"
kind = "image_folder"
path = "{tmp_path / 'jpegs'}"
resize = 256
center_crop = 224
''')
    ds = get_dataset("jpegs224")
    assert origin(ds) is not None and sample_ref(ds, (0,)) is not None
    res = loupe.explain("tiny224", "jpegs224", "0:12", "saliency", target="label")
    local = explain_samples(loupe.model("tiny224"), ds, list(range(12)), "saliency", target="label")
    np.testing.assert_allclose(res.attributions, local.attributions, rtol=1e-5, atol=1e-7)
    assert res.labels.tolist() == [0] * 6 + [1] * 6


def test_session_samples_are_scattered_so_dask_never_warns_of_a_large_graph(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """16 samples at 224×224 plus 32 background rows are 29 MB: inside the graph, Dask would warn."""
    _manifest(tmp_path, monkeypatch, _tiny224_entry(tmp_path))
    rng = np.random.default_rng(1)
    x = rng.random((40, 3, 224, 224), dtype=np.float32)
    session = Dataset("session224", "image", ["a", "b"], Split(x[:20], np.arange(20) % 2),
                      train=Split(x[20:], np.arange(20) % 2))
    register_dataset(session)
    assert origin(session) is None  # only this process has it: its samples must be shipped
    sent = job_samples(session, tuple(range(16)), cluster.get_client())
    assert {k: type(v).__name__ for k, v in sent.items()} == {"x": "Future", "masks": "NoneType",
                                                              "background": "Future"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = loupe.explain("tiny224", "session224", "0:16", "saliency")
        rows = loupe.predict("tiny224", "session224", "0:16")
    assert not [w for w in caught if "large graph" in str(w.message)]
    local = explain_samples(loupe.model("tiny224"), session, list(range(16)), "saliency")
    np.testing.assert_allclose(res.attributions, local.attributions, rtol=1e-5, atol=1e-7)
    assert [r["prediction"] for r in rows] == local.predictions.tolist()


def test_in_process_model_with_lazy_samples(folder: Dataset):
    """A session model runs in this process: it reads the lazy samples here, with their labels."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    from model_registry.registry import register_model

    register_model(ModelHandle("session_tiny32", net, "image", (3, 32, 32), ["a", "b"]))
    res = loupe.explain("session_tiny32", "jpegs", [2, 9], "saliency", target="label")
    assert res.labels.tolist() == res.targets.tolist() == [0, 1]
    assert np.isfinite(res.attributions).all() and np.abs(res.attributions).sum() > 0


def test_tables_stream_through_duckdb_and_read_only_the_rows_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from data.tables import TableRows

    rows = "\n".join(f"{r},{r * 0.5},{'dog' if r % 3 else 'cat'}" for r in range(50))
    (tmp_path / "t.csv").write_text(f"a,b,label\n{rows}\n")
    _manifest(tmp_path, monkeypatch, f'''
[[dataset]]
id = "rows"
kind = "table"
path = "{tmp_path / 't.csv'}"
label = "label"
''')
    ds = get_dataset("rows")
    assert isinstance(ds.eval.x, TableRows) and ds.eval.x.stats() == {"reads": 0} and len(ds) == 50
    assert ds.classes == ["cat", "dog"] and ds.labels([0, 1, 3]).tolist() == [0, 1, 0]
    np.testing.assert_array_equal(ds.inputs([7, 2, 7]).numpy(), [[7, 3.5], [2, 1], [7, 3.5]])
    assert ds.eval.x.stats() == {"reads": 1}
    copy = ds.eval.x.source
    assert copy.suffix == ".parquet" and copy.parent.name == "tables"  # the CSV's streamed copy
    in_memory = Dataset("rows", "tabular", ["cat", "dog"], Split(np.asarray(ds.eval.x), ds.eval.y))
    assert ds.content_hash([4, 9]) == in_memory.content_hash([4, 9])  # same keys as when tables were arrays
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,cat\n3,4,dog\n")
    edited = get_dataset("rows")
    assert len(edited) == 2 and edited.eval.x.source != copy
