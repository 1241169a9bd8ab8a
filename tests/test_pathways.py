"""Bluff activation pathways: oracle tests of the influence rules on tiny hand-built nets (1×1 and
grouped convs against brute force, max-min against a loop, residual and concat rules, the gradient
fallback), the highlight rules on a hand-built artifact, and end-to-end runs on the zoo (the embedded
Dask cluster, the store, share links) and on a user CNN registered through the manifest."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import loupe
from explainers import _influence as inf
from explainers.base import ExplainError, ParamError
from explainers.pathways import BluffPathways, PathwaysParams, Transition, attack_grid, columns, edge_medians
from explainers.results.pathways import PathwaysResult
from model_registry.registry import get_model
from store.artifacts import Artifact
from worker import cluster

SMALL = {"strengths": "0.1,0.3,0.5", "steps": 5, "images": 6, "patch_pool": 24, "patches": 3}
pytestmark = pytest.mark.usefixtures("module_home")  # its stored results are this module's own


# -- influence oracles ------------------------------------------------------------------------------
def brute_pair(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``max_hw (x_i ⋆ W[j, i])`` one (image, j, i) at a time."""
    c_out, c_in_g = weight.shape[:2]
    out = torch.zeros(x.shape[0], c_out, x.shape[1])
    for j in range(c_out):
        g = j // (c_out // conv.groups)
        for i_local in range(c_in_g):
            i = g * c_in_g + i_local
            y = F.conv2d(x[:, i:i + 1], weight[j:j + 1, i_local:i_local + 1], stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation)
            out[:, j, i] = y.amax((1, 2, 3))
    return out


def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c).eval()
    bn.weight.data = torch.randn(c, generator=gen)
    bn.running_var.data = torch.rand(c, generator=gen) + 0.5
    return bn


@pytest.mark.parametrize("conv", [nn.Conv2d(5, 4, 1, stride=2, bias=False), nn.Conv2d(5, 4, 1),
                                  nn.Conv2d(6, 4, 3, padding=1, groups=2), nn.Conv2d(3, 6, 3, stride=2, dilation=2)])
def test_pair_influence_equals_brute_force(conv: nn.Conv2d) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, conv.in_channels, 9, 9)
    bn = _bn(conv.out_channels, 1)
    folded = conv.weight.detach() * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None]
    got = inf.pair_influence(x, conv, bn)
    torch.testing.assert_close(got, brute_pair(x, folded.detach(), conv), rtol=1e-5, atol=1e-5)
    cols = torch.tensor([conv.in_channels - 1, 0])
    torch.testing.assert_close(inf.pair_influence(x, conv, bn, cols), got[:, :, cols], rtol=1e-5, atol=1e-5)
    if conv.groups > 1:  # channel 0 (group 0) reaches no output of group 1
        assert (got[:, conv.out_channels // 2:, 0] == 0).all() and (got[:, :conv.out_channels // 2, 0] != 0).any()


def test_maxmin_equals_a_loop() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(70, 9)), rng.normal(size=(9, 5))
    loop = np.array([[max(min(a[o, k], b[k, i]) for k in range(9)) for i in range(5)] for o in range(70)])
    np.testing.assert_allclose(inf.maxmin(a, b), loop)


class Block(nn.Module):
    """A residual basic block (identity or 1×1 + BN shortcut)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _bn(c_out, 2)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _bn(c_out, 3)
        self.shortcut = nn.Identity() if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1), _bn(c_out, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class Inception(nn.Module):
    """Two branches concatenated: a 1×1, and a 1×1 bottleneck then a 3×3."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(c_in, 2, 1)
        self.b2 = nn.Sequential(nn.Conv2d(c_in, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.b1(x), self.b2(x)], dim=1))


