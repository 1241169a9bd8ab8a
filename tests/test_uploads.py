"""model_registry.uploads: uploaded files are size-limited, safely named and written atomically;
manifest entries are validated (parsed, loaded, probed) before the manifest changes."""
from __future__ import annotations

import io
import tomllib

import numpy as np
import pytest
import torch
from torch import nn

from model_registry.uploads import RegistrationError, add_entry, max_upload_bytes, safe_filename, save_upload


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    monkeypatch.delenv("LOUPE_MANIFEST", raising=False)
    return tmp_path


def _script_bytes(n_in: int = 4, n_out: int = 2) -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(n_in, n_out))), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "expected"), [
    ("model.pt", "model.pt"), ("../../etc/passwd", "passwd"), ("..\\..\\evil.pt", "evil.pt"),
    (".hidden.pt", "hidden.pt"), ("my model (v2).pt", "my_model_v2_.pt"), ("/abs/x.npz", "x.npz")])
def test_safe_filename_keeps_only_a_base_name(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["", "..", "/", "???"])
def test_unusable_names_are_refused(name):
    with pytest.raises(RegistrationError, match="no usable characters"):
        safe_filename(name)


def test_save_upload_is_content_addressed_and_inside_uploads(home):
    path = save_upload("../weights.pt", b"abc")
    assert path.read_bytes() == b"abc" and path.name == "weights.pt"
    assert path.parent.parent == home / "uploads"
    assert save_upload("weights.pt", io.BytesIO(b"abc")) == path  # same content, same place
    assert save_upload("weights.pt", b"abd") != path
    assert not list((home / "uploads").glob(".upload-*"))  # no temporary file left behind


def test_upload_limit_from_the_environment(home, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_UPLOAD_MB", "0.5")
    assert max_upload_bytes() == 2**19
    assert save_upload("fits.pt", b"x" * 2**19).stat().st_size == 2**19
    with pytest.raises(RegistrationError, match="larger than the upload limit of 0.5 MB"):
        save_upload("big.pt", io.BytesIO(b"x" * (2**19 + 1)))
    assert not (home / "uploads").exists() or not any((home / "uploads").rglob("big.pt"))
    monkeypatch.setenv("LOUPE_MAX_UPLOAD_MB", "lots")
    with pytest.raises(RegistrationError, match="must be a number"):
        max_upload_bytes()


def test_empty_upload_is_refused(home):
    with pytest.raises(RegistrationError, match="empty"):
        save_upload("x.pt", b"")


def _model_values(path, **extra) -> dict:
    return {"id": "tiny", "kind": "torchscript", "path": str(path), "task": "tabular", "input_shape": [4],
            "classes": ["a", "b"], **extra}


def test_add_model_entry_validates_then_writes(home):
    path = save_upload("tiny.pt", _script_bytes())
    entry = add_entry("model", _model_values(path, description='quote " and \\ backslash'))
    assert entry.id == "tiny" and entry.path == path
    data = tomllib.loads((home / "manifest.toml").read_text())
    assert data["model"][0]["input_shape"] == [4] and data["model"][0]["description"] == 'quote " and \\ backslash'
    import loupe

    assert any(m["id"] == "tiny" and m["status"] == "ok" for m in loupe.models())
    with pytest.raises(RegistrationError, match="already registered"):
        add_entry("model", _model_values(path))


@pytest.mark.parametrize(("values", "message"), [
    (lambda p: _model_values(p, input_shape=[5]), "does not load"),           # the probe's forward fails
    (lambda p: _model_values(p, classes=["a", "b", "c"]), "does not load"),  # 2 outputs, 3 classes
    (lambda p: _model_values(p, kind="onnx"), "kind must be one of"),
    (lambda p: _model_values(p.parent / "missing.pt"), "does not exist"),
    (lambda p: _model_values(p, id="shapes_cnn"), "built-in"),
    (lambda p: _model_values("../x.pt"), "path traversal"),
])
def test_bad_model_entries_leave_the_manifest_untouched(home, values, message):
    path = save_upload("tiny.pt", _script_bytes())
    manifest = home / "manifest.toml"
    manifest.write_text("# mine\n")
    with pytest.raises(RegistrationError, match=message):
        add_entry("model", values(path))
    assert manifest.read_text() == "# mine\n"
    assert not list(home.glob(".manifest-*"))


def test_add_dataset_entry_loads_it(home):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(0).random((6, 4)).astype(np.float32), y=np.array([0, 1] * 3))
    path = save_upload("table.npz", buffer.getvalue())
    entry = add_entry("dataset", {"id": "tbl", "kind": "npz", "path": str(path)})
    assert entry.id == "tbl"
    with pytest.raises(RegistrationError, match="does not load"):
        add_entry("dataset", {"id": "bad", "kind": "npz", "path": str(save_upload("bad.npz", b"not a zip"))})
    assert "bad" not in (home / "manifest.toml").read_text()


def test_unknown_section_is_refused(home):
    with pytest.raises(RegistrationError, match="section must be one of"):
        add_entry("explainer", {"id": "x"})
