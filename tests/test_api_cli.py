"""Issue #2 end to end: the public API and the CLI on the zoo and on user models/datasets registered
through the manifest (TorchScript + image folder / npz, state_dict + Parquet table), and the clear
errors for bad entries while the good ones keep working."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import loupe
from model_registry.base import ModelError, Normalize

ROOT = Path(__file__).resolve().parents[1]

FACTORY = '''
from torch import nn

def build(n_features=6):
    return nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, 2))
'''


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loupe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {}),
                                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})


def test_cli_explain_prints_sixteen_results_with_metrics():
    out = cli("explain", "--model", "shapes_cnn", "--dataset", "shapes", "--samples", "0:16",
              "--explainer", "integrated_gradients", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["results"]) == 16 and doc["key"] and doc["link"].endswith(doc["key"])
    for row in doc["results"]:
        assert {"deletion_auc", "insertion_auc", "pointing_hit", "mask_energy"} <= set(row)
        assert isinstance(row["pointing_hit"], bool)
    hits = np.mean([r["pointing_hit"] for r in doc["results"]])
    assert hits > 0.25, "IG on a 95%-accurate CNN should usually point inside the shape"


def test_cli_lists_and_errors():
    models = json.loads(cli("models", "--json").stdout)
    assert {"shapes_cnn", "highdim_mlp"} <= {m["id"] for m in models}
    explainers = json.loads(cli("explainers", "--json").stdout)
    assert any(p["name"] == "n_steps" for e in explainers if e["id"] == "integrated_gradients" for p in e["params"])
    bad = cli("explain", "--model", "nope", "--dataset", "shapes", "--explainer", "saliency")
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("explain", "--model", "shapes_cnn", "--dataset", "shapes", "--explainer", "saliency",
              "--set", "abs=maybe")
    assert bad.returncode == 2 and "abs must be true or false" in bad.stderr
    bad = cli("explain", "--model", "shapes_cnn", "--dataset", "shapes", "--samples", "999999",
              "--explainer", "saliency")
    assert bad.returncode == 2 and "unknown ids" in bad.stderr
    bad = cli("explain", "--model", "breast_cancer_mlp", "--dataset", "shapes", "--explainer", "saliency")
    assert bad.returncode == 2 and "tabular" in bad.stderr
    bad = cli("link", "--run", "' OR 1=1 --")
    assert bad.returncode == 2 and "is not a run key" in bad.stderr


def test_api_matches_the_issue_example():
    ds = loupe.dataset("shapes")
    assert ds.classes == ["circle", "square", "triangle", "cross"]
    assert ds.inputs([0, 1]).shape == (2, 3, 64, 64) and ds.masks([0, 1]).shape == (2, 64, 64)
    m = loupe.model("shapes_cnn")
    assert not m.module.training and m.classes == ds.classes
    res = loupe.explain(model="shapes_cnn", dataset="shapes", samples=[0, 1, 2], explainer="integrated_gradients",
                        params={"n_steps": 32})
    assert res.attributions.shape == (3, 64, 64)
    logits = m.module(ds.inputs([0, 1, 2]).to(m.device))
    np.testing.assert_array_equal(res.predictions, logits.argmax(1).cpu().numpy())
    np.testing.assert_array_equal(res.targets, res.predictions)
    labelled = loupe.explain("shapes_cnn", "shapes", [0, 1, 2], "saliency", target="label")
    np.testing.assert_array_equal(labelled.targets, ds.labels([0, 1, 2]))
    assert {"deletion_auc", "insertion_auc", "pointing_hit"} <= set(res.metrics[0])


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize([0.5] * 3, [0.25] * 3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(self.norm(x)))).flatten(1))


@pytest.fixture
def user_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cluster: object) -> Path:
    """A manifest with a TorchScript image model, a state_dict tabular model, an image folder, an npz
    and a Parquet table, plus three bad entries."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    torch.jit.script(TinyCNN().eval()).save(str(tmp_path / "cnn.pt"))
    for cls in ("dark", "light"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            base = 60 if cls == "dark" else 190
            pixels = np.clip(rng.normal(base, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / cls / f"{i}.png")
    np.savez(tmp_path / "images.npz", x=rng.random((5, 3, 16, 16), dtype=np.float32), y=np.array([0, 1, 0, 1, 1]),
             masks=rng.random((5, 16, 16)) > 0.5)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tiny_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'pkg'}{os.pathsep}{ROOT}")
    from tiny_factory import build

    torch.save(build().state_dict(), tmp_path / "mlp.pt")
    import pandas as pd

    table = pd.DataFrame(rng.normal(size=(12, 6)), columns=[f"x{i}" for i in range(6)]).assign(y=[0, 1] * 6)
    table.to_parquet(tmp_path / "rows.parquet")
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a torch file")
    with open(tmp_path / "module.pt", "wb") as fh:
        pickle.dump(build(), fh)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "ts_cnn"
kind = "torchscript"
path = "{tmp_path / 'cnn.pt'}"
task = "image"
input_shape = [3, 16, 16]
classes = ["dark", "light"]

[[model]]
id = "sd_mlp"
kind = "state_dict"
path = "{tmp_path / 'mlp.pt'}"
factory = "tiny_factory:build"
task = "tabular"
input_shape = [6]
classes = ["no", "yes"]
dataset = "rows"

[[model]]
id = "corrupt"
kind = "state_dict"
path = "{tmp_path / 'corrupt.pt'}"
factory = "tiny_factory:build"
task = "tabular"
input_shape = [6]
classes = ["no", "yes"]

[[model]]
id = "pickled"
kind = "state_dict"
path = "{tmp_path / 'module.pt'}"
factory = "tiny_factory:build"
task = "tabular"
input_shape = [6]
classes = ["no", "yes"]

[[model]]
id = "no_file"
kind = "torchscript"
path = "{tmp_path / 'missing.pt'}"
task = "image"
input_shape = [3, 16, 16]
classes = ["dark", "light"]

[[dataset]]
id = "folder"
kind = "image_folder"
path = "{tmp_path / 'images'}"

[[dataset]]
id = "arrays"
kind = "npz"
path = "{tmp_path / 'images.npz'}"

[[dataset]]
id = "rows"
kind = "table"
path = "{tmp_path / 'rows.parquet'}"
label = "y"
''')
    monkeypatch.setenv("LOUPE_MANIFEST", str(manifest))
    return manifest  # the cluster starts (fresh_cluster) after this, so its workers can import the factory


@pytest.mark.parametrize("model,dataset,explainer,shape", [
    ("ts_cnn", "folder", "integrated_gradients", (6, 16, 16)),
    ("ts_cnn", "arrays", "occlusion", (5, 16, 16)),
    ("sd_mlp", "rows", "shap", (12, 6)),
])
def test_manifest_models_and_datasets_work_like_the_zoo(user_manifest, model, dataset, explainer, shape):
    res = loupe.explain(model, dataset, "all", explainer)
    assert res.attributions.shape == shape and np.isfinite(res.attributions).all()
    assert len(res.metrics) == shape[0] and "deletion_auc" in res.metrics[0]
    out = cli("explain", "--model", model, "--dataset", dataset, "--samples", "all", "--explainer", explainer,
              "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["key"] == res.key and len(doc["results"]) == shape[0]


def test_bad_entries_are_named_and_the_others_still_work(user_manifest):
    rows = {m["id"]: m for m in loupe.models()}
    assert rows["no_file"]["status"] == "error" and "no_file" in rows
    with pytest.raises(ModelError, match="corrupt"):
        loupe.model("corrupt")
    with pytest.raises(ModelError, match="pickled Python objects.*trust = true"):
        loupe.model("pickled")
    with pytest.raises(ModelError, match="no_file"):
        loupe.model("no_file")
    listed = {m["id"]: m for m in loupe.models()}
    assert listed["corrupt"]["status"] == "error" and "corrupt" in listed["corrupt"]["reason"]
    assert loupe.explain("sd_mlp", "rows", "0:3", "saliency").attributions.shape == (3, 6)
    out = cli("models", "--json")
    by_id = {m["id"]: m for m in json.loads(out.stdout)}
    assert by_id["no_file"]["status"] == "error" and by_id["ts_cnn"]["status"] == "ok"


def test_cli_export_and_link(tmp_path):
    res = loupe.explain("digits_cnn", "digits", "0:5", "gradcam")
    out = cli("export", "--run", res.key, "--csv", str(tmp_path / "run.csv"), "--parquet",
              str(tmp_path / "run.parquet"), "--maps", str(tmp_path / "maps.npz"), "--k", "3")
    assert out.returncode == 0, out.stderr
    import pandas as pd

    frame = pd.read_csv(tmp_path / "run.csv")
    assert list(frame["sample_id"]) == [0, 1, 2, 3, 4] and set(frame["explainer"]) == {"gradcam"}
    assert {"deletion_auc", "insertion_auc", "top3_value", "top1_row", "top1_col", "link"} <= set(frame.columns)
    assert pd.read_parquet(tmp_path / "run.parquet").shape == frame.shape
    maps = np.load(tmp_path / "maps.npz")
    np.testing.assert_array_equal(maps[f"{res.key}_3"], res.attributions[3])
    out = cli("export", "--all", "--explainer", "gradcam", "--model", "digits_cnn", "--csv", str(tmp_path / "all.csv"))
    assert out.returncode == 0, out.stderr
    everything = pd.read_csv(tmp_path / "all.csv")
    assert set(everything["explainer"]) == {"gradcam"} and res.key in set(everything["run_key"])
    link = cli("link", "--run", res.key)
    assert link.returncode == 0 and link.stdout.strip() == res.link
    missing = cli("link", "--run", "0" * 64)
    assert missing.returncode == 2 and "no stored result" in missing.stderr


def test_cli_explain_table_shows_metric_directions_and_its_csv_class_names(tmp_path):
    out = cli("explain", "--model", "digits_cnn", "--dataset", "digits", "--samples", "0:2", "--explainer", "saliency",
              "--csv", str(tmp_path / "r.csv"))
    assert out.returncode == 0, out.stderr
    assert "deletion_auc ↓" in out.stdout and "insertion_auc ↑" in out.stdout
    import pandas as pd

    frame = pd.read_csv(tmp_path / "r.csv")
    classes = loupe.dataset("digits").classes
    assert list(frame.columns[5:11]) == ["label", "label_name", "target", "target_name", "prediction",
                                         "prediction_name"]
    names = pd.read_csv(tmp_path / "r.csv", dtype={"label_name": str, "prediction_name": str})  # names "0".."9"
    assert names["label_name"].tolist() == [classes[i] for i in frame["label"]]
    assert names["prediction_name"].tolist() == [loupe.model("digits_cnn").classes[i] for i in frame["prediction"]]