class Gated(nn.Module):
    """Outside the weight rules (a product): the gradient fallback applies."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x * 2.0)


def tiny(body: nn.Module, c: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("stem", nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU()))
    net.add_module("body", body)
    return net.eval()


def _med(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d, cols=None) -> np.ndarray:
    pairs = brute_pair(x, weight, conv)
    return np.median((pairs if cols is None else pairs[:, :, cols]).numpy(), axis=0)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    return (conv.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None]).detach()


def _edges(net: nn.Module, x: torch.Tensor, rows: list[int], cols: list[int]) -> tuple[np.ndarray, str]:
    expr = inf.plan_transition(net, "stem", "body", upper_reads_lower=True)
    t = Transition("stem", "body", expr, np.asarray(rows), np.asarray(cols))
    lower = np.median(net.stem(x).amax((2, 3)).detach().numpy(), axis=0)
    return edge_medians(net, [t], x.numpy(), [lower], batch_size=2, device=torch.device("cpu"))[0], t.kind


@pytest.mark.parametrize("c_out", [4, 5])  # identity skip, then a 1×1 + BN downsample skip
def test_residual_rule(c_out: int) -> None:
    net = tiny(Block(4, c_out))
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    rows, cols = [0, 2, c_out - 1], [1, 3]
    got, kind = _edges(net, x, rows, cols)
    with torch.no_grad():
        a = net.stem(x)
        b = net.body
        h = torch.relu(b.bn1(b.conv1(a)))
        med1 = _med(a, _folded(b.conv1, b.bn1), b.conv1, cols)
        med2 = _med(h, _folded(b.conv2, b.bn2), b.conv2)
        residual = np.array([[max(min(med2[o, k], med1[k, i]) for k in range(c_out)) for i in range(2)]
                             for o in range(c_out)])
        if c_out == 4:
            skip = np.zeros((4, 2))
            act = np.median(a.amax((2, 3)).numpy(), axis=0)
            skip[cols, [0, 1]] = act[cols]
        else:
            skip = _med(a, _folded(b.shortcut[0], b.shortcut[1]), b.shortcut[0], cols)
    assert kind == "weights"
    np.testing.assert_allclose(got, np.maximum(residual, skip)[rows], rtol=1e-4, atol=1e-5)


def test_concat_rule() -> None:
    net = tiny(Inception(4))
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    got, kind = _edges(net, x, [0, 1, 2, 3], [0, 1, 2, 3])
    with torch.no_grad():
        a = net.stem(x)
        b1, (c21, _, c22) = net.body.b1, net.body.b2
        first = _med(a, b1.weight.detach(), b1)
        bottleneck = _med(a, c21.weight.detach(), c21)
        second = _med(torch.relu(c21(a)), c22.weight.detach(), c22)
    assert kind == "weights"
    np.testing.assert_allclose(got, np.concatenate([first, inf.maxmin(second, bottleneck)]), rtol=1e-4, atol=1e-5)


def test_gradient_fallback_for_other_graphs() -> None:
    """upper_j = max_hw Σ_i 2 w_ji a_i (+ b): its gradient × activation edge is 2 w_ji a_i at the arg-max."""
    net = tiny(Gated(4))
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    got, kind = _edges(net, x, [0, 2], [1, 3])
    with torch.no_grad():
        a = net.stem(x)
        out = net.body(a)
        w = net.body.conv.weight[:, :, 0, 0]
        per_image = np.zeros((3, 2, 2))
        for n in range(3):
            for r, j in enumerate([0, 2]):
                pos = int(out[n, j].flatten().argmax())
                for c, i in enumerate([1, 3]):
                    per_image[n, r, c] = 2 * w[j, i] * a[n, i].flatten()[pos]
    assert kind == "gradient"
    np.testing.assert_allclose(got, np.median(per_image, axis=0), rtol=1e-4, atol=1e-5)


# -- columns and highlight rules on a hand-built result ---------------------------------------------
def test_columns_follow_bluff() -> None:
    med = np.array([[9, 8, 7, 0, 0, 0],      # original: top-3 = 0, 1, 2
                    [0, 8, 7, 9, 0, 0],      # target: top-3 = 3, 1, 2
                    [1, 1, 1, 1, 5, 4],      # attacked at s1: new = 4, 5
                    [np.nan] * 6], float)    # no success at s2
    assert columns(med, top_k=3, attack_k=1) == {"original": [0], "both": [1, 2], "target": [3], "attack": [4]}


def hand_result() -> PathwaysResult:
    """Two layers, 3 + 2 displayed nodes, conditions [original, target, 0.1, 0.2]."""
    arrays = {
        "strengths": np.array([0.1, 0.2], np.float32), "success_rate": np.array([0.5, 1.0], np.float32),
        "n_used": np.array([4, 4, 2, 4]),
        "median_0": np.array([[1, 2, 3], [0, 0, 0], [4, 1, 3], [2, 2, 9]], np.float32),
        "median_1": np.array([[1, 1], [0, 0], [0, 5], [3, 0]], np.float32),
        "node_layer": np.array([0, 0, 0, 1, 1]), "node_channel": np.array([0, 1, 2, 0, 1]),
        "node_column": np.array([0, 1, 3, 0, 2]),
        "edge_src": np.array([0, 1, 2, 2]), "edge_dst": np.array([3, 3, 4, 3]), "edge_transition": np.zeros(4, int),
        "edge_inf": np.array([[1, 1, 1, 1], [0, 0, 0, 0], [2, -1, 3, 0.5], [1, 1, 1, 4]], np.float32),
        "patch_ids": np.array([[5, -1]] * 5), "patch_boxes": np.zeros((5, 2, 4), int),
    }
    info = {"layers": ["a", "b"], "classes": ["x", "y"], "original": 0, "target": 1, "attack": "pgd_l2",
            "edge_kinds": ["weights"]}
    return PathwaysResult.from_artifact(Artifact("k" * 64, "pathways", {"model_id": "m", "dataset_id": "d"},
                                                 info, arrays))


def test_highlight_ranks_per_layer_by_the_criterion() -> None:
    res = hand_result()
    # at 0.1: layer a activations [4, 1, 3] (Δ [3, -1, 0]); layer b [0, 5] (Δ [-1, 4])
    assert res.highlight("activated", 0.1, 34).nodes.tolist() == [True, False, False, False, True]
    assert res.highlight("excited", 0.1, 34).nodes.tolist() == [True, False, False, False, True]
    assert res.highlight("inhibited", 0.1, 34).nodes.tolist() == [False, True, False, True, False]
    assert res.highlight("changed", 0.2, 67).nodes.tolist() == [True, False, True, True, False]
    benign = res.highlight("activated", 0, 10)
    assert benign.nodes.tolist() == [True, True, False, True, False] and not res.highlight("excited", 0).nodes.any()
    strong = res.highlight("activated", 0.2, 100, 50)   # all nodes; edges with inf > 0: all 4; top 50 % = 2
    assert strong.nodes.all() and strong.edges.tolist() == [True, False, False, True]
    assert res.compare("activated", 0.1, 0.2, 34).tolist() == [1, 0, 2, 2, 1]
    with pytest.raises(ParamError, match="not on the grid"):
        res.highlight("activated", 0.15)
    with pytest.raises(ParamError, match="criterion"):
        res.highlight("loudest", 0.1)
    curve = res.curve("a", 2)
    assert curve["strength"].tolist() == pytest.approx([0, 0.1, 0.2]) and curve["median"].tolist() == [3, 3, 9]
    assert res.patches(0) == [(5, (0, 0, 0, 0))]
    assert list(res.edges.columns[:5]) == ["from_layer", "from_channel", "to_layer", "to_channel", "rule"]


def test_params_are_canonical_and_checked() -> None:
    assert PathwaysParams().strengths == "0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5"
    assert PathwaysParams(strengths=" 0.1,0.50 ").strengths == "0.1,0.5"
    for bad, match in [({"strengths": "0.5,0.1"}, "increasing"), ({"strengths": "a"}, "numbers"),
                       ({"strengths": "-1"}, "positive"), ({"target": 0}, "differ"), ({"attack": "cw"}, "one of")]:
        with pytest.raises(ParamError, match=match):
            PathwaysParams.from_dict(bad)


# -- end to end on the zoo ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_result() -> PathwaysResult:
    return loupe.pathways("shapes_cnn", "shapes", "circle", "square", **SMALL)


def test_zoo_run_is_stored_linked_and_reopened(cnn_result: PathwaysResult) -> None:
    res = cnn_result
    assert not res.cached  # computed for this module's own store (module_home)
    assert res.layers == ["block1", "block2", "block3", "block4"] and res.info["edge_kinds"] == ["weights"] * 3
    assert res.strengths.tolist() == pytest.approx([0.1, 0.3, 0.5]) and res.success_rate.shape == (3,)
    assert res.n_used[0] == 6 and all(res.n_used[2:] == np.round(res.success_rate * 6))
    assert set(res.nodes["column"]) >= {"original", "target"} and len(res.edges) > 0
    again = loupe.pathways("shapes_cnn", "shapes", 0, 1, **SMALL)
    assert again.cached and again.key == res.key
    reopened = loupe.pathways_result(res.key)
    np.testing.assert_array_equal(reopened.node_act, res.node_act)
    assert loupe.kind_of(res.key) == "pathways"
    with pytest.raises(ExplainError, match="not pathways"):
        PathwaysResult.from_artifact(Artifact("k" * 64, "rules", {}, {}, {}))


def _own_peaks(model, layers: list[str], x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each layer's per-channel spatial max, recorded with this test's own hooks."""
    seen = {}
    handles = [model.module.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, o.amax((2, 3)).numpy())) for n in layers]
    try:
        with torch.no_grad():
            model.module(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_benign_medians_match_own_hooks(cnn_result: PathwaysResult) -> None:
    res, model, ds = cnn_result, get_model("shapes_cnn"), loupe.dataset("shapes")
    for cond, name in enumerate(["original_ids", "target_ids"]):
        peaks = _own_peaks(model, res.layers, ds.inputs(res.artifact.arrays[name].tolist()))
        for layer in res.layers:
            np.testing.assert_allclose(res.median(layer)[cond], np.median(peaks[layer], axis=0), rtol=1e-5)


def test_hooks_removed_and_model_not_moved() -> None:
    """In this process (not on a worker), so the model object can be inspected afterwards."""
    model = get_model("shapes_resnet")
    params = PathwaysParams(original=2, target=3, strengths="0.5", steps=2, images=3, patch_pool=8, patches=2)
    analysis = BluffPathways()
    info, arrays = analysis.compute(model, params, analysis.prepare(model, loupe.dataset("shapes"), params).inputs)
    assert info["edge_kinds"] == ["weights"] * 3 and arrays["edge_inf"].shape[0] == 3
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())
    assert model.device.type == "cpu" and not model.module.training


