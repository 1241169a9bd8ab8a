"""Bad input, table-driven (issue #9): every case must fail with a user error class (one that the CLI
prints as one line and the pages show with st.error) whose message says what is wrong, and must
lose nothing:

* the user's files are left exactly as they were (nothing deleted or rewritten);
* a run stored before the case still opens with the same maps (the database is intact);
* the good entries in the same manifest still load (one bad entry never hides the others);
* a pickle that would run code does not run it (its payload would create a file).

Cases go through the public entry points: ``loupe.model``/``loupe.dataset``/``loupe.explain``/
``loupe.run`` (API), ``python -m loupe`` (``loupe.main``, as the CLI parses strings), explainer
Params from strings (as a URL carries them) and the app itself (AppTest on ``?run=...``).
None of them reaches the Dask cluster: every request is refused before any work.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import loupe
from data.base import DatasetError
from explainers.base import ExplainError, ParamError
from explainers.registry import get_explainer
from model_registry.base import ModelError
from model_registry.uploads import RegistrationError, add_entry, save_upload
from store.keys import InvalidKey, RunNotFound
from store.runs import ItemRecord, Store

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
[[model]]
id = "good_model"
kind = "torchscript"
path = "good.ts"
task = "tabular"
input_shape = [4]
classes = ["a", "b"]

[[dataset]]
id = "good_rows"
kind = "npz"
path = "good.npz"
"""


