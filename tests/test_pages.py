"""Every page through Streamlit's AppTest (real store, real embedded Dask cluster): it renders, its
main interaction works, and bad input shows a readable error instead of a traceback."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import loupe
from loupe import background

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _page(page: str, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.switch_page(page)
    return at.run()


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def _links(at: AppTest) -> list[str]:
    """The permanent links the page shows (markdown links to ``…?run=<key>``)."""
    return [url for m in at.markdown for url in re.findall(r"\]\((http[^)\s]*\?run=[0-9a-f]{64})\)", m.value)]


def _query(at: AppTest) -> dict[str, str]:
    return {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}


# -- Explain ---------------------------------------------------------------------------------------
FAST = {"model": "digits_cnn", "dataset": "digits", "samples": "0,1", "explainers": "saliency,occlusion",
        "occlusion.window": "8", "occlusion.stride": "8"}


def test_explain_gallery_selection_and_url():
    at = _page("pages/explain.py", {"model": "digits_cnn", "dataset": "digits", "target": "3"})
    assert not _errors(at) and at.selectbox(key="ex-target").value == "3"
    boxes = [c for c in at.checkbox if str(c.key).startswith("ex-pick-")]
    assert len(boxes) == 12 and not any(c.value for c in boxes)
    at.checkbox(key="ex-pick-5").check().run()
    at.multiselect(key="ex-explainers").set_value(["saliency"]).run()
    assert _query(at)["samples"] == "5" and _query(at)["explainers"] == "saliency" and _query(at)["target"] == "3"
    assert at.checkbox(key="ex-pick-5").value
    assert [t.value for t in at.toggle if t.key != "ex-gallery-wrong"] == [True]  # saliency's abs, from its schema


def test_explain_gallery_filters_by_mistakes_and_class():
    at = _page("pages/explain.py", {"model": "digits_cnn", "dataset": "digits"})
    at.toggle(key="ex-gallery-wrong").set_value(True).run()
    shown = [c for c in at.checkbox if str(c.key).startswith("ex-pick-")]
    truth = loupe.predict("digits_cnn", "digits", "all")
    mistakes = [r["sample_id"] for r in truth if r["label"] != r["prediction"]]
    assert 0 < len(shown) <= 12 and sorted(int(c.key[len("ex-pick-"):]) for c in shown) == mistakes[:12]
    at.toggle(key="ex-gallery-wrong").set_value(False)
    at.multiselect(key="ex-gallery-labels").set_value([7]).run()
    ids = [int(c.key[len("ex-pick-"):]) for c in at.checkbox if str(c.key).startswith("ex-pick-")]
    assert len(ids) == 12 and all(truth[i]["label"] == 7 for i in ids)


def test_explain_cost_preview_run_and_stored_results(fresh_home):
    at = _page("pages/explain.py", FAST)
    assert not _errors(at)
    preview = at.table[0].value.set_index("explainer")
    forward = loupe.estimate("digits_cnn", "digits", [0, 1], "occlusion", {"window": 8, "stride": 8}).passes.forward
    assert preview.loc["occlusion", "forward passes"] == str(forward[0]) and preview.loc["saliency", "samples"] == 2
    at.button(key="ex-run").click().run()
    assert not _errors(at)
    links = _links(at)
    assert len(links) == 4 and all("/explain?run=" in link for link in links)  # 2 samples × 2 explainers
    assert len(at.get("image")) == 4 and not at.get("plotly_chart")  # the maps are images by default
    assert len(at.get("download_button")) == 8  # CSV and PNG for each panel
    at.toggle(key="ex-interactive").set_value(True).run()
    assert len(at.get("plotly_chart")) == 4 and not at.get("image")  # or Plotly figures with hover values
    at.toggle(key="ex-details").set_value(True).run()
    assert len(at.get("plotly_chart")) == 4 + 4  # a deletion/insertion curve figure under each map
    stored = loupe.stored("digits_cnn", "digits", [0, 1], "occlusion", {"window": 8, "stride": 8})
    assert stored is not None and any(stored.key in link for link in links)
    again = _page("pages/explain.py", FAST)  # the same URL shows the stored results without a click
    assert sorted(_links(again)) == sorted(links)


def test_explain_bad_links_show_errors():
    assert any("samples must be" in e for e in _errors(_page("pages/explain.py", {"samples": "1,x"})))
    assert any("Unknown model 'nope'" in e for e in _errors(_page("pages/explain.py", {"model": "nope"})))
    at = _page("pages/explain.py", {**FAST, "explainers": "saliency,bogus", "saliency.abs": "maybe"})
    assert any("bogus" in e for e in _errors(at))
    assert any("abs='maybe'" in w.value for w in at.warning)
    at = _page("pages/explain.py", {**FAST, "explainers": "occlusion", "occlusion.window": "40", "samples": "1,999"})
    assert any("window 40 exceeds" in e for e in _errors(at))
    assert any("outside 0…449: 999" in w.value for w in at.warning)


def test_share_link_opens_the_result_in_explain():
    res = loupe.explain("shapes_cnn", "shapes", "60:62", "saliency")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = res.key
    at.run()
    assert not _errors(at) and at.title[0].value == "Explain"
    assert res.link in _links(at) and len(at.get("image")) == 2  # the stored result on its own first
    assert not at.multiselect and _query(at)["run"] == res.key
    at.button(key="shared-edit-button").click().run()  # then in the explorer, its selection in the URL
    assert not _errors(at) and at.multiselect(key="ex-explainers").value == ["saliency"]
    assert res.link in _links(at) and _query(at)["samples"] == "60,61" and "run" not in _query(at)


def test_a_link_edited_to_another_page_opens_the_page_of_its_kind():
    res = loupe.explain("shapes_cnn", "shapes", "60:62", "saliency")
    for page in ("pages/explain.py", "pages/rules.py", "pages/embeddings.py", "pages/pathways.py"):
        at = _page(page, {"run": res.key})
        assert not _errors(at) and at.title[0].value == "Explain", page
        assert res.link in _links(at)


def test_unknown_run_link_says_not_found():
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "0" * 64
    at.run()
    assert any("Run not found" in e for e in _errors(at))


# -- Compare ---------------------------------------------------------------------------------------
def test_compare_tables_and_links():
    query = {"dataset": "digits", "models": "digits_cnn", "explainers": "saliency,input_x_gradient", "samples": "0:6"}
    at = _page("pages/compare.py", query)
    assert not _errors(at)
    at.button(key="cmp-run").click().run()
    assert not _errors(at)
    metrics, ranked = (d.value for d in at.dataframe)
    assert set(metrics["explainer"]) == {"saliency", "input_x_gradient"} and "±" in metrics["deletion_auc"].iloc[0]
    assert len(ranked) == 6 and ranked["mean Spearman"].is_monotonic_increasing
    assert ranked["open"].str.contains("/explain?model=digits_cnn", regex=False).all()
    classes = loupe.dataset("digits").classes
    assert set(ranked["label"]) <= set(classes) and ranked["label"].map(type).eq(str).all()  # names, not numbers
    # the map grid: input + one map per explainer for each sample, most disputed first, each map a link to Explain
    assert len(at.get("image")) == 6 * 3
    grid = [re.search(r"samples=(\d+)&explainers=(\w+)", m.value) for m in at.markdown if "open in Explain" in m.value]
    expected = [(s, e) for s in ranked["sample"] for e in ("saliency", "input_x_gradient")]
    assert [(int(g[1]), g[2]) for g in grid] == expected
    assert len(at.get("plotly_chart")) == 2  # the metric chart and the agreement matrix


def test_compare_unknown_model_is_reported():
    at = _page("pages/compare.py", {"dataset": "digits", "models": "nope", "explainers": "saliency"})
    assert any("nope" in e for e in _errors(at))


# -- Batch -----------------------------------------------------------------------------------------
def _start_batch(samples: str) -> AppTest:
    at = _page("pages/batch.py")
    at.selectbox(key="bt-model").set_value("digits_cnn").run()
    at.text_input(key="bt-samples").set_value(samples).run()
    at.multiselect(key="bt-explainers").set_value(["saliency"]).run()
    return at.button(key="bt-start").click().run()


def test_batch_runs_in_the_background_and_exports():
    at = _start_batch("0:5")
    assert not _errors(at)
    record = background.wait(at.session_state["bt-watch"], timeout=120)
    assert record.status == "done" and record.done == record.total == 5 and len(record.run_keys) == 1
    at.run()
    assert "done" in " ".join(m.value for m in at.markdown)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download CSV", "Download Parquet"]
    csv = background.export(record.id, "csv").decode()
    assert csv.count("\n") == 6 and "saliency" in csv


def test_batch_bad_slice_is_an_error():
    assert any("samples must look like" in e for e in _errors(_start_batch("zero:five")))


def test_batch_cancel_then_resume():
    spec = background.BatchSpec("digits_cnn", "digits", "20:52", {"saliency": {}})
    record = background.start(spec)
    background.cancel(record.id)
    assert background.wait(record.id, timeout=120).status in {"cancelled", "done"}
    resumed = background.wait(background.start(spec).id, timeout=120)
    assert resumed.status == "done" and resumed.done == 32 and resumed.id == record.id


# -- Registry --------------------------------------------------------------------------------------
def test_registry_adds_a_validated_model(tmp_path):
    path = tmp_path / "tiny_page.ts"
    torch.manual_seed(0)
    torch.jit.script(nn.Sequential(nn.Linear(30, 2))).save(str(path))
    at = _page("pages/registry.py")
    assert not _errors(at)
    at.text_input(key="rg-m-id").set_value("tiny_page")
    at.selectbox(key="rg-m-task").set_value("tabular")
    at.text_input(key="rg-m-path").set_value(str(tmp_path / "missing.ts"))
    at.text_input(key="rg-m-shape").set_value("30")
    at.text_input(key="rg-m-classes").set_value("benign, malignant").run()
    at.button(key="rg-m-add").click().run()
    assert any(e.startswith("Not saved: model 'tiny_page': ") and "does not exist" in e for e in _errors(at))
    at.text_input(key="rg-m-path").set_value(str(path)).run()
    at.button(key="rg-m-add").click().run()
    assert not _errors(at) and "tiny_page" in at.success[0].value
    assert "tiny_page" in set(at.dataframe[0].value["id"])
    assert any(m["id"] == "tiny_page" and m["status"] == "ok" for m in loupe.models())


# -- Embeddings ------------------------------------------------------------------------------------
def test_embeddings_renders_and_reports_bad_requests():
    at = _page("pages/embeddings.py", {"model": "digits_cnn", "dataset": "digits", "samples": "0:5"})
    assert not _errors(at) and any("Compute embedding" in i.value for i in at.info)
    at.button(key="em-run").click().run()
    assert any("more samples (5) than n_neighbors (15)" in e for e in _errors(at))
    assert any("Run not found" in e for e in _errors(_page("pages/embeddings.py", {"run": "f" * 64})))


@pytest.mark.slow
def test_embedding_is_computed_on_the_worker_and_reopens_by_link():
    at = _page("pages/embeddings.py", {"model": "digits_cnn", "dataset": "digits", "samples": "0:60"})
    at.button(key="em-run").click().run()
    assert not _errors(at)
    key = _query(at)["run"]
    assert loupe.kind_of(key) == "embedding" and loupe.artifact(key).arrays["points"].shape == (60, 2)
    at.radio(key="em-colour").set_value("correct").run()
    assert not _errors(at)
    reopened = AppTest.from_file(APP, default_timeout=60)
    reopened.query_params["run"] = key
    reopened.run()
    assert not _errors(reopened) and reopened.title[0].value == "Embeddings"
    assert any(key in c.value for c in reopened.caption)  # the result's caption carries its link


def test_link_to_a_kind_no_page_shows_says_so():
    from store.runs import Store

    key = Store().put_artifact({"kind": "toy", "model_id": "digits_cnn", "weights_hash": "h", "dataset_id": "digits",
                                "analysis_id": "toy", "analysis_version": "1", "params": {}, "inputs_hash": "i",
                                "sample_ids": [0]}, {}, {"x": np.zeros(2)})
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = key
    at.run()
    assert any("stored toy result, which no page of this app shows yet" in e for e in _errors(at))
