"""Streamlit layout pieces that several pages share: registry listings, the params form rendered
from an explainer's ``Params.schema()``, query-parameter seeding and one result panel. Layout only:
every number comes from the ``loupe`` API or the pure view modules."""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import streamlit as st

import loupe
from explainers.base import Result
from views.figures import (attribution_overlay, curves_figure, feature_bars, overlay_card_png, overlay_png,
                           patch_grid_figure, path_logits_figure)
from views.params import Widget, grouped, widget_value, with_choices, with_defaults
from views.runs import metrics_html, run_page


@st.cache_data(ttl=5, show_spinner=False)
def listings() -> tuple[list[dict], list[dict], list[dict]]:
    """Models, datasets and explainers (re-read every few seconds so manifest edits show up)."""
    return loupe.models(), loupe.datasets(), loupe.explainers()


def usable_models() -> list[dict]:
    """Models whose entry loaded."""
    return [m for m in listings()[0] if m.get("status", "ok") == "ok"]


def datasets_for(model: Mapping[str, Any]) -> list[str]:
    """Ids of the loadable datasets this model can read (same task; its own dataset first)."""
    ids = [d["id"] for d in listings()[1] if d.get("status", "ok") == "ok" and d.get("task") == model.get("task")
           and list(d.get("input_shape") or []) == list(model.get("input_shape") or [])]
    own = model.get("dataset")
    return sorted(ids, key=lambda d: d != own)


def explainers_for(model: Mapping[str, Any], output: str = "attribution") -> dict[str, dict]:
    """Explainers (or, with another ``output`` kind, analyses) whose modalities include the
    model's task, by id."""
    return {e["id"]: e for e in listings()[2] if model.get("task") in e["modalities"] and e["output"] == output}


@st.cache_resource(show_spinner=False, max_entries=32)
def artifact(key: str) -> loupe.Artifact:
    """A stored analysis result (embedding, rules, pathways), read once per server: a key always
    names the same content."""
    return loupe.artifact(key)


def seed(key: str, value: Any) -> None:
    """Give widget ``key`` its value from the URL unless the user already set it this session."""
    if key not in st.session_state:
        st.session_state[key] = value


def follow_run_link(kind: str) -> None:
    """On the page that shows ``kind``, send a ``?run=<key>`` of another stored kind on to the page
    that shows that one (a link's path can be edited; its key says what it is). Malformed or unknown
    keys are left to the page, which says "not found"."""
    if "run" not in st.query_params:
        return
    try:
        actual, page = run_page(st.query_params["run"])
    except loupe.user_errors():
        return
    if actual != kind and page:
        st.switch_page(page, query_params={"run": st.query_params["run"]})


T = TypeVar("T")


def open_linked(load: Callable[[str], T], what: str = "Run") -> T:
    """What the URL's ``?run=<key>`` names, read by ``load``; an unknown or malformed key (any
    :func:`loupe.user_errors`) stops the page with "<what> not found." and the reason."""
    try:
        return load(st.query_params["run"])
    except loupe.user_errors() as err:
        st.error(f"{what} not found. {err}")
        st.stop()


_INPUTS: dict[str, Callable[[Widget, str], Any]] = {
    "select": lambda w, key: st.selectbox(w.name, w.options or (), key=key, help=w.help),
    "toggle": lambda w, key: st.toggle(w.name, key=key, help=w.help),
    "int": lambda w, key: st.number_input(w.name, min_value=None if w.low is None else int(w.low),
                                          max_value=None if w.high is None else int(w.high), step=1, key=key,
                                          help=w.help),
    "float": lambda w, key: st.number_input(w.name, min_value=w.low, max_value=w.high, step=None, format="%.4g",
                                            key=key, help=w.help),
    "text": lambda w, key: st.text_input(w.name, key=key, help=w.help),
}


@st.cache_data(ttl=5, show_spinner=False)
def resolved_params(model_id: str, explainer_id: str, preset: str | None) -> dict[str, Any]:
    """What ``explainer_id`` runs with on ``model_id`` under ``preset`` when nothing is set."""
    return loupe.resolved_params(model_id, explainer_id, {} if preset is None else {"preset": preset})