class Evil:
    """Unpickling this calls ``open(marker, "w")``, i.e. runs code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- the workspace of one case ------------------------------------------------------------------
@dataclass
class Env:
    dir: Path
    monkeypatch: pytest.MonkeyPatch

    def manifest(self, *entries: str) -> None:
        """The manifest: the good entries plus ``entries`` (LOUPE_MANIFEST points here)."""
        (self.dir / "manifest.toml").write_text(GOOD + "\n".join(entries))

    def snapshot(self) -> dict[str, str]:
        """Every file under the workspace with the hash of its bytes."""
        return {str(p.relative_to(self.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.dir.rglob("*")) if p.is_file()}


def _toml(value: object) -> str:
    return json.dumps(value)


def entry(section: str, **fields: object) -> str:
    return f"[[{section}]]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in fields.items()) + "\n"


def linear_ts(path: Path, n_in: int = 4, n_out: int = 2) -> None:
    torch.manual_seed(0)
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_out))).save(str(path))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
    linear_ts(tmp_path / "good.ts")
    np.savez(tmp_path / "good.npz", x=np.arange(24, dtype=np.float32).reshape(6, 4), y=np.array([0, 1] * 3))
    workspace = Env(tmp_path, monkeypatch)
    workspace.manifest()
    return workspace


@pytest.fixture(scope="module")
def stored_run() -> tuple[str, np.ndarray]:
    """A run stored through the real Store before any case (hand-built maps, no model pass)."""
    ds = loupe.dataset("breast_cancer")
    ids = [0, 1, 2]
    maps = np.random.default_rng(0).normal(size=(3, 30)).astype(np.float32)
    meta = {"model_id": "breast_cancer_mlp", "weights_hash": "0" * 64, "dataset_id": "breast_cancer",
            "explainer_id": "saliency", "explainer_version": "1", "params": {"abs": True}, "device": "cpu"}
    keys = [hashlib.sha256(f"bad-inputs-{i}".encode()).hexdigest() for i in ids]
    labels = ds.labels(ids)
    store = Store()
    store.put_items(meta, [ItemRecord(k, i, int(labels[n]), 0, 0, 0.9, {"sparsity_gini": 0.5}, map=maps[n])
                           for n, (k, i) in enumerate(zip(keys, ids))])
    key = store.put_run({**meta, "sample_ids": ids, "content_hash": ds.content_hash(ids), "target": "predicted"},
                        keys)
    return key, maps


def uploads() -> list[str]:
    """Every file (hidden partial files included) under ``$LOUPE_HOME/uploads``."""
    from store.paths import loupe_home

    return sorted(str(p) for p in (loupe_home() / "uploads").rglob("*") if p.is_file())


def assert_nothing_lost(env: Env, before: dict[str, str], stored_run: tuple[str, np.ndarray]) -> None:
    assert env.snapshot() == before, "a user file was changed or deleted"
    key, maps = stored_run
    np.testing.assert_array_equal(loupe.run(key).attributions, maps)
    assert loupe.model("good_model").classes == ["a", "b"] and len(loupe.dataset("good_rows")) == 6


# -- file writers --------------------------------------------------------------------------------
def png_bytes(side: int = 32, seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` RGB pixels (and holds none): a decompression bomb's
    header, refused before any pixel is decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def image_folder(env: Env, bad_name: str | None = None, bad: bytes = b"", side: int = 8, mode: str = "RGB") -> None:
    """``imgs/a`` and ``imgs/b`` with valid images (plus one bad file in ``a``) and its entry."""
    for cls, seed in (("a", 1), ("b", 2)):
        (env.dir / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(env.dir / "imgs" / cls / "ok.png")
    if bad_name:
        (env.dir / "imgs" / "a" / bad_name).write_bytes(bad)
    env.manifest(entry("dataset", id="bad", kind="image_folder", path="imgs"))


def table(env: Env, name: str, text: str | None = None, frame: dict | None = None) -> None:
    path = env.dir / name
    if frame is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(frame), path)
    else:
        path.write_text(text or "")
    env.manifest(entry("dataset", id="bad", kind="table", path=name, label="target"))


def npz(env: Env, **arrays: np.ndarray) -> None:
    np.savez(env.dir / "bad.npz", **arrays)
    env.manifest(entry("dataset", id="bad", kind="npz", path="bad.npz"))


def model_file(env: Env, kind: str, write: Callable[[Path], None], **fields: object) -> None:
    write(env.dir / "bad.bin")
    base = {"id": "bad", "kind": kind, "path": "bad.bin", "task": "tabular", "input_shape": [4],
            "classes": ["a", "b"]}
    env.manifest(entry("model", **{**base, **fields}))


def grey_images_for_an_rgb_model(env: Env) -> None:
    image_folder(env, mode="L")
    linear_ts(env.dir / "rgb.ts", 3 * 8 * 8)
    env.manifest(entry("dataset", id="bad", kind="image_folder", path="imgs"),
                 entry("model", id="bad", kind="torchscript", path="rgb.ts", task="image", input_shape=[3, 8, 8],
                       classes=["a", "b"]))


def csv_as_npz(env: Env) -> None:
    (env.dir / "bad.npz").write_text("x,y\n0.5,1\n")
    env.manifest(entry("dataset", id="bad", kind="npz", path="bad.npz"))


def corrupt_npz(env: Env) -> None:
    (env.dir / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    env.manifest(entry("dataset", id="bad", kind="npz", path="bad.npz"))


def truncated_ts(path: Path) -> None:
    linear_ts(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def evil_pickle(path: Path) -> None:
    torch.save({"weight": Evil(path.with_name("PWNED"))}, path)


def evil_raw_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(Evil(path.with_name("PWNED"))))


# -- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    setup: Callable[[Env], None]
    act: Callable[[Env], object]
    error: type[BaseException]
    match: str


def _dataset(env: Env) -> object:
    return loupe.dataset("bad")


def _model(env: Env) -> object:
    return loupe.model("bad")


def _explain_bad(env: Env) -> object:
    return loupe.explain("bad", "bad", "all", "saliency")


CASES: dict[str, Case] = {
    # images
    "image-corrupt": Case(lambda e: image_folder(e, "x.png", b"\x89PNG garbage" * 30), _dataset, DatasetError,
                          r"'bad': cannot read image .*x\.png.*cannot identify image file"),
    "image-empty": Case(lambda e: image_folder(e, "x.png", b""), _dataset, DatasetError,
                        r"'bad': cannot read image .*x\.png"),
    "image-truncated": Case(lambda e: image_folder(e, "x.png", png_bytes()[:300]), _dataset, DatasetError,
                            r"'bad': cannot read image .*x\.png.*(truncated|broken)"),
    "image-oversized": Case(lambda e: image_folder(e, "x.png", png_header_only(10_000, 10_000)), _dataset,
                            DatasetError, r"'bad': cannot read image .*x\.png.*100000000 pixels.*exceeds limit"),
    "image-wrong-size": Case(lambda e: image_folder(e, "x.png", png_bytes(side=9)), _dataset, DatasetError,
                             r"'bad': image .*x\.png.* is 9x9 but earlier images are 8x8.*image_size"),
    "image-wrong-channels": Case(grey_images_for_an_rgb_model, _explain_bad, ExplainError,
                                 r"model 'bad' expects inputs of shape \[3, 8, 8\], dataset 'bad' has \[1, 8, 8\]"),
    # npz
    "npz-mismatched-xy": Case(lambda e: npz(e, x=np.ones((3, 4), np.float32), y=np.zeros(2, np.int64)), _dataset,
                              DatasetError, r"'bad': y in .* has shape \[2\] but x has 3 samples"),
    "npz-corrupt": Case(corrupt_npz, _dataset, DatasetError, r"'bad': cannot read .*bad\.npz.* as a \.npz"),
    "npz-is-a-csv": Case(csv_as_npz, _dataset, DatasetError,  # numpy itself would end with allow_pickle advice
                         r"'bad': cannot read .*bad\.npz.* as a \.npz: it is not a zip archive of \.npy arrays"),
    # tables
    "csv-empty": Case(lambda e: table(e, "t.csv", ""), _dataset, DatasetError, r"'bad': .*t\.csv.* has no data rows"),
    "csv-ragged": Case(lambda e: table(e, "t.csv", "f1,f2,target\n1,2,a\n3\n5,6,b\n"), _dataset, DatasetError,
                       r"'bad': cannot read .*t\.csv.* \(rows with a different number of fields"),
    "csv-nan": Case(lambda e: table(e, "t.csv", "f1,f2,target\n1,nan,a\n3,4,b\n"), _dataset, DatasetError,
                    r"feature column 'f2' has NaN or infinite values \(first at row 0\)"),
    "csv-inf": Case(lambda e: table(e, "t.csv", "f1,f2,target\n1,2,a\n-inf,4,b\n"), _dataset, DatasetError,
                    r"feature column 'f1' has NaN or infinite values \(first at row 1\)"),
    "csv-string-feature": Case(lambda e: table(e, "t.csv", "f1,f2,target\n1,2,a\n3,four,b\n"), _dataset,
                               DatasetError, r"feature column 'f2' is not numeric \(row 1 holds 'four'\)"),
    "csv-no-label-column": Case(lambda e: table(e, "t.csv", "f1,f2,label\n1,2,a\n"), _dataset, DatasetError,
                                r"label column 'target' not found; columns: \['f1', 'f2', 'label'\]"),
    "parquet-empty": Case(lambda e: table(e, "t.parquet", frame={"f1": pa_empty("float"), "target": pa_empty("str")}),
                          _dataset, DatasetError, r"'bad': .*t\.parquet.* has no data rows"),
    "parquet-nan": Case(lambda e: table(e, "t.parquet", frame={"f1": [1.0, float("nan")], "target": ["a", "b"]}),
                        _dataset, DatasetError, r"feature column 'f1' has (missing values|NaN or infinite values)"),
    "parquet-string-feature": Case(lambda e: table(e, "t.parquet", frame={"f1": ["x", "y"], "target": [0, 1]}),
                                   _dataset, DatasetError, r"feature column 'f1' is not numeric \(row 0 holds 'x'\)"),
    "parquet-corrupt": Case(lambda e: table(e, "t.parquet", "PAR1 this is not parquet PAR1"), _dataset,
                            DatasetError, r"'bad': cannot read .*t\.parquet"),
    # models
    "model-corrupt": Case(lambda e: model_file(e, "torchscript", lambda p: p.write_bytes(b"\x00junk" * 100)), _model,
                          ModelError, r"model 'bad': .*bad\.bin.* is not a readable TorchScript archive"),
    "model-truncated": Case(lambda e: model_file(e, "torchscript", truncated_ts), _model, ModelError,
                            r"model 'bad': .*bad\.bin.* is not a readable TorchScript archive"),
    "model-wrong-kind": Case(lambda e: model_file(e, "exported", linear_ts), _model, ModelError,
                             r"model 'bad': .*bad\.bin.* is not a readable exported program"),
    "model-npz-as-weights": Case(lambda e: model_file(e, "state_dict", lambda p: p.write_bytes(
        (e.dir / "good.npz").read_bytes()), factory="torch.nn:Identity"), _model, ModelError,
        r"model 'bad': .*bad\.bin.* is not a readable torch\.save file"),
    "model-wrong-output-size": Case(lambda e: model_file(e, "torchscript", linear_ts, classes=["a", "b", "c"]),
                                    _model, ModelError, r"'bad' outputs shape \[2, 2\].*lists 3 classes"),
    "model-wrong-input-shape": Case(lambda e: model_file(e, "torchscript", linear_ts, input_shape=[5]), _model,
                                    ModelError, r"'bad' does not accept input of shape \[2, 5\]"),
    "model-pickle-without-trust": Case(lambda e: model_file(e, "state_dict", evil_pickle, factory="torch.nn:Identity"),
                                       _model, ModelError,
                                       r"'bad'.*contains pickled Python objects \(.*open.*\); loading it can run code"),
    "model-raw-pickle-without-trust": Case(lambda e: model_file(e, "state_dict", evil_raw_pickle,
                                                                factory="torch.nn:Identity"), _model, ModelError,
                                           r"'bad'.*contains pickled Python objects \((io|builtins)\.open\)"),
    # manifest entries
    "manifest-path-traversal": Case(lambda e: e.manifest(entry("model", id="bad", kind="torchscript",
                                                               path="../good.ts", task="tabular", input_shape=[4],
                                                               classes=["a", "b"])),
                                    _model, ModelError, r"'bad' .* is invalid: .*contains '\.\.' \(path traversal"),
    "manifest-dataset-traversal": Case(lambda e: e.manifest(entry("dataset", id="bad", kind="npz",
                                                                  path="sub/../../good.npz")),
                                       _dataset, DatasetError, r"'bad' .* is invalid: .*path traversal is not allowed"),
    "manifest-unknown-key": Case(lambda e: e.manifest(entry("model", id="bad", kind="torchscript", path="good.ts",
                                                            task="tabular", input_shape=[4], classes=["a", "b"],
                                                            weights_only=False)),
                                 _model, ModelError, r"unknown key\(s\) \['weights_only'\]; allowed keys"),
    "manifest-trust-as-string": Case(lambda e: e.manifest(entry("model", id="bad", kind="state_dict", path="good.ts",
                                                                task="tabular", input_shape=[4], classes=["a", "b"],
                                                                trust="yes")),
                                     _model, ModelError, r"trust must be true or false, got 'yes'"),
    # uploads from the Registry page (model_registry/uploads.py); nothing is saved, the manifest is untouched
    "upload-over-limit": Case(lambda e: e.monkeypatch.setenv("LOUPE_MAX_UPLOAD_MB", "1"),
                              lambda e: save_upload("weights.pt", b"\0" * (2**20 + 1)), RegistrationError,
                              r"weights\.pt is larger than the upload limit of 1 MB \(LOUPE_MAX_UPLOAD_MB\)"),
    "upload-stream-over-limit": Case(lambda e: e.monkeypatch.setenv("LOUPE_MAX_UPLOAD_MB", "0.5"),
                                     lambda e: save_upload("rows.csv", io.BytesIO(b"1,2\n" * 2**18)),
                                     RegistrationError, r"rows\.csv is larger than the upload limit of 0\.5 MB"),
    "upload-limit-misconfigured": Case(lambda e: e.monkeypatch.setenv("LOUPE_MAX_UPLOAD_MB", "lots"),
                                       lambda e: save_upload("w.pt", b"abc"), RegistrationError,
                                       r"LOUPE_MAX_UPLOAD_MB must be a number of megabytes, got 'lots'"),
    "upload-empty": Case(lambda e: None, lambda e: save_upload("rows.npz", b""), RegistrationError,
                         r"rows\.npz is empty"),
    "upload-unusable-name": Case(lambda e: None, lambda e: save_upload("../..", b"abc"), RegistrationError,
                                 r"the file name '\.\./\.\.' has no usable characters"),
    "registry-corrupt-model": Case(lambda e: (e.dir / "up.pt").write_bytes(b"\x00junk" * 50),
                                   lambda e: add_entry("model", {"id": "up", "kind": "torchscript",
                                                                 "path": str(e.dir / "up.pt"), "task": "tabular",
                                                                 "input_shape": [4], "classes": ["a", "b"]}),
                                   RegistrationError, r"model 'up' does not load: .*not a readable TorchScript"),
    "registry-path-traversal": Case(lambda e: None,
                                    lambda e: add_entry("dataset", {"id": "up", "kind": "npz", "path": "../good.npz"}),
                                    RegistrationError, r"path traversal is not allowed"),
    # share link keys through the API
    "link-malformed": Case(lambda e: None, lambda e: loupe.run("not-a-key"), InvalidKey,
                           r"'not-a-key' is not a run key: keys are 64 hexadecimal characters"),
    "link-unknown": Case(lambda e: None, lambda e: loupe.run("f" * 64), RunNotFound, "no stored run with key f{64}"),
    "link-sql": Case(lambda e: None, lambda e: loupe.run("x' OR 1=1; DROP TABLE runs; --"), InvalidKey,
                     r"is not a run key"),
    # params as a URL carries them (strings)
    "url-param-not-int": Case(lambda e: None, lambda e: url_params("integrated_gradients", n_steps="abc"), ParamError,
                              r"n_steps must be an integer, got 'abc'"),
    "url-param-too-big": Case(lambda e: None, lambda e: url_params("integrated_gradients", n_steps="100000"),
                              ParamError, r"n_steps must be ≤ 1024, got 100000"),
    "url-param-nan": Case(lambda e: None, lambda e: url_params("smoothgrad", stdevs="nan"), ParamError,
                          r"stdevs must be finite, got 'nan'"),
    "url-param-bad-choice": Case(lambda e: None, lambda e: url_params("integrated_gradients", method="x'; --"),
                                 ParamError, r"method must be one of \['gausslegendre'.*got \"x'; --\""),
    "url-param-bool": Case(lambda e: None, lambda e: url_params("saliency", abs="maybe"), ParamError,
                           r"abs must be true or false, got 'maybe'"),
    "url-param-unknown": Case(lambda e: None, lambda e: url_params("saliency", steps="3"), ParamError,
                              r"unknown parameter\(s\) \['steps'\]; known: \['abs'\]"),
    "api-batch-size-zero": Case(lambda e: None, lambda e: loupe.explain("good_model", "good_rows", "0:2", "saliency",
                                                                        batch_size=0),
                                ExplainError, r"batch_size must be an integer ≥ 1, got 0"),
}


def pa_empty(kind: str):
    import pyarrow as pa

    return pa.array([], type=pa.float64() if kind == "float" else pa.string())


def url_params(explainer: str, **values: str) -> object:
    return get_explainer(explainer).Params.from_dict(values)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_a_clear_error_and_loses_nothing(name: str, env: Env, stored_run) -> None:
    case = CASES[name]
    case.setup(env)
    before, uploaded = env.snapshot(), uploads()
    with pytest.raises(case.error, match=case.match) as caught:
        case.act(env)
    assert isinstance(caught.value, loupe.user_errors()), f"{type(caught.value).__name__} is not a user error"
    assert "Traceback" not in str(caught.value)
    assert not (env.dir / "PWNED").exists(), "a pickle ran code"
    assert uploads() == uploaded, "a refused upload left a file"
    assert_nothing_lost(env, before, stored_run)


def test_the_evil_payload_is_real_it_runs_only_with_trust(env: Env) -> None:
    """The control for the pickle cases: with ``trust = true`` the same file does create its marker."""
    model_file(env, "state_dict", evil_raw_pickle, trust=True)
    with pytest.raises(ModelError, match="'bad'"):
        loupe.model("bad")
    assert (env.dir / "PWNED").exists()


# -- the same, as the CLI parses it: one line on stderr, exit status 2 ------------------------------
CLI_CASES: dict[str, tuple[list[str], str]] = {
    "set-not-int": (["--set", "n_steps=abc"], r"n_steps must be an integer, got 'abc'"),
    "set-below-low": (["--set", "n_steps=0"], r"n_steps must be ≥ 1, got 0"),
    "set-without-equals": (["--set", "n_steps"], r"--set expects key=value, got 'n_steps'"),
    "target-out-of-range": (["--target", "7"], r"target class 7 is out of range: the model has 2 classes"),
    "target-word": (["--target", "biggest"], r"target must be 'predicted', 'label' or a class index"),
    "samples-malformed": (["--samples", "1:2:3:4"], r"samples must look like 'all', '0:16'"),
    "samples-out-of-range": (["--samples", "5,600"], r"dataset 'breast_cancer' has sample ids 0\.\.142; unknown ids: \[600\]"),
    "batch-size-negative": (["--batch-size", "-3"], r"batch_size must be an integer ≥ 1, got -3"),
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_prints_one_line_and_exits_2(name: str, capsys: pytest.CaptureFixture, stored_run) -> None:
    extra, match = CLI_CASES[name]
    argv = ["explain", "--model", "breast_cancer_mlp", "--dataset", "breast_cancer", "--samples", "0:2",
            "--explainer", "integrated_gradients", *extra]
    assert loupe.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert re.search(match, err), err
    np.testing.assert_array_equal(loupe.run(stored_run[0]).attributions, stored_run[1])


@pytest.mark.parametrize("key", ["x' OR '1'='1", "0" * 64, "../../../etc/passwd"])
def test_cli_link_with_a_bad_key(key: str, capsys: pytest.CaptureFixture) -> None:
    assert loupe.main(["link", "--run", key]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("is not a run key" in err or "no stored result" in err)


# -- the app on a bad share link: "Run not found", and the same session then opens a good one ------
@pytest.mark.parametrize("key", ["nonsense", "f" * 64, "'; DROP TABLE runs; --"])
def test_app_survives_a_bad_link(key: str, stored_run) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = key
    at.run()
    assert not at.exception and "Run not found" in at.error[0].value
    at.query_params["run"] = stored_run[0]
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Explain" and any(stored_run[0] in m.value for m in at.markdown)
