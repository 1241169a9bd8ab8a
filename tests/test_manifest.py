"""The manifest (parsing, one error per bad entry) and the model/dataset registries built on it.

The built-in zoo and datasets are replaced by tiny fakes in ``sys.modules`` so these tests exercise
the registries' lazy imports without training or generating anything.
"""
from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import data.registry as data_registry
import model_registry.registry as model_registry
from data.base import Dataset, DatasetError, Split
from manifest import EntryError, cached_manifest, read_manifest
from model_registry.base import ModelError, ModelHandle

ZOO_ID = "zoo_cnn"
BUILTIN_DS = "shapes"


def _tiny(seed: int, n_in: int = 4, n_out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 5), nn.ReLU(), nn.Linear(5, n_out)).eval()


def _builtin_dataset() -> Dataset:
    return Dataset(BUILTIN_DS, "tabular", ["a", "b", "c"], Split(np.zeros((2, 4), np.float32), np.array([0, 1])))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOUPE_HOME + manifest, fake built-ins, empty registry caches."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
    zoo = types.ModuleType("model_registry.zoo")
    zoo.ZOO = {ZOO_ID: object()}
    zoo.load_zoo_model = lambda model_id, device=None: ModelHandle(model_id, _tiny(0), "tabular", (4,), ["a", "b", "c"])
    builtin = types.ModuleType("data.builtin")
    builtin.BUILTIN_DATASETS = {BUILTIN_DS: _builtin_dataset}
    info = types.SimpleNamespace(task="tabular", classes=("a", "b", "c"), input_shape=(4,))
    builtin.BUILTIN_INFO = {BUILTIN_DS: info}
    builtin.load_builtin = lambda dataset_id: builtin.BUILTIN_DATASETS[dataset_id]()
    monkeypatch.setitem(sys.modules, "model_registry.zoo", zoo)
    monkeypatch.setitem(sys.modules, "data.builtin", builtin)
    for module in (model_registry, data_registry):
        for name in ("_LOADED", "_FAILED", "_SESSION"):
            monkeypatch.setattr(module, name, {})
    return tmp_path


def toml_entry(section: str, **fields: object) -> str:
    return f"[[{section}]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + "\n"


def ts_model(home: Path, name: str, seed: int = 0, n_in: int = 4, n_out: int = 3) -> Path:
    path = home / f"{name}.ts"
    torch.jit.script(_tiny(seed, n_in, n_out)).save(str(path))
    return path


def model(model_id: str, path: Path | str, **extra: object) -> str:
    fields = {"id": model_id, "kind": "torchscript", "path": str(path), "task": "tabular", "input_shape": [4],
              "classes": ["a", "b", "c"], **extra}
    return toml_entry("model", **fields)


def csv_dataset(home: Path, dataset_id: str, n_features: int = 4) -> str:
    header = ",".join(f"f{i}" for i in range(n_features)) + ",label"
    rows = [",".join(str(r + i) for i in range(n_features)) + f",{r % 3}" for r in range(6)]
    path = home / f"{dataset_id}.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return toml_entry("dataset", id=dataset_id, kind="table", path=path.name, label="label",
                      classes=["a", "b", "c"])


def write(home: Path, *parts: str) -> Path:
    path = home / "manifest.toml"
    path.write_text("\n".join(parts))
    return path


def errors_by_id(errors: list[EntryError]) -> dict[str | None, str]:
    return {e.id: e.reason for e in errors}


# -- parsing -------------------------------------------------------------------------------------------
def test_valid_entries_are_typed_and_relative_paths_resolve_against_the_manifest(home: Path) -> None:
    ts_model(home, "net")
    text = model("net", "net.ts", dataset="d", normalize_mean=[0, 0, 0, 1], layers=["0"]) + csv_dataset(home, "d")
    manifest = read_manifest(write(home, text))
    assert manifest.errors == []
    entry = manifest.model("net")
    assert entry is not None and entry.path == home / "net.ts"
    assert entry.input_shape == (4,) and entry.classes == ("a", "b", "c") and entry.layers == ("0",)
    assert entry.normalize_mean == (0.0, 0.0, 0.0, 1.0) and entry.value_range == (0.0, 1.0)
    assert entry.trust is False
    ds = manifest.dataset("d")
    assert ds is not None and ds.path == home / "d.csv" and ds.label == "label" and ds.test_fraction is None


