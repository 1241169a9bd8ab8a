"""The Rules page through Streamlit's AppTest: it renders its pickers, computes rules for the zoo's
breast-cancer MLP on a click, shows a chosen sample's firing rule and counterfactual from the stored
result, opens a share link (``?run=<key>``) without recomputing, and shows clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import loupe

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "rules.py")


def _page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def _markdown(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


@pytest.fixture(scope="module")
def cancer():
    return loupe.rules(model="breast_cancer_mlp", dataset="breast_cancer")


def test_the_page_is_in_the_app_and_renders_its_pickers():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/rules.py").run()
    assert not at.exception and at.title[0].value == "Rules"
    models = at.selectbox(key="rules-model").options
    assert {"breast_cancer_mlp", "highdim_mlp"} <= set(models) and "shapes_cnn" not in models
    assert "shapes" not in at.selectbox(key="rules-dataset").options
    assert at.info and "Extract rules" in at.info[0].value


def test_extract_then_pick_a_sample(cancer):
    at = _page({"model": "breast_cancer_mlp", "dataset": "breast_cancer"})
    assert at.selectbox(key="rules-dataset").value == "breast_cancer"
    at.button(key="rules-run").click().run()
    assert not at.exception and not at.error
    rules = next(df.value for df in at.dataframe if "rule" in df.value.columns)
    assert list(rules["rule"]) == [r["rule"] for r in cancer.rules]
    assert cancer.key in at.query_params["run"]
    at.selectbox(key="rules-sample").set_value(7).run()
    local = cancer.local(7)
    text = _markdown(at)
    assert local["rule"] in text and f"model: **{local['blackbox_prediction']}**" in text
    if local["counterfactual"] is not None:
        assert local["counterfactual"]["rule"] in text or any(local["counterfactual"]["rule"] in str(s.value)
                                                               for s in [*at.success, *at.warning])


def test_a_share_link_opens_the_stored_result(cancer):
    at = _page({"run": cancer.key, "sample": "11"})
    assert not at.exception and not at.error
    assert at.selectbox(key="rules-model").value == "breast_cancer_mlp"
    assert at.selectbox(key="rules-sample").value == 11
    assert f"{cancer.metrics['n_leaves']} rules over the top {cancer.k} features" in at.subheader[0].value
    assert cancer.local(11)["rule"] in _markdown(at)


@pytest.mark.parametrize("bad", ["nonsense", "0" * 64])
def test_bad_links_show_run_not_found(bad):
    at = _page({"run": bad})
    assert not at.exception and at.error and "Run not found" in at.error[0].value


def test_a_model_and_dataset_that_do_not_fit_show_a_clear_error():
    at = _page({"model": "breast_cancer_mlp", "dataset": "highdim"})
    at.button(key="rules-run").click().run()
    assert not at.exception and "takes [30] features but dataset 'highdim'" in at.error[0].value


def test_views_draw_the_tree_and_the_curve_from_stored_arrays():
    import numpy as np

    from views.rules import _layout, fidelity_curve_figure, rules_frame, rules_row_height, tree_figure

    # root 0 -> (1, 2); 2 -> (3, 4): leaves 1, 3, 4 at x = 0, 1, 2; node 2 over its children; root over 0 and 1.5
    left, right = np.array([1, -1, 3, -1, -1]), np.array([2, -1, 4, -1, -1])
    x, y = _layout(left, right)
    assert x.tolist() == [0.75, 0.0, 1.5, 1.0, 2.0] and y.tolist() == [0, -1, -1, -2, -2]
    tree = {"left": left, "right": right, "feature": np.array([1, -1, 0, -1, -1]),
            "threshold": np.array([0.5, -2, 1.25, -2, -2]), "samples": np.array([10, 4, 6, 3, 3]),
            "class": np.array([1, 0, 1, 1, 0]), "rule": np.array([-1, 0, -1, 1, 2])}
    fig = tree_figure(tree, ["a", "b"], ["no", "yes"])
    texts = [t for trace in fig.data[1:] for t in trace.text]
    assert sorted(texts) == ["R1: no", "R2: yes", "R3: no", "a <= 1.25", "b <= 0.5"]
    curve = fidelity_curve_figure({5: 0.9, 10: 0.95, 15: 0.95}, 10)
    assert list(curve.data[1].x) == [10] and list(curve.data[1].y) == [0.95]
    frame = rules_frame([{"id": "R1", "rule": "IF a <= 1 THEN no", "class": "no", "support": 3, "coverage": 0.3,
                          "precision": 1.0, "accuracy": None, "length": 1}])
    assert list(frame.columns) == ["id", "rule", "class", "coverage", "precision", "accuracy", "support", "length"]
    assert rules_row_height(frame) == 66  # one line; Streamlit wraps text only in rows taller than 64 px
    frame.loc[0, "rule"] = "x" * 100
    assert rules_row_height(frame, chars_per_line=44) == 12 + 21 * 3
