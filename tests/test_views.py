"""The pages' pure parts: widgets from Params schemas, the Explain page's URL state, links,
Compare's tables (on hand-built results with known agreement), figures and the PNG overlay."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from explainers.base import Result
from explainers.registry import get_explainer
from views.compare import agreement_matrix, disagreement, disputed_samples, metric_figure, metric_frame, metric_table
from views.explain import Selection, SelectionError, caption, explain_link
from views.figures import colour_scale, overlay_png, patch_grid_figure, path_logits_figure
from model_registry.uploads import RegistrationError
from views.params import from_query, grouped, to_query, widget, widget_value
from views.registry import entry_values


def test_widgets_follow_the_schema():
    schema = get_explainer("samp").Params.schema()
    widgets = {w.name: w for group in grouped(schema).values() for w in group}
    assert widgets["paths"].kind == "select" and widgets["paths"].options == ("both", "deletion", "insertion")
    assert widgets["n_frag"].kind == "int" and widgets["n_frag"].low == 0 and widgets["n_frag"].high == 100_000
    assert widgets["momentum"].kind == "float" and "momentum" in widgets["momentum"].help.lower()
    assert widget({"name": "abs", "type": "bool", "default": True}).kind == "toggle"
    with pytest.raises(ValueError, match="no widget"):
        widget({"name": "x", "type": "list", "default": []})


def test_params_round_trip_through_the_url_keeping_only_changes():
    schema = get_explainer("samp").Params.schema()
    query = to_query("samp", {"n_frag": 4, "momentum": 0.5, "paths": "both"}, schema)
    assert query == {"samp.n_frag": "4"}
    raw = from_query("samp", {**query, "osa_das.n_views": "2", "model": "m"})
    assert raw == {"n_frag": "4"} and get_explainer("samp").Params.from_dict(raw).n_frag == 4


def test_selection_query_round_trip():
    schemas = {e: get_explainer(e).Params.schema() for e in ("samp", "osa_das")}
    sel = Selection("shapes_cnn", "shapes", (3, 7), ("samp", "osa_das"), {"samp": {"n_frag": 4}, "osa_das": {}})
    query = sel.to_query(schemas)
    assert query == {"model": "shapes_cnn", "dataset": "shapes", "samples": "3,7", "explainers": "samp,osa_das",
                     "samp.n_frag": "4"}
    back = Selection.from_query(query, "digits_cnn", "digits")
    assert back.samples == (3, 7) and back.explainers == ("samp", "osa_das") and back.params["samp"] == {"n_frag": "4"}
    assert Selection.from_query({}, "digits_cnn", "digits") == Selection("digits_cnn", "digits")
    with pytest.raises(SelectionError, match="samples must be"):
        Selection.from_query({"samples": "1,x"}, "digits_cnn", "digits")
    with pytest.raises(SelectionError, match="target must be"):
        Selection.from_query({"target": "best"}, "digits_cnn", "digits")


def test_selection_from_a_stored_run_keeps_changed_params_only():
    provenance = {"explainer_id": "samp", "model_id": "shapes_cnn", "dataset_id": "shapes", "sample_ids": [5, 2],
                  "params": {"n_frag": 4, "momentum": 0.5}, "target": "label"}
    sel = Selection.from_run(provenance, {"n_frag": 50, "momentum": 0.5})
    assert sel == Selection("shapes_cnn", "shapes", (5, 2), ("samp",), {"samp": {"n_frag": 4}}, "label")


def test_links_and_captions():
    assert explain_link("http://h:1/", "m", "d", [4, 9], ["a", "b"]) == \
        "http://h:1/explain?model=m&dataset=d&samples=4%2C9&explainers=a%2Cb"
    assert caption(4, ["circle", "square"], 0, 1, 0.734) == "#4 · circle → square (0.73) ✗"
    assert caption(4, ["circle", "square"], 1, 1, 0.9) == "#4 · square → square (0.90)"


def _result(maps: np.ndarray, metric: list[float]) -> Result:
    n = len(maps)
    return Result(attributions=maps, sample_ids=list(range(10, 10 + n)), labels=np.zeros(n, int),
                  predictions=np.zeros(n, int), targets=np.zeros(n, int), confidences=np.ones(n),
                  metrics=[{"deletion_auc": m} for m in metric])


def test_compare_tables_on_known_maps():
    rng = np.random.default_rng(0)
    base = rng.random((3, 4, 4))
    flipped = base.copy()
    flipped[2] = -base[2]  # sample 12: the two maps rank in exactly the opposite order
    results = {("m", "a"): _result(base, [0.1, 0.2, 0.3]), ("m", "b"): _result(flipped, [0.0, 0.0, 0.0]),
               ("m", "c"): _result(base, [0.5, 0.5, 0.5])}
    table = metric_table(results).set_index("explainer")
    t_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (3 samples)
    assert table.loc["a", "deletion_auc"] == f"{0.2:.3f} ± {t_975_2 * 0.1 / np.sqrt(3):.3f}"
    assert table.loc["b", "deletion_auc"] == "0.000 ± 0.000"
    matrix = agreement_matrix(results, "m")
    assert matrix.loc["a", "c"] == 1.0 and matrix.loc["a", "b"] == pytest.approx((1 + 1 - 1) / 3, abs=1e-3)
    ranked = disagreement(results, "m", ["cat", "dog"])
    assert ranked["sample"].iloc[0] == 12 and ranked["mean Spearman"].iloc[0] == pytest.approx(-1 / 3, abs=1e-3)
    assert ranked["least agreeing pair"].iloc[0] in {"a vs b", "b vs c"}
    assert set(ranked["label"]) == {"cat"} and set(ranked["prediction"]) == {"cat"}  # class names, not numbers
    assert disputed_samples(results) == [12, 10, 11]  # 12 is the only sample where the maps disagree
    iou = agreement_matrix(results, "m", "topk_iou")
    assert iou.loc["a", "c"] == 1.0
    with pytest.raises(ValueError, match="two explainers"):
        disagreement({("m", "a"): results[("m", "a")]}, "m", ["cat", "dog"])


def test_compare_metric_chart_has_intervals_directions_and_help():
    results = {("m", "a"): _result(np.ones((3, 2, 2)), [0.1, 0.2, 0.3]),
               ("m", "b"): _result(np.ones((3, 2, 2)), [0.4, 0.4, 0.4])}
    fig = metric_figure(results)
    assert [a.text for a in fig.layout.annotations] == ["deletion AUC ↓"]  # one panel per metric, titled with ↓
    a, b = fig.data
    assert a.x[0] == pytest.approx(0.2) and a.error_x.array[0] == pytest.approx(4.302652729911275 * 0.1 / np.sqrt(3))
    assert b.error_x.array[0] == pytest.approx(0.0, abs=1e-12) and "Lower is better" in a.hovertemplate
    frame = metric_frame(results)
    assert list(frame.columns) == ["model", "explainer", "metric", "mean", "ci95", "n"] and set(frame["n"]) == {3}


def test_colour_scale_is_diverging_only_for_signed_maps():
    assert colour_scale(np.array([[-2.0, 1.0]])) == ("RdBu_r", -2.0, 2.0)
    assert colour_scale(np.array([[0.0, 3.0]])) == ("Reds", 0.0, 3.0)


def test_overlay_png_blends_the_scale_over_the_image():
    image = np.zeros((3, 2, 2))
    attribution = np.array([[-1.0, 0.0], [0.0, 1.0]])
    pixels = np.asarray(Image.open(io.BytesIO(overlay_png(image, attribution, opacity=1.0))))
    assert pixels.shape == (2, 2, 3)
    assert tuple(pixels[1, 1]) == (103, 0, 31)                 # +1: the dark red end of RdBu_r
    assert tuple(pixels[0, 0]) == (5, 48, 97)                  # −1: its dark blue end
    assert np.abs(pixels[0, 1].astype(int) - 247).max() <= 2   # 0: the white middle
    faint = np.asarray(Image.open(io.BytesIO(overlay_png(image, attribution, opacity=0.0))))
    assert not faint.any()                                      # opacity 0: the (black) image only


def test_extras_figures():
    fig = path_logits_figure({"deletion": np.array([3.0, 2.0, np.nan]), "insertion": np.array([0.0, 1.0, 2.5])})
    assert [len(t.y) for t in fig.data] == [2, 3]
    grid = patch_grid_figure(np.ones((2, 3)), np.array([[True, False, True], [True, True, True]]))
    assert np.isnan(grid.data[0].z[0][1]) and grid.data[0].z[1][1] == 1.0


def test_url_values_a_widget_cannot_take_fall_back_to_the_default():
    widgets = {w.name: w for group in grouped(get_explainer("samp").Params.schema()).values() for w in group}
    assert widget_value(widgets["n_frag"], "4") == (4, None)
    assert widget_value(widgets["n_frag"], "-1")[1] == "n_frag='-1' is outside [0, 100000]"
    assert widget_value(widgets["paths"], "sideways") == ("both", "paths='sideways' is not one of ['both', 'deletion', 'insertion']")
    assert widget_value(widget({"name": "abs", "type": "bool", "default": True}), "false") == (False, None)
    assert widget_value(widgets["momentum"], "fast")[0] == 0.5


def test_registry_form_values():
    values = entry_values({"id": "m", "input_shape": "3, 64,64", "classes": "a,b", "dataset": "", "trust": False,
                           "seed": 0}, {"input_shape": int, "classes": str})
    assert values == {"id": "m", "input_shape": [3, 64, 64], "classes": ["a", "b"], "seed": 0}
    with pytest.raises(RegistrationError, match="input_shape must be a comma-separated list of int"):
        entry_values({"input_shape": "3,x"}, {"input_shape": int})


def test_embedding_colourings_figure_and_selection():
    from views.embedding import colourings, embedding_figure, same_request, selected_samples

    arrays = {"labels": np.array([0, 1, 1]), "predictions": np.array([0, 0, 1]),
              "confidences": np.array([0.9, 0.6, 0.8]), "metric_deletion_auc": np.array([0.1, 0.2, 0.3])}
    options = colourings(arrays, ["cat", "dog"])
    assert list(options) == ["label", "prediction", "correct", "confidence", "deletion_auc"]
    assert options["correct"].values.tolist() == ["correct", "wrong", "correct"] and options["correct"].categorical
    assert not options["deletion_auc"].categorical and options["deletion_auc"].title == "deletion AUC ↓"
    points = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    fig = embedding_figure(points, [10, 11, 12], options["label"])
    assert [t.name for t in fig.data] == ["cat", "dog"] and fig.data[1].customdata.tolist() == [11, 12]
    numeric = embedding_figure(points, [10, 11, 12], options["deletion_auc"])
    assert len(numeric.data) == 1 and numeric.data[0].marker.showscale
    assert numeric.data[0].marker.colorbar.title.text == "deletion AUC ↓"
    assert selected_samples([{"customdata": 12}, {"customdata": [11]}, {"customdata": 12}, {}]) == [12, 11]
    meta = {"model_id": "m", "dataset_id": "d", "params": {"samples": "0:60", "seed": 0}}
    assert same_request(meta, "m", "d", {"samples": "0:60", "seed": 0})
    assert not same_request(meta, "m", "d", {"samples": "0:60", "seed": 1})
    assert not same_request(meta, "other", "d", {"samples": "0:60", "seed": 0})


def test_gallery_filter_pages_through_the_matching_samples():
    from views.explain import GalleryFilter, gallery_page

    labels = [i % 3 for i in range(40)]
    predictions = [0 if i % 5 == 0 else labels[i] for i in range(40)]  # mistakes where i % 5 == 0 and label != 0
    calls: list[tuple[int, ...]] = []

    def predict(ids: tuple[int, ...]) -> list[dict]:
        calls.append(ids)
        return [{"sample_id": i, "label": labels[i], "prediction": predictions[i], "confidence": i / 40} for i in ids]

    rows, scanned = gallery_page(predict, 0, 40, GalleryFilter(), size=12)
    assert [r["sample_id"] for r in rows] == list(range(12)) and scanned == 12 and calls == [tuple(range(12))]
    wrong = GalleryFilter(misclassified=True)
    rows, scanned = gallery_page(predict, 0, 40, wrong, size=3, chunk=8)
    assert [r["sample_id"] for r in rows] == [5, 10, 20] and scanned == 21  # 15 and 0 have label 0: correct
    rows, scanned = gallery_page(predict, scanned, 40, wrong, size=3, chunk=8)
    assert [r["sample_id"] for r in rows] == [25, 35] and scanned == 40  # the next page, to the end
    by_class = GalleryFilter(labels=(2,), confidence=(0.5, 0.8))
    rows, _ = gallery_page(predict, 0, 40, by_class, size=12)
    assert [r["sample_id"] for r in rows] == [20, 23, 26, 29, 32] and not GalleryFilter().active
    rows, scanned = gallery_page(predict, 0, 40, wrong, size=12, chunk=4, limit=8)
    assert [r["sample_id"] for r in rows] == [5] and scanned == 8  # a bounded scan per page


def test_a_samples_metrics_read_with_direction_meaning_and_format():
    from views.runs import metric_line, metrics_html

    res = Result(attributions=np.ones((1, 2, 2)), sample_ids=[7], labels=np.zeros(1, int), predictions=np.zeros(1, int),
                 targets=np.zeros(1, int), confidences=np.array([0.9]),
                 metrics=[{"sparsity_gini": 0.5, "pointing_hit": True, "insertion_auc": 0.8, "deletion_auc": 0.1}])
    table = metrics_html(res, 0)
    names = re.findall(r'cursor:help;padding:1px 12px 1px 0">([^<]+)</td>', table)
    assert names == ["deletion AUC ↓", "insertion AUC ↑", "pointing game ↑", "sparsity (Gini) ↑"]  # display order
    assert "hit</td>" in table and "0.50</td>" in table and "confidence" not in table
    assert 'title="Lower is better. ' in table
    line = metric_line(res.metrics[0], ["deletion_auc", "mask_energy"])  # a metric the sample lacks is left out
    assert "deletion AUC ↓</span> 0.100" in line and "mask" not in line


def test_map_cards_of_a_stored_result_are_cached_by_run_sample_and_settings():
    """A stored result's card is cached by its key (a key always names the same content); the
    cache must still tell samples and display settings apart, and a result that is not stored
    (no key) is drawn afresh."""
    from views.figures import overlay_card_png
    from views.st_layout import map_card

    rng = np.random.default_rng(0)
    maps, images = rng.normal(size=(2, 8, 8)), rng.uniform(size=(2, 3, 8, 8))
    res = Result(maps, sample_ids=[3, 4], key="a" * 64)
    cards = [map_card(res, i, images[i], 0.6) for i in (0, 1)]
    assert cards == [overlay_card_png(images[i], maps[i], 0.6) for i in (0, 1)] and cards[0] != cards[1]
    assert map_card(res, 0, images[0], 0.3) == overlay_card_png(images[0], maps[0], 0.3) != cards[0]
    assert map_card(res, 0, images[0], 0.6, size=64, colour_bar=False) == overlay_card_png(
        images[0], maps[0], 0.6, size=64, colour_bar=False)
    other = Result(-maps, sample_ids=[3, 4])  # no key: never served from the cache
    assert map_card(other, 0, images[0], 0.6) == overlay_card_png(images[0], -maps[0], 0.6) != cards[0]
