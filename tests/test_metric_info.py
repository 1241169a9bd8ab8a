"""Every metric Loupe reports has a direction, a one-line meaning and a number format, read through
``loupe.metric_info``; confidence (a property of the sample) is not presented as a metric."""
from __future__ import annotations

import math

import pytest

import loupe


def test_every_metric_of_a_real_explanation_has_a_direction_and_help():
    res = loupe.explain("shapes_cnn", "shapes", [700], "saliency")  # shapes has masks: all seven metrics
    names = set(res.metrics[0])
    assert {"deletion_auc", "insertion_auc", "pointing_hit", "mask_energy", "sparsity_gini"} <= names
    for name in names:
        info = loupe.metric_info(name)
        assert info.arrow in ("↑", "↓") and len(info.help) > 20 and info.title.endswith(info.arrow), name
    assert loupe.metric_info("deletion_auc").arrow == "↓" and loupe.metric_info("insertion_auc").arrow == "↑"
    assert loupe.metric_info("deletion_auc").tooltip.startswith("Lower is better.")
    assert loupe.metric_order(sorted(names))[:2] == ["deletion_auc", "insertion_auc"]


def test_every_rules_metric_the_page_shows_has_a_direction_and_help():
    res = loupe.rules(model="breast_cancer_mlp", dataset="breast_cancer", max_leaves=4)
    for name in ("fidelity", "macro_f1", "accuracy", "proba_r2", "counterfactual_validity"):
        assert name in res.metrics and loupe.metric_info(name).arrow == "↑" and loupe.metric_info(name).help
    for name in ("coverage", "precision"):
        assert name in res.rules[0] and loupe.metric_info(name).arrow == "↑"


def test_formats_and_intervals():
    assert loupe.metric_info("deletion_auc").format(-5.7049) == "-5.705"
    assert loupe.metric_info("mask_energy").format(0.25) == "25%"
    hit = loupe.metric_info("pointing_hit")
    assert hit.format(True) == "hit" and hit.format(False) == "miss" and hit.format(0.5) == "50%"
    assert loupe.metric_info("sparsity_gini").format(None) == "–"
    assert loupe.metric_info("insertion_auc").format(math.nan) == "–"
    assert loupe.metric_info("insertion_auc").interval(0.8, 0.05) == "0.800 ± 0.050"
    coverage, fidelity = loupe.metric_info("coverage"), loupe.metric_info("fidelity")
    assert (coverage.printf, coverage.column_scale) == ("%.1f%%", 100.0)
    assert (fidelity.printf, fidelity.column_scale) == ("%.3f", 1.0)


def test_a_metric_without_an_entry_and_confidence():
    unknown = loupe.metric_info("my_score")
    assert (unknown.label, unknown.arrow, unknown.title) == ("my_score", "", "my_score")
    assert unknown.format(1234.5) == "1.23e+03"
    assert loupe.metric_info("confidence").arrow == ""  # a sample's confidence is not a metric: no entry


def test_agreement_measures():
    import numpy as np

    a = np.arange(16.0).reshape(1, 4, 4)
    assert loupe.agreement(a, a, "spearman")[0] == pytest.approx(1.0)
    assert loupe.agreement(a, -a, "spearman")[0] == pytest.approx(-1.0)
    assert loupe.agreement(a, a, "topk_iou")[0] == 1.0
    with pytest.raises(ValueError, match="measure must be one of"):
        loupe.agreement(a, a, "pearson")
