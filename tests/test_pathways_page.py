"""The Pathways page through AppTest: a share link opens the stored result, the controls answer from
it, and bad links or bad requests show a readable error."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import loupe
from views.pathways import default_strength, selected_nodes

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SMALL = {"strengths": "0.1,0.3,0.5", "steps": 5, "images": 6, "patch_pool": 24, "patches": 3}  # as test_pathways


@pytest.fixture(scope="module")
def key() -> str:
    return loupe.pathways("shapes_cnn", "shapes", "circle", "square", **SMALL).key


def _page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.switch_page("pages/pathways.py")
    return at.run()


def test_share_link_opens_the_stored_result_and_controls_answer(key: str) -> None:
    at = _page({"run": key})
    assert not at.exception and not at.error
    assert "misclassifies circle into square" in at.subheader[0].value and "from the store" in at.caption[0].value
    res = loupe.pathways_result(key)
    assert at.select_slider(key="strength").value == pytest.approx(default_strength(res))
    assert res.success_rate[res.strengths <= default_strength(res)][-1] >= 0.5
    at.select_slider(key="strength").set_value(0.5).run()
    at.selectbox(key="criterion").set_value("excited").run()
    at.slider(key="neurons_pct").set_value(50).run()
    assert not at.exception and at.select_slider(key="strength").value == 0.5
    at.toggle(key="compare").set_value(True).run()
    assert not at.exception and any("weaker + stronger" in c.value for c in at.caption)
    at.radio(key="filter").set_value("pinned").run()
    assert not at.exception and at.info  # nothing pinned yet: the detail panel says how to pick a channel
    at.selectbox(key="channel").set_value(2).run()
    assert not at.exception and not at.info
    label = at.selectbox(key="channel").format_func(2)
    assert any(m.value.startswith(f"**{label}**") for m in at.markdown)
    assert at.image and len(at.image[0].captions) == 3  # the channel's top dataset patches (patches=3)


@pytest.mark.parametrize("bad", ["nonsense", "0" * 64])
def test_bad_links_show_a_clear_error(bad: str) -> None:
    at = _page({"run": bad})
    assert not at.exception
    assert at.error and "Pathways result not found" in at.error[0].value and "Traceback" not in at.error[0].value


def test_a_bad_request_shows_an_error_and_computes_nothing() -> None:
    at = _page()
    assert not at.exception and at.button  # the request form
    at.selectbox(key="model").set_value("shapes_cnn")
    at.selectbox(key="target").set_value("circle")
    at.number_input(key="images").set_value(1)
    at.number_input(key="steps").set_value(1)
    at.button[0].click().run()
    assert at.error and "original and target must differ" in at.error[0].value
    assert "run" not in at.query_params


def test_a_click_selects_the_node_in_its_customdata() -> None:
    event = {"selection": {"points": [{"curve_number": 3, "point_index": 1, "customdata": 7},
                                      {"curve_number": 0, "point_index": 4}]}}
    assert selected_nodes(event) == [7] and selected_nodes(None) == []
