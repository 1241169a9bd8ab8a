"""Classes by name (issue #15, item 2): a dataset's labels become the model's class indices by an
explicit class_map, by name (WordNet ids and lemmas against ImageNet-1k), or by position; otherwise
target="label" is refused naming both class lists.

The integration tests register a 1000-class ResNet-18 (``model_registry.archs``, torchvision key
names, no ``classes`` list: ImageNet-1k) whose head is set to nearest-prototype over three colours,
so it is right on every image of a folder whose classes are named after ImageNet classes 42, 500
and 7: with labels as folder positions (0, 1, 2) every target, accuracy and "correct" would be wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import loupe
from data.base import DatasetError
from data.classes import UNMAPPED, imagenet, imagenet_names, map_classes
from model_registry import archs
from worker import cluster

# ImageNet index -> (folder name, colour): a WordNet id, a display name with underscores, a lemma
FOLDERS = {42: ("n01687978", (200, 40, 40)), 500: ("Cliff_Dwelling", (40, 200, 40)), 7: ("cock", (40, 40, 200))}
SIZE = 64


# -- the rules ------------------------------------------------------------------------------------
def test_imagenet_list_ships_with_loupe_in_index_order():
    table = imagenet()
    assert len(table) == 1000 and len(set(imagenet_names())) == 1000
    assert (table[0].wnid, table[0].name) == ("n01440764", "tench")
    assert (table[999].wnid, table[999].name) == ("n15075141", "toilet tissue")
    assert [c.wnid for c in table] == sorted(c.wnid for c in table)  # ILSVRC order is by WordNet id


def test_same_classes_keep_their_indices():
    mapping = map_classes(["cat", "dog"], ["cat", "dog"])
    assert mapping.how == "same classes" and mapping.identity
    np.testing.assert_array_equal(mapping.labels(np.array([1, 0, 1])), [1, 0, 1])


def test_names_map_whatever_their_order_case_or_underscores():
    mapping = map_classes(["zebra", "golden retriever", "cat"], ["Cat", "golden_retriever"])
    assert mapping.how == "by name" and mapping.index == (2, 1) and not mapping.identity


def test_imagenet_folders_map_by_wordnet_id_name_or_lemma():
    mapping = map_classes(imagenet_names(), ["n01440764", "great_white_shark", "Goldfish", "tabby_cat"])
    assert mapping.how == "by name" and mapping.index == (0, 2, 1, 281)


def test_a_name_that_means_two_imagenet_classes_is_refused_naming_them():
    mapping = map_classes(imagenet_names(), ["crane", "tench"])
    assert not mapping.mapped
    assert "'crane' names several model classes (['crane (n02012849)', 'crane (n03126707)'])" in mapping.problem


def test_explicit_map_by_name_or_index_and_its_mistakes():
    ok = map_classes(imagenet_names(), ["kitty", "pup", "tench"], {"kitty": "tabby", "pup": 207})
    assert ok.how == "explicit" and ok.index == (281, 207, 0)
    bad = map_classes(["a", "b"], ["x", "y"], {"x": "b", "y": 5, "w": "a"})
    assert not bad.mapped and bad.labels(np.array([0, 1])).tolist() == [UNMAPPED, UNMAPPED]
    assert "class_map names 'w', which is not a dataset class" in bad.problem
    assert "class_map sends 'y' to index 5, outside 0..1" in bad.problem


def test_positions_only_when_counts_agree_and_no_name_moves():
    assert map_classes(["a", "b", "c"], ["x", "y", "z"]).how == "by position"
    assert map_classes(["a", "b", "c"], ["a", "y", "z"]).index == (0, 1, 2)  # 'a' stays where it is
    moved = map_classes(["a", "b", "c"], ["b", "y", "z"])
    assert not moved.mapped and "['b'] name model classes at other positions" in moved.problem
    counts = map_classes(["a", "b", "c"], ["x", "y"])
    assert not counts.mapped and "2 dataset classes against 3 model classes" in counts.problem
    assert "dataset classes (2: ['x', 'y']); model classes (3: ['a', 'b', 'c'])" in counts.problem


# -- a 1000-class model and an ImageNet-style folder ----------------------------------------------
def _folder(root: Path, folders: dict[int, tuple[str, tuple[int, int, int]]], per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in folders.values():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{i}.png")
    return root


def _prototype_resnet(images: dict[int, torch.Tensor]) -> torch.nn.Module:
    """ResNet-18 at 1000 classes whose head scores -|features - prototype_c|² for the three classes
    (prototype: the mean features of that class's images) and -1e4 for every other class."""
    torch.manual_seed(0)
    net = archs.resnet18(num_classes=1000).eval()
    seen = {}
    hook = net.fc.register_forward_pre_hook(lambda _m, inputs: seen.update(f=inputs[0].detach()))
    try:
        with torch.no_grad():
            protos = {}
            for index, x in images.items():
                net(x)
                protos[index] = seen["f"].mean(0)
            net.fc.weight.zero_()
            net.fc.bias.fill_(-1e4)
            for index, p in protos.items():
                net.fc.weight[index] = 2 * p
                net.fc.bias[index] = -(p @ p)
    finally:
        hook.remove()
    return net


@pytest.fixture(scope="module")
def imagenet_setup(tmp_path_factory: pytest.TempPathFactory):
    """A manifest with the 1000-class model (no classes list), the named folder, a folder of
    unknown classes and one with an explicit class_map."""
    root = tmp_path_factory.mktemp("classes")
    _folder(root / "named", FOLDERS)
    _folder(root / "unknown", {0: ("apple_pie_x", (90, 90, 90)), 1: ("zzz", (10, 10, 10))}, per_class=1)
    _folder(root / "mapped", {0: ("kitty", (10, 10, 10)), 1: ("pup", (90, 90, 90))}, per_class=1)
    pictures = {}
    for index, (name, _) in FOLDERS.items():
        files = sorted((root / "named" / name).iterdir())
        arrays = [np.asarray(Image.open(p), np.float32).transpose(2, 0, 1) / 255 for p in files]
        pictures[index] = torch.from_numpy(np.stack(arrays))
    torch.save(_prototype_resnet(pictures).state_dict(), root / "resnet18_inet.pt")
    manifest = root / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "inet18"
kind = "state_dict"
path = "{root / 'resnet18_inet.pt'}"
factory = "model_registry.archs:resnet18"
task = "image"
input_shape = [3, {SIZE}, {SIZE}]
dataset = "named"
layers = ["layer4.1.conv1", "layer4.1.conv2"]

[[dataset]]
id = "named"
kind = "image_folder"
path = "{root / 'named'}"

[[dataset]]
id = "unknown"
kind = "image_folder"
path = "{root / 'unknown'}"

[[dataset]]
id = "mapped"
kind = "image_folder"
path = "{root / 'mapped'}"
class_map = {{ kitty = "tabby", pup = 207 }}
''')
    patch = pytest.MonkeyPatch()
    patch.setenv("LOUPE_MANIFEST", str(manifest))
    yield root
    patch.undo()
    cluster.shutdown()


def _expected(ids: list[int]) -> list[int]:
    """Model indices of the named folder's samples (folders sort as cock, Cliff_Dwelling, n01687978)."""
    by_folder = {name: index for index, (name, _) in FOLDERS.items()}
    order = sorted(by_folder)
    return [by_folder[order[i // 3]] for i in ids]


def test_model_without_classes_gets_imagenets_and_its_dataset_maps_by_name(imagenet_setup):
    model = loupe.model("inet18")
    assert model.classes == list(imagenet_names()) and model.meta["labels"] == "by name"
    assert loupe.dataset("named").classes == ["Cliff_Dwelling", "cock", "n01687978"]


def test_label_targets_and_accuracy_use_the_models_indices(imagenet_setup):
    ids = list(range(9))
    res = loupe.explain("inet18", "named", ids, "saliency", target="label")
    assert res.targets.tolist() == res.labels.tolist() == _expected(ids)
    assert res.predictions.tolist() == _expected(ids)  # the prototype head is right on every image
    rows = loupe.predict("inet18", "named", ids)
    assert [r["label"] for r in rows] == _expected(ids)
    assert np.mean([r["label"] == r["prediction"] for r in rows]) == 1.0
    frame = loupe.export(res.key)
    assert frame["label"].tolist() == frame["target"].tolist() == _expected(ids)


def test_bluff_correct_only_selects_by_the_models_indices(imagenet_setup):
    res = loupe.pathways("inet18", "named", "cliff dwelling", "agama", strengths=[0.5], images=3, steps=2,
                         correct_only=True, top_k=2, attack_k=1, patch_pool=6, patches=1)
    assert (res.original, res.target) == ("cliff dwelling", "agama")
    assert res.n_used[:2].tolist() == [3, 3]  # every benign image of both classes, all predicted correctly


def test_unmappable_classes_refuse_label_targets_naming_both_lists(imagenet_setup):
    with pytest.raises(DatasetError, match=r"target='label' needs dataset 'unknown'.*'apple_pie_x' is not a model "
                                           r"class.*dataset classes \(2: \['apple_pie_x', 'zzz'\]\); model classes "
                                           r"\(1000: \['tench', 'goldfish'"):
        loupe.explain("inet18", "unknown", [0], "saliency", target="label")
    res = loupe.explain("inet18", "unknown", [0, 1], "saliency")  # the predicted class needs no labels
    assert res.labels.tolist() == [UNMAPPED, UNMAPPED]


def test_explicit_class_map_from_the_manifest(imagenet_setup):
    rows = loupe.predict("inet18", "mapped", [0, 1])
    assert [r["label"] for r in rows] == [281, 207]