def test_missing_manifest_is_empty(home: Path) -> None:
    manifest = read_manifest(home / "nope.toml")
    assert manifest.models == [] and manifest.datasets == [] and manifest.errors == []


BAD_ENTRIES = [
    ("missing_file", lambda h: model("missing_file", h / "nope.ts"), r"path file '.*nope.ts' does not exist"),
    ("bad_kind", lambda h: model("bad_kind", h / "good.ts", kind="onnx"),
     r"kind must be one of \['torchscript', 'state_dict', 'exported', 'sklearn'\], got 'onnx'"),
    ("bad_key", lambda h: model("bad_key", h / "good.ts", colour="red"), r"unknown key\(s\) \['colour'\]"),
    ("traversal", lambda h: model("traversal", "../../etc/passwd"), r"contains '\.\.' \(path traversal"),
    ("abs_traversal", lambda h: model("abs_traversal", f"{h}/../{h.name}/good.ts"), "path traversal"),
    ("bad/id", lambda h: model("bad/id", h / "good.ts"), r"id must match \[A-Za-z0-9_.-\]\+"),
    (ZOO_ID, lambda h: model(ZOO_ID, h / "good.ts"), "already taken by a built-in model"),
    ("img_shape", lambda h: model("img_shape", h / "good.ts", task="image"),
     r"input_shape for task 'image' must be \[channels, height, width\], got \[4\]"),
    ("sd_no_factory", lambda h: model("sd_no_factory", h / "good.ts", kind="state_dict"), "needs factory"),
    ("trust_ts", lambda h: model("trust_ts", h / "good.ts", trust=True),
     r"key 'trust' does not apply to kind 'torchscript'"),
    ("unknown_ds", lambda h: model("unknown_ds", h / "good.ts", dataset="nowhere"),
     r"dataset 'nowhere' is neither a built-in dataset nor a \[\[dataset\]\] entry"),
    ("one_class", lambda h: model("one_class", h / "good.ts", classes=["only"]), "at least 2 classes"),
    ("no_path", lambda h: toml_entry("model", id="no_path", kind="torchscript", task="tabular", input_shape=[4],
                                     classes=["a", "b"]), "missing required key 'path'"),
    ("npz_label", lambda h: toml_entry("dataset", id="npz_label", kind="npz", path=str(h / "good.ts"), label="y"),
     r"key 'label' does not apply to kind 'npz'"),
    ("no_folder", lambda h: toml_entry("dataset", id="no_folder", kind="image_folder", path=str(h / "good.ts")),
     "folder .* does not exist"),
    ("table_no_label", lambda h: toml_entry("dataset", id="table_no_label", kind="table", path=str(h / "good.ts")),
     "kind 'table' needs label"),
    (BUILTIN_DS, lambda h: toml_entry("dataset", id=BUILTIN_DS, kind="npz", path=str(h / "good.ts")),
     "already taken by a built-in dataset"),
]


@pytest.mark.parametrize(("bad_id", "make", "reason"), BAD_ENTRIES, ids=[b[0] for b in BAD_ENTRIES])
def test_each_bad_entry_is_reported_while_the_others_load(home: Path, bad_id: str, make, reason: str) -> None:
    ts_model(home, "good")
    write(home, model("good", home / "good.ts", dataset="d"), make(home), csv_dataset(home, "d"))
    manifest = cached_manifest(home / "manifest.toml", frozenset({ZOO_ID}), frozenset({BUILTIN_DS}))
    is_model = make(home).startswith("[[model]]")
    errors = errors_by_id(manifest.errors)
    assert list(errors) == [bad_id]
    assert errors[bad_id].endswith(" ([[model]] entry #2)" if is_model else " ([[dataset]] entry #1)")
    assert re.search(reason, errors[bad_id]), errors[bad_id]
    assert [m.id for m in manifest.models] == ["good"] and [d.id for d in manifest.datasets] == ["d"]
    lookup = model_registry.get_model if is_model else data_registry.get_dataset
    if bad_id in (ZOO_ID, BUILTIN_DS):
        assert lookup(bad_id).id == bad_id  # the built-in keeps its id
    else:
        with pytest.raises((ModelError, DatasetError), match=f"'{re.escape(bad_id)}' in .* is invalid: "):
            lookup(bad_id)
    assert model_registry.get_model("good", "cpu").logits(torch.ones(1, 4)).shape == (1, 3)