def form_schema(explainer: Mapping[str, Any], model_id: str, preset: str | None) -> list[Mapping[str, Any]]:
    """The explainer's schema with the defaults it resolves to on ``model_id`` under ``preset``
    (the raw schema when the model rejects them; running then reports why). The preset field keeps
    its own default, so a URL names a chosen non-default preset."""
    try:
        resolved = resolved_params(model_id, explainer["id"], preset)
        return [*with_defaults(explainer["params"], {k: v for k, v in resolved.items() if k != "preset"})]
    except loupe.user_errors():
        return list(explainer["params"])


def params_form(explainer: Mapping[str, Any], prefix: str, initial: Mapping[str, Any],
                model_id: str | None = None, choices: Mapping[str, list[Any]] | None = None) -> dict[str, Any]:
    """Widgets for every parameter of ``explainer`` (grouped, with help text), seeded from
    ``initial`` (URL strings or stored values); a value the widget cannot take is reported and
    replaced by the default. With ``model_id``, the preset (if the explainer has one) comes first and
    the other widgets show the values that run on that model under it (auto values resolved); a new
    preset or model starts its widgets from its own values. ``choices`` turns free-text parameters
    whose options the page knows into selects (:func:`views.params.with_choices`). Returns the
    chosen values."""
    schema: list[Mapping[str, Any]] = [*with_choices(explainer["params"], choices or {})]
    values: dict[str, Any] = {}
    if model_id is not None:
        preset = next((w for w in grouped(schema).get("main", []) if w.name == "preset"), None)
        if preset is not None:
            values["preset"] = _widget(explainer["id"], preset, f"{prefix}-preset", initial)
        resolved = form_schema({**explainer, "params": schema}, model_id, values.get("preset"))
        schema = [f for f in resolved if f["name"] != "preset"]
        prefix = f"{prefix}-{model_id}-{values.get('preset', '')}"
    for group, widgets in grouped(schema).items():
        if group != "main":
            st.caption(group)
        columns = st.columns(2)
        for i, w in enumerate(widgets):
            with columns[i % 2]:
                values[w.name] = _widget(explainer["id"], w, f"{prefix}-{w.name}", initial)
    return values


def _widget(explainer_id: str, w: Widget, key: str, initial: Mapping[str, Any]) -> Any:
    """One parameter's widget, seeded on first show from ``initial`` (else its default); a stored
    choice that is no longer an option (e.g. an explainer the newly chosen model does not support)
    is dropped first."""
    if w.options is not None and st.session_state.get(key, w.default) not in w.options:
        del st.session_state[key]
    if key not in st.session_state:
        value, problem = widget_value(w, initial[w.name]) if w.name in initial else (w.default, None)
        if problem:
            st.warning(f"{explainer_id}.{problem}; using the default {w.default!r}")
        st.session_state[key] = value
    return _INPUTS[w.kind](w, key)


@st.cache_data(show_spinner="Reading the dataset…", max_entries=64)
def thumbnails(dataset_id: str, ids: tuple[int, ...]) -> list[np.ndarray]:
    """Display images (H×W×3 uint8) of ``ids``."""
    from views.figures import to_rgb_uint8

    ds = loupe.dataset(dataset_id)
    return [to_rgb_uint8(x) for x in ds.inputs(list(ids)).numpy()]


@st.cache_data(show_spinner="Predicting on the worker…", max_entries=64)
def predictions(model_id: str, dataset_id: str, ids: tuple[int, ...]) -> list[dict]:
    """Label, prediction and confidence per sample (computed on the worker, cached)."""
    return loupe.predict(model_id, dataset_id, list(ids))


def run_csv(key: str) -> bytes:
    """The export table of a stored run as CSV (made when its download button is pressed)."""
    return loupe.export(key).to_csv(index=False).encode()


