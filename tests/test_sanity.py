"""The cascading model-randomisation sanity check (explainers/sanity.py; Adebayo et al., NeurIPS 2018):
its layer cascade, SSIM and verdict on hand-built cases, then through the API, the cluster, the store,
the share link, the export and the CLI: an explainer that ignores the model fails, Integrated Gradients
on shapes_cnn passes."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

import loupe
from explainers.base import Explainer, ParamError, Params, Result, Spec
from explainers.evaluation import randomized_model
from explainers.registry import all_explainers
from explainers.sanity import SanityParams, cascade_units, ssim, verdict
from model_registry import archs
from model_registry.base import ModelHandle, Normalize
from model_registry.registry import get_model, register_model
from tests import toy_models as toys
from views.sanity import sanity_figure, stage_table


class EdgeDetector(Explainer):
    """Gradient magnitude of the input image (central differences of the channel mean): a map that
    never looks at the model."""

    spec = Spec(id="test_edge_detector", title="Edge detector", paper="", modalities=("image",),
                needs_gradients=False)
    Params = Params

    def explain(self, model, x, target, params, background=None) -> Result:
        grey = x.mean(dim=1)
        dx, dy = torch.zeros_like(grey), torch.zeros_like(grey)
        dx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
        dy[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
        return Result((dx**2 + dy**2).sqrt().cpu().numpy())


# -- the cascade, SSIM and the verdict ---------------------------------------------------------------


def test_cascade_runs_from_the_output_down_opening_containers_and_merging_norms() -> None:
    units = cascade_units(archs.resnet18(num_classes=10))
    assert [u.label for u in units] == ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1",
                                        "layer2.0", "layer1.1", "layer1.0", "conv1+bn1"]
    assert units[-1].modules == ("conv1", "bn1")
    wrapped = nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), archs.resnet18(num_classes=10))
    assert [u.modules for u in cascade_units(wrapped)] == [tuple(f"1.{n}" for n in u.modules) for u in units]
    toy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert [u.modules for u in cascade_units(toy)] == [("4",), ("0", "1")]


def test_randomising_named_layers_changes_only_them_and_a_layer_gets_the_same_weights_at_every_stage() -> None:
    model = toys.tiny_convnet(seed=0)
    names = [u.modules[0] for u in cascade_units(model.module)]
    top = randomized_model(model, seed=1, modules=names[:1])
    two = randomized_model(model, seed=1, modules=names[:2])
    before, after_top, after_two = (dict(m.named_parameters()) for m in (model.module, top.module, two.module))
    for name, value in before.items():
        in_top = name.startswith(f"{names[0]}.")
        assert torch.equal(after_top[name], value) != in_top, name
        if in_top:
            assert torch.equal(after_two[name], after_top[name]), "a layer's random weights depend on the stage"
    with pytest.raises(ValueError, match="no submodule"):
        randomized_model(model, modules=["nope"])


def test_ssim_is_one_for_equal_maps_and_lower_for_unrelated_ones() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16))
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)
    smooth = np.broadcast_to(np.linspace(0, 1, 16), (2, 16, 16))
    assert (ssim(a, smooth) < 0.3).all() and np.allclose(ssim(a, smooth), ssim(smooth, a))


def test_verdict_reads_the_top_half_of_the_cascade() -> None:
    layers = ["fc", "b3", "b2", "b1", "b0"]
    outcome, text = verdict(np.array([0.9, 0.8, 0.75, 0.2, 0.1]), layers, 0.7)
    assert outcome == "fail" and text.startswith("After the top 3 of 5 layers (fc, b3, b2) are randomised")
    assert "0.75 ≥ 0.7" in text and "does not depend on what the model learned" in text
    outcome, text = verdict(np.array([0.9, 0.8, 0.6, 0.9, 0.9]), layers, 0.7)
    assert outcome == "pass" and "falls to 0.60" in text
    assert verdict(np.array([np.nan] * 5), layers, 0.7)[0] == "inconclusive"


def test_sanity_params_name_bad_values() -> None:
    with pytest.raises(ParamError, match="explainer_params must be a JSON object"):
        SanityParams(explainer_params="[1]")
    with pytest.raises(ParamError, match="samples must be comma-separated"):
        SanityParams(samples="0:4")


# -- through the API, the worker and the store ------------------------------------------------------------


@pytest.fixture(scope="module")
def session_cnn() -> str:
    """shapes_cnn registered in this process, so the check runs in-process where the test's edge
    detector is registered (a Dask worker process has its own registry)."""
    handle = dataclasses.replace(get_model("shapes_cnn", "cpu"), id="shapes_cnn_in_session")
    register_model(handle)
    return handle.id


def test_an_explainer_that_ignores_the_model_fails(session_cnn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(all_explainers(), EdgeDetector.spec.id, EdgeDetector())
    res = loupe.sanity(session_cnn, "shapes", "0:6", EdgeDetector.spec.id)
    assert res.verdict == "fail" and "does not depend on what the model learned" in res.verdict_text
    np.testing.assert_allclose(res.spearman, 1.0)
    np.testing.assert_allclose(res.ssim, 1.0, atol=1e-6)
    assert res.layers == ["fc", "block4.conv", "block3.conv", "block2.conv", "block1.conv"]


@pytest.fixture(scope="module")
def ig_check():
    return loupe.sanity("shapes_cnn", "shapes", "0:8", "integrated_gradients", {"n_steps": 16})


def test_integrated_gradients_on_shapes_cnn_passes(ig_check) -> None:
    res = ig_check
    assert res.verdict == "pass", res.verdict_text
    medians = res.medians()["spearman"]
    assert medians[res.judged_stage] < res.threshold and medians[-1] < 0.6
    assert res.spearman.shape == (5, 8) and res.ssim.shape == (5, 8)
    trained, randomised = res.maps(0)
    assert trained.shape == (64, 64) and randomised.shape == (5, 64, 64)
    assert res.explainer_params["n_steps"] == 16 and res.explainer_params["baseline"]


def test_stored_and_reopened_from_its_link_without_computing(ig_check, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.analyses

    def refuse(*_args, **_kwargs):
        raise AssertionError("a stored sanity check was computed again")

    monkeypatch.setattr(worker.analyses.dispatch, "run", refuse)
    again = loupe.sanity("shapes_cnn", "shapes", list(range(8)), "integrated_gradients", {"n_steps": 16})
    assert again.cached and again.key == ig_check.key
    assert ig_check.link.endswith(f"/sanity?run={ig_check.key}") and loupe.kind_of(ig_check.key) == "sanity"
    opened = loupe.sanity_result(ig_check.link.split("run=")[1])
    np.testing.assert_array_equal(opened.spearman, ig_check.spearman)
    assert opened.verdict_text == ig_check.verdict_text
    assert loupe.sanity("shapes_cnn", "shapes", "0:8", "saliency", compute=False) is None


def test_the_export_of_the_checked_run_carries_its_columns(ig_check) -> None:
    run = loupe.explain("shapes_cnn", "shapes", "0:8", "integrated_gradients", {"n_steps": 16})
    frame = loupe.export(run.key).set_index("sample_id")
    for row in ig_check.sample_rows():
        got = frame.loc[row["sample_id"]]
        assert got["sanity_verdict"] == "pass" and got["sanity_link"] == ig_check.link
        assert got["sanity_spearman_judged"] == pytest.approx(row["sanity_spearman_judged"])
        assert got["sanity_ssim_judged"] == pytest.approx(row["sanity_ssim_judged"])
    other = loupe.explain("shapes_cnn", "shapes", "0:2", "integrated_gradients", {"n_steps": 8})
    assert "sanity_verdict" not in loupe.export(other.key).columns, "a check of other params must not join"


def test_cli_prints_the_stages_and_verdict(ig_check, capsys: pytest.CaptureFixture[str]) -> None:
    assert loupe.main(["sanity", "--model", "shapes_cnn", "--dataset", "shapes", "--samples", "0:8",
                       "--explainer", "integrated_gradients", "--set", "n_steps=16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"] == ig_check.key and out["cached"] and out["verdict"] == "pass"
    assert [s["randomised down to"] for s in out["stages"]] == ig_check.layers
    assert loupe.main(["sanity", "--model", "shapes_cnn", "--dataset", "shapes", "--explainer", "nope"]) == 2


def test_figure_and_table_read_the_stored_result(ig_check) -> None:
    fig = sanity_figure(ig_check)
    bold = [t for t in fig.data if t.name == "Spearman of |map| (median)"]
    assert len(bold) == 1 and np.allclose(bold[0].y, ig_check.medians()["spearman"])
    assert len(fig.data) == 8 + 2 and list(fig.layout.xaxis.ticktext)[0] == "fc"
    assert any(a.text == "PASS" for a in fig.layout.annotations)
    table = stage_table(ig_check)
    assert list(table["randomised down to"]) == ig_check.layers and "median ssim" in table


def test_a_model_without_parameters_is_refused() -> None:
    handle = ModelHandle("param_free", nn.Sequential(nn.Flatten(), nn.Identity()), "tabular", (3,), ["a", "b", "c"])
    from explainers.sanity import SanityCheck

    assert "needs a torch model with parameters" in SanityCheck().unsupported_reason(handle)
