"""Research scale (issue #15, "Done when"): a folder of 20,000 JPEGs of mixed sizes opens in
seconds, touching 10 samples costs memory for those samples only, every open gives the same ids
and content hashes, and a stored run reopens from the store in a fresh process without decoding
anything but the run's own samples. Slow: building the folder writes 20,000 files."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from torch import nn

import loupe
from data import registry as data_registry
from data.loaders import load_dataset
from model_registry.registry import current_manifest

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES, PER_CLASS = 100, 200
SIZES = [(24, 32), (50, 38), (32, 24), (38, 50), (40, 40)]  # width × height, small so the folder builds fast
TOUCHED = list(range(0, 20_000, 2_000))


def _build(root: Path) -> None:
    """100 class folders × 200 JPEGs; each image a smooth random colour field of one of five sizes."""
    rng = np.random.default_rng(0)
    for c in range(N_CLASSES):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            w, h = SIZES[(c + i) % len(SIZES)]
            coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
            coarse.resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.jpg", quality=85)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scale")
    started = time.perf_counter()
    _build(root / "jpegs")
    print(f"\nbuilt 20,000 JPEGs in {time.perf_counter() - started:.1f} s")
    torch.jit.script(_Tiny()).save(str(root / "tiny.ts"))
    classes = [f"class_{c:03d}" for c in range(N_CLASSES)]
    manifest = root / "manifest.toml"
    manifest.write_text(textwrap.dedent(f'''
        [[model]]
        id = "tiny100"
        kind = "torchscript"
        path = "{root / 'tiny.ts'}"
        task = "image"
        input_shape = [3, 32, 32]
        classes = {json.dumps(classes)}

        [[dataset]]
        id = "jpegs20k"
        kind = "image_folder"
        path = "{root / 'jpegs'}"
        resize = 32
        center_crop = 32
    '''))
    patch = pytest.MonkeyPatch()
    patch.setenv("LOUPE_MANIFEST", str(manifest))
    patch.setattr(data_registry, "_LOADED", {})
    yield root
    patch.undo()


@pytest.mark.slow
def test_twenty_thousand_jpegs_open_in_seconds_and_cost_memory_only_when_touched(big_folder: Path):
    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    started = time.perf_counter()
    ds = loupe.dataset("jpegs20k")
    opened = time.perf_counter() - started
    assert len(ds) == 20_000 and ds.input_shape == (3, 32, 32) and len(ds.classes) == N_CLASSES
    x = ds.inputs(TOUCHED).numpy()
    grown = process.memory_info().rss - baseline
    print(f"\nopen {opened:.2f} s; RSS +{grown / 2**20:.1f} MB after touching {len(TOUCHED)} samples; "
          f"{ds.eval.x.stats()}")
    assert opened < 5.0
    assert grown < 2**30
    assert x.shape == (10, 3, 32, 32) and ds.eval.x.stats()["decoded"] == 10


@pytest.mark.slow
def test_every_open_gives_the_same_ids_and_content_hashes(big_folder: Path):
    entry = current_manifest().dataset("jpegs20k")
    first, second = load_dataset(entry), load_dataset(entry)
    assert first.eval.x.files == second.eval.x.files
    np.testing.assert_array_equal(first.labels(first.ids), second.labels(second.ids))
    started = time.perf_counter()
    whole = first.content_hash(first.ids)
    print(f"\ncontent hash of all 20,000 samples (file bytes): {time.perf_counter() - started:.2f} s")
    assert whole == second.content_hash(second.ids)
    assert [first.content_hash([i]) for i in TOUCHED] == [second.content_hash([i]) for i in TOUCHED]
    assert first.eval.x.stats()["decoded"] == second.eval.x.stats()["decoded"] == 0


REOPEN = textwrap.dedent('''
    import json, sys, time
    started = time.perf_counter()
    import loupe
    ids = json.loads(sys.argv[1])
    ds = loupe.dataset("jpegs20k")
    res = loupe.stored("tiny100", "jpegs20k", ids, "saliency")
    found = time.perf_counter() - started
    before_images = ds.eval.x.stats()["decoded"]
    ds.inputs(res.sample_ids)  # what a page does next: show the run's images
    print(json.dumps({"cached": res.cached, "key": res.key, "decoded_to_find": before_images,
                      "decoded_to_show": ds.eval.x.stats()["decoded"], "seconds": found}))
''')


@pytest.mark.slow
def test_stored_run_reopens_in_a_fresh_process_without_decoding_anything_else(big_folder: Path):
    res = loupe.explain("tiny100", "jpegs20k", TOUCHED, "saliency")
    assert not res.cached and res.attributions.shape == (10, 32, 32)
    out = subprocess.run([sys.executable, "-c", REOPEN, json.dumps(TOUCHED)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nreopened in a fresh process: {found}")
    assert found["cached"] and found["key"] == res.key
    assert found["decoded_to_find"] == 0 and found["decoded_to_show"] == len(TOUCHED)


@pytest.mark.slow
def test_readme_imagenet_example_registers_with_its_manifest_lines_alone(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """The README's ResNet-50 + ImageNet-folder manifest block, with only the two paths changed."""
    import re

    from data.classes import imagenet, imagenet_names
    from model_registry import archs

    block = re.search(r"### A real-scale example.*?```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert block is not None
    torch.manual_seed(0)
    torch.save(archs.resnet50().state_dict(), tmp_path / "resnet50.pth")
    rng = np.random.default_rng(0)
    for cls in (imagenet()[1].wnid, imagenet()[954].wnid):  # goldfish, banana: WordNet-id folders
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i, size in enumerate([(500, 375), (240, 320)]):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                tmp_path / "val" / cls / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    text = block.group(1).replace("/models/resnet50.pth", str(tmp_path / "resnet50.pth"))
    text = text.replace("/data/imagenet/val", str(tmp_path / "val"))
    (tmp_path / "manifest.toml").write_text(text)
    monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
    model = loupe.model("resnet50_imagenet")
    assert model.classes == list(imagenet_names()) and model.meta["labels"] == "by name"
    assert loupe.dataset("imagenet_val").input_shape == (3, 224, 224)
    res = loupe.explain("resnet50_imagenet", "imagenet_val", [0, 2], "gradcam", target="label")
    assert res.targets.tolist() == [1, 954] and res.attributions.shape == (2, 224, 224)
