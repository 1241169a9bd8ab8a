"""Presets (issue #17): ``preset="paper"`` reproduces the seed explainers' results from before the
``loupe`` defaults existed (stored in tests/data/paper_reference.npz by tests/paper_reference.py),
a parameter the user sets wins over the preset, and stored params are the values used."""
from __future__ import annotations

import json

import numpy as np
import pytest

from explainers.base import PRESETS, ParamError
from explainers.registry import all_analyses, all_explainers
from tests import paper_reference as ref

SEEDS = ("samp", "osa_das", "surrogate_rules", "bluff_pathways")


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(ref.FIXTURE) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.mark.parametrize("explainer_id", ["samp", "osa_das"])
def test_paper_preset_reproduces_the_stored_maps(explainer_id: str, stored: dict[str, np.ndarray]) -> None:
    now = ref.map_outputs(explainer_id, {"preset": "paper"})
    assert set(now) == {k for k in stored if k.startswith(f"{explainer_id}/")}
    for name, maps in now.items():
        scale = float(np.abs(stored[name]).max())
        np.testing.assert_allclose(maps, stored[name], rtol=1e-5, atol=1e-6 * scale, err_msg=name)


@pytest.mark.parametrize("analysis_id", list(ref.ANALYSIS_CASES))
def test_paper_preset_reproduces_the_stored_analyses(analysis_id: str, stored: dict[str, np.ndarray]) -> None:
    now = ref.analysis_outputs(analysis_id, {"preset": "paper"})
    assert set(now) == {k for k in stored if k.startswith(f"{analysis_id}/")}
    assert json.loads(str(now[f"{analysis_id}/info"])) == json.loads(str(stored[f"{analysis_id}/info"]))
    for name, array in now.items():
        if array.dtype.kind in "biu":
            np.testing.assert_array_equal(array, stored[name], err_msg=name)
        elif array.dtype.kind == "f":
            np.testing.assert_allclose(array, stored[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_the_fixture_differs_from_the_loupe_defaults_where_they_depart(stored: dict[str, np.ndarray]) -> None:
    """The comparison above could not pass by accident: SAMP's and OSA-DAS's loupe defaults give
    other maps on the same images."""
    for explainer_id in ("samp", "osa_das"):
        now = ref.map_outputs(explainer_id, {})
        assert any(not np.allclose(now[k], stored[k], rtol=1e-3, atol=1e-4 * np.abs(stored[k]).max()) for k in now)


@pytest.mark.parametrize("explainer_id", SEEDS)
def test_every_seed_explainer_has_both_presets_and_a_set_value_wins(explainer_id: str) -> None:
    table = {**all_explainers(), **all_analyses()}
    cls = table[explainer_id].Params
    assert tuple(cls.presets) == PRESETS and cls().preset == "loupe"
    for preset, values in cls.presets.items():
        p = cls(preset=preset)
        assert all(getattr(p, name) == value for name, value in values.items())
    with pytest.raises(ParamError, match="preset must be one of"):
        cls.from_dict({"preset": "mine"})


def test_a_set_value_wins_over_the_preset_and_round_trips() -> None:
    from explainers.samp import SampParams

    paper = SampParams.from_dict({"preset": "paper", "momentum": "0"})
    assert (paper.momentum, paper.quadrature) == (0.0, SampParams.presets["paper"]["quadrature"])
    assert SampParams.from_dict(json.loads(paper.to_json())) == paper
    schema = {f["name"]: f for f in SampParams.schema()}
    assert schema["quadrature"]["presets"] == {p: v["quadrature"] for p, v in SampParams.presets.items()}
    assert schema["quadrature"]["default"] == SampParams.presets["loupe"]["quadrature"]


# -- auto values are stored as the values used (issue #14, item 7) ---------------------------------------


def test_resolved_params_replace_auto_values_by_the_values_used() -> None:
    import loupe

    assert loupe.resolved_params("shapes_cnn", "samp")["pixels_per_step"] == 81
    assert loupe.resolved_params("digits_cnn", "samp")["pixels_per_step"] == 10
    assert loupe.resolved_params("shapes_cnn", "samp", {"pixels_per_step": 40})["pixels_per_step"] == 40
    osa = loupe.resolved_params("shapes_cnn", "osa_das")
    assert (osa["preset"], osa["patch"], osa["stride"], osa["subspace_dim"]) == ("loupe", 9, 4, 1)
    assert loupe.resolved_params("shapes_cnn", "osa_das", {"preset": "paper"})["subspace_dim"] == 2, \
        "the paper's k = 3, clipped to half of shapes_cnn's 4 logits"
    occlusion = loupe.resolved_params("shapes_cnn", "occlusion")
    assert (occlusion["window"], occlusion["stride"]) == (8, 4)
    assert loupe.resolved_params("shapes_cnn", "feature_ablation")["cell"] == 8
    assert loupe.resolved_params("breast_cancer_mlp", "feature_ablation")["cell"] == 0, "tables have no cells"
    with pytest.raises(loupe.ExplainError, match="exceeds the 64-pixel image side"):
        loupe.resolved_params("shapes_cnn", "occlusion", {"window": 65})


def test_auto_and_its_resolved_value_are_one_stored_run() -> None:
    import loupe

    auto = loupe.explain("shapes_cnn", "shapes", "0:2", "occlusion")
    assert (auto.provenance["params"]["window"], auto.provenance["params"]["stride"]) == (8, 4)
    explicit = loupe.explain("shapes_cnn", "shapes", "0:2", "occlusion", {"window": 8, "stride": 4})
    assert explicit.cached and explicit.key == auto.key
    assert loupe.run(auto.key).provenance["params"]["window"] == 8


def test_the_preset_is_one_form_field_in_the_cache_key_and_the_share_link() -> None:
    """The form shows ``preset`` and, under it, the values that run on the model; choosing "paper"
    and changing nothing else puts only ``samp.preset=paper`` in the Explain URL, which reopens the
    same request; the request (hence its run key) carries the preset."""
    import loupe
    from views.explain import Selection
    from views.params import with_defaults

    schema = next(e for e in loupe.explainers() if e["id"] == "samp")["params"]
    preset = next(f for f in schema if f["name"] == "preset")
    assert list(preset["choices"]) == ["loupe", "paper"] and preset["default"] == "loupe"
    paper = loupe.resolved_params("shapes_cnn", "samp", {"preset": "paper"})
    form = with_defaults(schema, {k: v for k, v in paper.items() if k != "preset"})
    assert {f["name"]: f["default"] for f in form}["pixels_per_step"] == 81, "the form shows the value used, not 0"
    query = Selection("shapes_cnn", "shapes", (0,), ("samp",), {"samp": paper}).to_query({"samp": form})
    assert {k: v for k, v in query.items() if k.startswith("samp.")} == {"samp.preset": "paper"}
    reopened = Selection.from_query(query, "shapes_cnn", "shapes").params["samp"]
    assert loupe.resolved_params("shapes_cnn", "samp", reopened) == paper
    keys = {p: loupe.request("shapes_cnn", "shapes", "0", "samp", {"preset": p}) for p in ("loupe", "paper")}
    assert keys["paper"].params == paper and keys["loupe"].params["preset"] == "loupe"
    assert keys["paper"].params != keys["loupe"].params  # so their run keys differ


@pytest.mark.parametrize(("d", "k"), [(2, 1), (4, 1), (10, 1), (99, 1), (100, 2), (999, 2), (1000, 3), (21843, 3)])
def test_osa_das_k_rule_follows_the_output_dimension(d: int, k: int) -> None:
    """One direction per decade of outputs, capped at the paper's 3: k = 3 at ImageNet's 1,000 logits,
    1 on few-class models (where the paper's k = 3 was clipped to ⌊d/2⌋ and hit the score's ceiling)."""
    from explainers.osa_das import auto_subspace_dim

    assert auto_subspace_dim(d) == k


@pytest.mark.parametrize(("n_classes", "loupe_k", "paper_k"), [(4, 1, 2), (10, 1, 3), (1000, 3, 3)])
def test_osa_das_resolves_k_on_the_model(n_classes: int, loupe_k: int, paper_k: int) -> None:
    from torch import nn

    from explainers.osa_das import OsaDas
    from model_registry.base import ModelHandle

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))
    model = ModelHandle("toy_k", net, "image", (3, 32, 32), [f"c{i}" for i in range(n_classes)])
    osa = OsaDas()
    assert osa.resolve(model, osa.Params()).subspace_dim == loupe_k
    assert osa.resolve(model, osa.Params(preset="paper")).subspace_dim == paper_k
    assert osa.resolve(model, osa.Params(subspace_dim=2)).subspace_dim == min(2, n_classes // 2)
