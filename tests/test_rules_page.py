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
pytest.importorskip("model_registry.zoo")


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
