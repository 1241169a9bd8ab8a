"""Pathways (Bluff): how a targeted attack travels through a CNN. Pick a class pair and an attack,
compute (cached), then explore the stored result: every slider answers from the stored arrays.
Opens a shared result from ``?run=<key>``. Layout only."""
import numpy as np
import streamlit as st

import loupe
from explainers.results.pathways import COLUMNS, CRITERIA, PathwaysResult
from views.access import require_access
from views.pathways import (COMPARE_NAMES, activation_figure, default_strength, graph_figure, patch_crops, pin,
                            selected_nodes, success_figure)
from views.st_layout import datasets_for, follow_run_link, open_linked, usable_models

require_access()  # every page gates itself: a fresh server may serve a page path without app.py


@st.cache_resource(show_spinner=False, max_entries=16)
def stored(key: str) -> PathwaysResult:
    """A stored pathways result, read once per server."""
    return loupe.pathways_result(key)


def request_form() -> None:
    """Model, dataset, class pair, attack and size (plain widgets, not a form, so the dataset and
    class choices follow the model); computing stores the result and puts its key in the URL."""
    models = {m["id"]: m for m in usable_models() if m.get("task") == "image"}
    if not models:
        st.warning("No image model is registered: pathways need a CNN (see the Registry page).")
        return
    c1, c2, c3, c4 = st.columns(4)
    model_id = c1.selectbox("Model", list(models), key="model")
    info = models[model_id]
    datasets = datasets_for(info)
    if not datasets:
        st.error(f"No registered dataset matches {model_id}'s inputs {info.get('input_shape')}.")
        return
    dataset = c2.selectbox("Dataset", datasets, key="dataset", help="images of the model's input shape")
    classes = list(info["classes"])
    original = c3.selectbox("Original class", classes, index=0, key="original")
    target = c4.selectbox("Target class", classes, index=min(1, len(classes) - 1), key="target")
    c5, c6, c7 = st.columns(3)
    attacks = loupe.attacks()
    attack = c5.selectbox("Attack", list(attacks), format_func=lambda a: attacks[a], key="attack")
    images = c6.number_input("Images per class", 1, 5000, 32, key="images")
    steps = c7.number_input("PGD steps", 1, 1000, 50, key="steps")
    if not st.button("Compute pathways", type="primary", key="compute"):
        return
    try:
        with st.status("Attacking and measuring…", expanded=False):
            res = loupe.pathways(model_id, dataset, original, target, attack=attack, images=int(images),
                                 steps=int(steps))
    except loupe.user_errors() as err:
        st.error(str(err))
        return
    st.query_params["run"] = res.key
    st.rerun()


