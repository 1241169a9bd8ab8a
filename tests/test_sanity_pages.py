"""The sanity check in the app (issue #17) through Streamlit's AppTest (real store, real embedded Dask
cluster): the section at the end of Explain and of Compare runs it for the page's selection and shows
the verdict, figure and link; the Sanity page reopens a stored check from its link without computing."""
from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

import loupe

APP = str(Path(__file__).resolve().parents[1] / "app.py")
EXPLAIN = {"model": "digits_cnn", "dataset": "digits", "samples": "0,1", "explainers": "saliency"}


def _page(page: str, query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page)
    return at.run()


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _sanity_links(at: AppTest) -> list[str]:
    return [u for m in at.markdown for u in re.findall(r"\]\((http[^)\s]*/sanity\?run=[0-9a-f]{64})\)", m.value)]


def test_explain_runs_the_sanity_check_of_the_shown_explainer() -> None:
    at = _ok(_page("pages/explain.py", EXPLAIN))
    at.button(key="ex-run").click().run()
    _ok(at)
    assert at.selectbox(key="ex-sanity-explainer").value == "saliency" and not _sanity_links(at)
    at.button(key="ex-sanity-run").click().run()
    _ok(at)
    stored = loupe.sanity("digits_cnn", "digits", [0, 1], "saliency", compute=False)
    assert stored is not None and _sanity_links(at) == [stored.link]
    assert any(m.value.startswith(f":{'green' if stored.verdict == 'pass' else 'red'}[**{stored.verdict.upper()}**]")
               for m in at.markdown)
    reopened = _ok(_page("pages/explain.py", EXPLAIN))  # stored: shown at once, no button
    assert _sanity_links(reopened) == [stored.link] and not [b for b in reopened.button if b.key == "ex-sanity-run"]


def test_compare_runs_it_for_a_chosen_model_and_explainer() -> None:
    query = {"dataset": "digits", "models": "digits_cnn", "explainers": "saliency,input_x_gradient", "samples": "0:3"}
    at = _ok(_page("pages/compare.py", query))
    at.button(key="cmp-run").click().run()
    at.selectbox(key="cmp-sanity-explainer").set_value("input_x_gradient").run()
    at.button(key="cmp-sanity-run").click().run()
    _ok(at)
    stored = loupe.sanity("digits_cnn", "digits", "0:3", "input_x_gradient", compute=False)
    assert stored is not None and _sanity_links(at) == [stored.link]


def test_sanity_page_reopens_a_stored_check_from_its_link() -> None:
    res = loupe.sanity("digits_cnn", "digits", "0:2", "saliency")
    at = _ok(_page("pages/sanity.py", {"run": res.key}))
    assert at.title[0].value == "Sanity check" and _sanity_links(at) == [res.link]
    assert any(res.verdict_text in m.value for m in at.markdown) and len(at.get("plotly_chart")) == 1
    assert _ok(_page("pages/explain.py", {"run": res.key})).title[0].value == "Sanity check", \
        "a sanity link edited to another page opens the Sanity page"
    assert any("Run not found" in e.value for e in _page("pages/sanity.py", {"run": "f" * 64}).error)