def test_duplicate_ids_reject_every_copy(home: Path) -> None:
    path = ts_model(home, "good")
    manifest = read_manifest(write(home, model("twin", path), model("twin", path), model("single", path)))
    assert [e.id for e in manifest.errors] == ["twin", "twin"]
    assert all("used by 2 [[model]] entries" in e.reason for e in manifest.errors)
    assert [m.id for m in manifest.models] == ["single"]


def test_all_problems_of_an_entry_make_one_error(home: Path) -> None:
    manifest = read_manifest(write(home, model("many", home / "nope.ts", colour="red", task="image")))
    assert len(manifest.errors) == 1
    reason = manifest.errors[0].reason
    assert "unknown key(s) ['colour']" in reason and "input_shape for task 'image'" in reason
    assert "does not exist" in reason


def test_toml_syntax_error_is_one_error_and_builtins_still_work(home: Path) -> None:
    write(home, "[[model]]\nid = 'x\n")
    manifest = read_manifest(home / "manifest.toml")
    assert [(e.kind, e.id) for e in manifest.errors] == [("manifest", None)]
    assert "cannot read" in manifest.errors[0].reason
    assert model_registry.get_model(ZOO_ID, "cpu").id == ZOO_ID
    assert [r["id"] for r in model_registry.list_models()] == [ZOO_ID]
    assert model_registry.manifest_errors() == manifest.errors


def test_single_table_and_unknown_sections_are_file_errors(home: Path) -> None:
    manifest = read_manifest(write(home, "[model]\nid = 'x'\n[models]\nid = 'y'\n"))
    reasons = " | ".join(e.reason for e in manifest.errors)
    assert "write [[model]], not [model]" in reasons and "unknown top-level key 'models'" in reasons
    assert manifest.models == []


# -- model registry ------------------------------------------------------------------------------------
def test_list_and_get_models_across_sources(home: Path) -> None:
    path = ts_model(home, "net", seed=3)
    write(home, model("net", path, description="mine"), model("ghost", home / "missing.ts"))
    rows = {r["id"]: r for r in model_registry.list_models()}
    assert rows[ZOO_ID]["source"] == "zoo" and rows[ZOO_ID]["status"] == "ok"
    assert rows[ZOO_ID]["input_shape"] == [4] and rows[ZOO_ID]["classes"] == ["a", "b", "c"]
    assert rows["net"]["status"] == "ok" and rows["net"]["description"] == "mine"
    assert rows["ghost"]["status"] == "error" and "does not exist" in rows["ghost"]["reason"]
    handle = model_registry.get_model("net", "cpu")
    assert handle.source == "manifest" and handle is model_registry.get_model("net", "cpu")
    torch.testing.assert_close(handle.logits(torch.ones(2, 4)), _tiny(3)(torch.ones(2, 4)).detach())
    with pytest.raises(ModelError, match=rf"unknown model 'nobody'; known: \['net', '{ZOO_ID}'\]"):
        model_registry.get_model("nobody")