def map_card(res: Result, i: int, image: np.ndarray, opacity: float, size: int = 256, colour_bar: bool = True) -> bytes:
    """Sample ``i`` of ``res`` over its input ``image`` as the card PNG of
    :func:`views.figures.overlay_card_png`. A stored result never changes, so its cards are cached by
    run key, sample and display settings: every session that opens the result after the first reuses
    the bytes instead of colouring and encoding the PNG again."""
    if res.key is None:  # not stored: nothing names its content
        return overlay_card_png(image, res.attributions[i], opacity, size=size, colour_bar=colour_bar)
    return _stored_card(res.key, i, opacity, size, colour_bar, image, res.attributions[i])


@st.cache_data(show_spinner=False, max_entries=2048)
def _stored_card(key: str, i: int, opacity: float, size: int, colour_bar: bool, _image: np.ndarray,
                 _attribution: np.ndarray) -> bytes:
    """:func:`map_card` of a stored result, cached by what names it (the underscored arrays, which
    the key determines, are not hashed)."""
    return overlay_card_png(_image, _attribution, opacity, size=size, colour_bar=colour_bar)


def _extras_figures(res: Result, i: int) -> list[Any]:
    """The method-specific extras of sample ``i`` that have a figure (found by the extras' names)."""
    extras = res.extras
    figures = []
    paths = {name: extras[f"{name}_path_logits"][i] for name in ("deletion", "insertion")
             if f"{name}_path_logits" in extras}
    if paths:
        figures.append(path_logits_figure(paths))
    if "patch_scores" in extras:
        evaluated = extras.get("evaluated_windows")
        figures.append(patch_grid_figure(extras["patch_scores"][i], None if evaluated is None else evaluated[i]))
    return figures


def result_panel(res: Result, i: int, image: np.ndarray | None, feature_names: list[str], opacity: float,
                 key: str, details: bool, interactive: bool = False) -> None:
    """Sample ``i`` of a stored result: the map (an overlay image, or with ``interactive`` a Plotly
    figure with hover values; feature bars for tabular data), its metrics, with ``details`` the
    deletion/insertion curves and the method's extras, the run's link and downloads."""
    from explainers.evaluation import default_step

    assert res.key is not None and res.link is not None  # the panel shows stored results
    title = res.provenance.get("explainer", res.provenance.get("explainer_id", ""))
    if image is not None and not interactive:
        with st.container(key=f"{key}-map"):
            st.markdown(f"**{title}**")
            st.image(map_card(res, i, image, opacity), output_format="PNG")
    elif image is not None:
        st.plotly_chart(attribution_overlay(image, res.attributions[i], opacity, title=title), key=f"{key}-map",
                        config={"displayModeBar": False})
    else:
        st.plotly_chart(feature_bars(res.attributions[i], feature_names, top=12, title=title), key=f"{key}-map",
                        config={"displayModeBar": False})
    st.html(metrics_html(res, i))
    if details:
        if "deletion_curve" in res.extras:
            deletion, insertion = res.extras["deletion_curve"][i], res.extras["insertion_curve"][i]
            units = int(np.prod(res.attributions.shape[1:]))
            fractions = np.minimum(np.arange(len(deletion)) * default_step(units), units) / units
            st.plotly_chart(curves_figure(fractions, deletion, insertion), key=f"{key}-curves",
                            config={"displayModeBar": False})
        for j, fig in enumerate(_extras_figures(res, i)):
            st.plotly_chart(fig, key=f"{key}-extra-{j}", config={"displayModeBar": False})
    st.markdown(f"Permanent link: [{res.link}]({res.link})")
    left, right = st.columns(2)  # both files are made when their button is pressed, not on every render
    run_key = res.key
    left.download_button("CSV", lambda: run_csv(run_key), key=f"{key}-csv",
                         file_name=f"loupe-{res.key[:12]}.csv", mime="text/csv", on_click="ignore")
    if image is not None:
        attribution = res.attributions[i]
        right.download_button("PNG", lambda: overlay_png(image, attribution, opacity), key=f"{key}-png",
                              file_name=f"loupe-{res.key[:12]}-{res.sample_ids[i]}.png", mime="image/png",
                              on_click="ignore")
