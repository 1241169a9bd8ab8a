"""The Streamlit app through AppTest: the home page lists the zoo, and bad share links show a clear
"not found" message (never a traceback or an SQL error). Good links open their result on the
page of its kind: tests/test_pages.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _run(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def test_home_lists_models_datasets_and_explainers():
    at = _run()
    assert not at.exception
    assert at.title[0].value == "Loupe"
    frames = [df.value for df in at.dataframe]
    model_ids = set(frames[0]["id"])
    assert {"shapes_cnn", "shapes_resnet", "digits_cnn", "breast_cancer_mlp", "highdim_mlp"} <= model_ids
    assert {"shapes", "digits", "breast_cancer", "highdim"} <= set(frames[1]["id"])
    assert "integrated_gradients" in set(frames[2]["id"])


@pytest.mark.parametrize("bad", ["nonsense", "' OR 1=1 --", "../../etc/passwd", "a" * 64, "A" * 65, ""])
def test_bad_share_links_show_not_found(bad):
    at = _run({"run": bad})
    assert not at.exception
    assert at.error and "Run not found" in at.error[0].value
    assert "Traceback" not in _text(at) and "SQL" not in _text(at)


def test_home_lists_recent_results_of_every_kind_each_linking_to_its_page():
    import loupe

    rules = loupe.rules(model="breast_cancer_mlp", dataset="breast_cancer", max_leaves=4)
    run = loupe.explain("digits_cnn", "digits", [440, 441], "saliency")
    kinds = {r["key"]: r for r in loupe.recent(limit=50)}
    assert kinds[rules.key]["kind"] == "rules" and kinds[run.key]["kind"] == "attribution"
    at = _run()
    assert not at.exception and at.subheader[-2].value == "Recent results"
    recent = at.dataframe[3].value.set_index("open")
    assert recent.loc[run.link, "kind"] == "explanation" and run.link.endswith(f"/explain?run={run.key}")
    assert recent.loc[rules.link, "kind"] == "rules" and rules.link.endswith(f"/rules?run={rules.key}")