def test_bad_requests_are_clear_errors() -> None:
    with pytest.raises(ParamError, match="unknown class 'dog'"):
        loupe.pathways("shapes_cnn", "shapes", "dog", "square")
    with pytest.raises(ParamError, match="below 4"):
        loupe.pathways("shapes_cnn", "shapes", 0, 7)
    with pytest.raises(ExplainError, match="image models"):
        loupe.pathways("breast_cancer_mlp", "breast_cancer", 0, 1)
    assert loupe.main(["pathways", "--model", "shapes_cnn", "--dataset", "shapes", "--original", "circle",
                       "--target", "circle"]) == 2


# -- a user CNN registered through the manifest -------------------------------------------------------
FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    class UserCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
            self.gate = nn.Conv2d(8, 8, 1)
            self.mix = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            h = self.features(x)
            g = self.gate(h) * torch.sigmoid(h)
            return self.head(torch.relu(self.mix(g)).amax((2, 3)))

    def build():
        torch.manual_seed(3)
        return UserCNN()
""")


@pytest.fixture
def user_cnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_pathways_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    from user_pathways_factory import build

    torch.save(build().state_dict(), tmp_path / "user.pt")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "user_cnn"
kind = "state_dict"
path = "{tmp_path / 'user.pt'}"
factory = "user_pathways_factory:build"
task = "image"
input_shape = [3, 64, 64]
classes = ["circle", "square", "triangle", "cross"]
dataset = "shapes"
layers = ["features.1", "features.4", "gate", "mix"]
''')
    monkeypatch.setenv("LOUPE_MANIFEST", str(manifest))
    cluster.get_client().upload_file(str(tmp_path / "user_pathways_factory.py"))  # importable on the workers
    return "user_cnn"


def test_a_manifest_cnn_with_a_layers_list_gets_pathways(user_cnn: str) -> None:
    res = loupe.pathways(user_cnn, "shapes", 0, 1, correct_only=False, **SMALL)
    assert res.layers == ["features.1", "features.4", "gate", "mix"]
    assert res.info["edge_kinds"] == ["weights", "weights", "gradient"]  # mix reads gate × sigmoid: fallback
    assert len(res.edges) > 0 and np.isfinite(res.artifact.arrays["edge_inf"][0]).all()
    assert res.n_used[0] == 6 and res.model_id == "user_cnn"


# -- the full-size runs of the "done when" ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["shapes_cnn", "shapes_resnet"])
def test_32_images_by_10_strengths(model_id: str) -> None:
    """The full grid completes; the most excited channel of every layer, re-measured with this test's
    own hooks on the re-run (deterministic) ART attack, rises from benign to attacked and matches the
    stored medians."""
    res = loupe.pathways(model_id, "shapes", "circle", "square", images=32, steps=10)
    assert len(res.strengths) == 10 and res.n_used[0] == 32 and res.n_used[1] == 32
    assert res.success_rate[-1] > res.success_rate[0] and res.success_rate[-1] >= 0.5
    model, ds = get_model(model_id), loupe.dataset("shapes")
    xo = ds.inputs(res.artifact.arrays["original_ids"].tolist()).numpy()
    params = PathwaysParams(original=0, target=1, images=32, steps=10)
    adv = torch.from_numpy(attack_grid(model, xo, 1, params, batch_size=64)[-len(xo):])
    with torch.no_grad():
        adv = adv[model.module(adv).argmax(1) == 1]
    benign, attacked = _own_peaks(model, res.layers, torch.from_numpy(xo)), _own_peaks(model, res.layers, adv)
    top = res.nodes[res.highlight("excited", float(res.strengths[-1]), neurons_pct=1).nodes]
    assert list(top["layer"]) == res.layers
    for layer, channel in zip(top["layer"], top["channel"]):
        before, after = np.median(benign[layer][:, channel]), np.median(attacked[layer][:, channel])
        assert after > before
        assert res.median(layer)[[0, -1], channel] == pytest.approx([before, after], rel=1e-5)