def test_zoo_model_that_fails_to_load_is_listed_with_its_reason(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zoo = sys.modules["model_registry.zoo"]

    def broken(model_id: str, device=None) -> ModelHandle:
        raise ModelError(f"weights for {model_id!r} missing; run python -m model_registry.train_zoo")

    monkeypatch.setattr(zoo, "load_zoo_model", broken)
    rows = {r["id"]: r for r in model_registry.list_models()}
    assert rows[ZOO_ID]["status"] == "error" and "train_zoo" in rows[ZOO_ID]["reason"]


def test_load_failure_names_the_entry_and_shows_in_the_listing(home: Path) -> None:
    write(home, model("wide", ts_model(home, "wide", n_out=5)), model("fine", ts_model(home, "fine")))
    with pytest.raises(ModelError, match=r"'wide' outputs shape \[2, 5\] .* lists 3 classes"):
        model_registry.get_model("wide", "cpu")
    rows = {r["id"]: r for r in model_registry.list_models()}
    assert rows["wide"]["status"] == "error" and "outputs shape" in rows["wide"]["reason"]
    assert rows["fine"]["status"] == "ok"
    assert model_registry.get_model("fine", "cpu").id == "fine"


def test_list_models_check_loads_every_entry(home: Path) -> None:
    write(home, model("narrow", ts_model(home, "narrow", n_in=6)))
    assert {r["id"]: r["status"] for r in model_registry.list_models()}["narrow"] == "ok"
    rows = {r["id"]: r for r in model_registry.list_models(check=True)}
    assert rows["narrow"]["status"] == "error" and "does not accept input of shape [2, 4]" in rows["narrow"]["reason"]


def test_dataset_features_must_match_the_model_input(home: Path) -> None:
    write(home, model("m", ts_model(home, "m"), dataset="d5"), csv_dataset(home, "d5", n_features=5),
          model("ok", ts_model(home, "ok"), dataset="d4"), csv_dataset(home, "d4"))
    expected = r"model 'm' takes input_shape \[4\] but its dataset 'd5' has samples of shape \[5\]"
    with pytest.raises(ModelError, match=expected):
        model_registry.get_model("m", "cpu")
    assert model_registry.get_model("ok", "cpu").dataset == "d4"
    (home / "d5.csv").write_text((home / "d4.csv").read_text())  # fixing the dataset clears the error
    assert model_registry.get_model("m", "cpu").dataset == "d5"


def test_manifest_is_reread_when_the_file_changes(home: Path) -> None:
    path = ts_model(home, "first")
    write(home, model("first", path))
    assert [r["id"] for r in model_registry.list_models()] == [ZOO_ID, "first"]
    write(home, model("first", path), model("second", path, description="added while running"))
    assert [r["id"] for r in model_registry.list_models()] == [ZOO_ID, "first", "second"]
    assert model_registry.get_model("second", "cpu").meta["description"] == "added while running"


def test_replaced_weights_file_is_reloaded(home: Path) -> None:
    path = ts_model(home, "net", seed=1)
    write(home, model("net", path))
    before = model_registry.get_model("net", "cpu")
    torch.jit.script(_tiny(seed=2)).save(str(path))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000))
    after = model_registry.get_model("net", "cpu")
    assert after is not before and after.weights_hash != before.weights_hash


def test_register_model_in_process(home: Path) -> None:
    handle = ModelHandle("notebook_net", _tiny(5), "tabular", (4,), ["a", "b", "c"])
    model_registry.register_model(handle)
    assert model_registry.get_model("notebook_net") is handle and handle.source == "session"
    assert {r["id"]: r["source"] for r in model_registry.list_models()}["notebook_net"] == "session"
    with pytest.raises(ModelError, match=f"'{ZOO_ID}' is already used"):
        model_registry.register_model(ModelHandle(ZOO_ID, _tiny(5), "tabular", (4,), ["a", "b", "c"]))
    with pytest.raises(ModelError, match="must match"):
        model_registry.register_model(ModelHandle("no spaces", _tiny(5), "tabular", (4,), ["a", "b", "c"]))


# -- dataset registry ----------------------------------------------------------------------------------
def test_list_and_get_datasets(home: Path) -> None:
    write(home, csv_dataset(home, "d"), toml_entry("dataset", id="broken", kind="npz", path="broken.npz"))
    (home / "broken.npz").write_bytes(b"not a zip")
    rows = {r["id"]: r for r in data_registry.list_datasets()}
    assert rows[BUILTIN_DS]["source"] == "builtin" and rows[BUILTIN_DS]["input_shape"] == [4]
    assert rows["d"]["status"] == "ok" and rows["d"]["task"] == "tabular"
    assert "n_samples" not in rows["d"]  # listed without loading
    ds = data_registry.get_dataset("d")
    assert {r["id"]: r for r in data_registry.list_datasets()}["d"]["n_samples"] == 6
    assert ds is data_registry.get_dataset("d") and ds.input_shape == (4,) and len(ds) == 6
    assert data_registry.get_dataset(BUILTIN_DS).id == BUILTIN_DS
    with pytest.raises(DatasetError, match="dataset 'broken': cannot read"):
        data_registry.get_dataset("broken")
    assert {r["id"]: r["status"] for r in data_registry.list_datasets()}["broken"] == "error"
    with pytest.raises(DatasetError, match=rf"unknown dataset 'nope'; known: \['broken', 'd', '{BUILTIN_DS}'\]"):
        data_registry.get_dataset("nope")


def test_register_dataset_in_process(home: Path) -> None:
    ds = Dataset("mine", "tabular", ["a", "b"], Split(np.ones((3, 2), np.float32), np.array([0, 1, 0])))
    data_registry.register_dataset(ds)
    assert data_registry.get_dataset("mine") is ds
    with pytest.raises(DatasetError, match=f"'{BUILTIN_DS}' is already used"):
        data_registry.register_dataset(_builtin_dataset())