def show(res: PathwaysResult) -> None:
    """The stored result: controls, graph and the detail of the clicked channel."""
    st.subheader(f"How {res.model_id} misclassifies {res.original} into {res.target} ({res.info['attack_title']})")
    st.caption(f"Result `{res.key}` · {'from the store' if res.cached else 'computed now'} · "
               f"{res.n_used[0]} benign {res.original} and {res.n_used[1]} {res.target} images · "
               f"strengths in [0, 1] pixel units ({res.info['unit']})")
    grid = [0.0, *res.strengths.tolist()]
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    strength = c1.select_slider("Attack strength (0 = benign)", grid, value=default_strength(res),
                                key="strength", format_func=lambda s: f"{s:g}")
    criterion = c2.selectbox("Highlight the most … by attack", CRITERIA, key="criterion")
    neurons = c3.slider("Neurons: top k% per layer", 5, 100, 20, key="neurons_pct")
    connections = c4.slider("Connections: top k%", 5, 100, 30, key="connections_pct")
    c5, c6, c7 = st.columns([3, 2, 4])
    show_filter = c5.radio("Show", ["all", "highlighted", "pinned"], horizontal=True, key="filter")
    comparing = c6.toggle("Compare weak vs strong", key="compare")
    weak, strong = grid[1], grid[-1]
    if comparing:
        weak, strong = c7.select_slider("Weaker / stronger", grid[1:], value=(grid[1], grid[-1]), key="weak_strong",
                                        format_func=lambda s: f"{s:g}")
    highlight = res.highlight(criterion, weak if comparing else strength, neurons, connections)
    compare = res.compare(criterion, weak, strong, neurons) if comparing else None
    pins_key = f"pins-{res.key}"
    pinned = st.session_state.setdefault(pins_key, [])

    def pin_clicked() -> None:
        """A click on a node (a Plotly point selection) pins it and makes it the detail's channel.
        Runs as the chart's callback, before the page draws the graph with the new pin."""
        st.session_state[pins_key] = pin(st.session_state[pins_key], selected_nodes(st.session_state.get("graph")))
        st.session_state["channel"] = st.session_state[pins_key][-1] if st.session_state[pins_key] else None

    def pin_chosen() -> None:
        if st.session_state.get("channel") is not None:
            st.session_state[pins_key] = pin(st.session_state[pins_key], [st.session_state["channel"]])

    def clear_pins() -> None:
        st.session_state[pins_key] = []
        st.session_state["channel"] = None

    visible = {"all": np.ones(len(highlight.nodes), bool), "highlighted": highlight.nodes if compare is None
               else compare > 0, "pinned": np.isin(np.arange(len(highlight.nodes)), pinned)}[show_filter]
    graph, detail = st.columns([3, 2])
    with graph:
        if comparing:
            st.caption("Symbols: ▼ " + COMPARE_NAMES[1] + " · ▲ " + COMPARE_NAMES[2] + " · ★ " + COMPARE_NAMES[3]
                       + f" (edges at {weak:g})")
        if res.n_used[res.condition(strength)] == 0:
            st.warning(f"No attacked image reached {res.target} at strength {strength:g}: nothing to highlight.")
        st.plotly_chart(graph_figure(res, weak if comparing else strength, highlight, visible, pinned, compare),
                        key="graph", on_select=pin_clicked, selection_mode="points", width="stretch",
                        config={"displayModeBar": False})
        arrays = res.artifact.arrays
        labels = [f"{res.layers[li]}-{c}" for li, c in zip(arrays["node_layer"], arrays["node_channel"])]
        st.selectbox("Channel", range(len(labels)), index=None, format_func=labels.__getitem__, key="channel",
                     placeholder="click a channel in the graph, or pick it here", on_change=pin_chosen,
                     help="the channel whose detail shows on the right; clicked or picked channels are pinned "
                          "(black ring)")
        if pinned:
            st.button("Clear pinned channels", key="clear_pins", on_click=clear_pins)
        if "gradient" in res.info["edge_kinds"]:
            st.caption("Dotted edges: gradient × activation (the module graph there is not covered by Bluff's "
                       "weight rules); solid: Bluff's weight influence.")
    with detail:
        st.plotly_chart(success_figure(res), key="success", config={"displayModeBar": False})
        node = pinned[-1] if pinned else None
        if node is None:
            st.info("Click a channel in the graph to see its activation against strength and its top dataset patches.")
            return
        layer, channel = res.layers[int(arrays["node_layer"][node])], int(arrays["node_channel"][node])
        st.markdown(f"**{layer}-{channel}** · column *{COLUMNS[int(arrays['node_column'][node])]}*")
        st.plotly_chart(activation_figure(res, layer, channel, strength), key="curve",
                        config={"displayModeBar": False})
        crops = patch_crops(res, loupe.dataset(res.dataset_id), node)
        if crops:
            st.image([c for _, c in crops], caption=[t for t, _ in crops], width=96)


st.title("Pathways")
follow_run_link("pathways")
if "run" in st.query_params:
    result = open_linked(stored, "Pathways result")
    show(result)
    if st.button("New request", key="new_request"):
        del st.query_params["run"]
        st.rerun()
else:
    st.markdown("Bluff activation pathways (Das, Park et al., VIS 2020): which channels and connections carry "
                "the evidence for the original class, for the target class, and for a targeted attack that "
                "turns one into the other, across the model's layers.")
    request_form()
