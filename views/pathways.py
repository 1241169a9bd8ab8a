"""Plotly figures for Bluff pathways (spec bluff.md §1, §3.7): the layered graph with its four
coloured columns and influence-width edges, a channel's activation against attack strength, and its
top dataset patches. Everything reads a stored :class:`~explainers.pathways.PathwaysResult`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from explainers.results.pathways import COLUMNS, Highlight, PathwaysResult
from views.figures import to_rgb_uint8

COLUMN_COLOURS = {"original": "#2ca02c", "both": "#ff7f0e", "target": "#1f77b4", "attack": "#d62728"}
COLUMN_TITLES = {"original": "original only", "both": "both", "target": "target only", "attack": "attack only"}
COMPARE_SYMBOLS = {0: "circle", 1: "triangle-down", 2: "triangle-up", 3: "star"}
COMPARE_NAMES = {1: "weaker only", 2: "stronger only", 3: "weaker + stronger"}
WIDTH_BUCKETS = 5
MAX_WIDTH = 6.0
FADED = 0.15
"""Fill alpha of the nodes a highlight leaves out."""


def _rgba(hex_colour: str, alpha: float) -> str:
    """``#rrggbb`` with an alpha, as Plotly's ``rgba(r,g,b,a)``."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:g})"


def node_positions(res: PathwaysResult, visible: np.ndarray) -> np.ndarray:
    """x, y of every node: one row per layer (output on top), four column bands as wide as their
    fullest layer among the visible nodes (so the filtered views re-lay out compactly)."""
    layer, column = res.artifact.arrays["node_layer"], res.artifact.arrays["node_column"]
    widths = [max([int(np.sum(visible & (layer == li) & (column == c))) for li in range(len(res.layers))] + [1])
              for c in range(len(COLUMNS))]
    starts = np.concatenate([[0], np.cumsum(np.asarray(widths) + 1.5)])
    xy = np.zeros((len(layer), 2))
    for li in range(len(res.layers)):
        for c in range(len(COLUMNS)):
            members = np.flatnonzero(visible & (layer == li) & (column == c))
            xy[members, 0] = starts[c] + np.arange(len(members)) + (widths[c] - len(members)) / 2
            xy[members, 1] = li
    return xy


def _edge_traces(res: PathwaysResult, xy: np.ndarray, visible: np.ndarray, cond: int, shown: np.ndarray
                 ) -> list[go.Scatter]:
    """Edges with positive influence between visible nodes, in width buckets; widths scale per layer
    pair over all strengths (spec §6.14), so edges grow and shrink as the slider moves."""
    arrays = res.artifact.arrays
    src, dst, transition = arrays["edge_src"], arrays["edge_dst"], arrays["edge_transition"]
    influence = arrays["edge_inf"]
    scale = np.ones(len(res.layers))
    for t in range(len(res.layers) - 1):
        peak = np.nanmax(influence[:, transition == t], initial=0.0)
        scale[t] = peak if peak > 0 else 1.0
    width = np.nan_to_num(influence[cond] / scale[transition], nan=0.0)
    keep = visible[src] & visible[dst] & shown & (width > 0)
    bucket = np.minimum((width * WIDTH_BUCKETS).astype(int), WIDTH_BUCKETS - 1)
    traces = []
    for kind in ("weights", "gradient"):
        rule = np.asarray([res.info["edge_kinds"][t] == kind for t in transition], bool)
        for b in range(WIDTH_BUCKETS):
            members = np.flatnonzero(keep & rule & (bucket == b))
            if not len(members):
                continue
            xs = np.stack([xy[src[members], 0], xy[dst[members], 0], np.full(len(members), np.nan)], 1).ravel()
            ys = np.stack([xy[src[members], 1], xy[dst[members], 1], np.full(len(members), np.nan)], 1).ravel()
            traces.append(go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                line={"width": 0.5 + MAX_WIDTH * (b + 1) / WIDTH_BUCKETS, "color": "rgba(90,90,90,0.55)",
                      "dash": "solid" if kind == "weights" else "dot"}))
    return traces


def graph_figure(res: PathwaysResult, strength: float, highlight: Highlight, visible: np.ndarray,
                 pinned: Sequence[int] = (), compare: np.ndarray | None = None) -> go.Figure:
    """The layered pathway graph. Highlighted nodes are filled, the rest fade (fill alpha
    :data:`FADED`); only highlighted edges are drawn, their width the influence at ``strength``.
    Pinned nodes get a black ring drawn at full opacity (the fade is in the fill colour, not the
    marker's opacity, which would fade the ring too). In compare mode (``compare``: 0 none,
    1 weaker, 2 stronger, 3 both) symbols tell the states.

    The layout sets no ``dragmode``/``clickmode`` of its own beyond ``dragmode=False``: Streamlit's
    point selection needs ``clickmode="event+select"``, which it only sets when the figure's
    dragmode is not a box or lasso select (with ``dragmode="select"`` a click reaches Plotly but no
    selection is sent to the server)."""
    arrays = res.artifact.arrays
    cond = res.condition(strength)
    xy = node_positions(res, visible)
    fig = go.Figure(_edge_traces(res, xy, visible, cond, highlight.edges))
    act = res.node_act[cond]
    lit = highlight.nodes if compare is None else compare > 0
    pins = set(pinned)
    for c, name in enumerate(COLUMNS):
        members = np.flatnonzero(visible & (arrays["node_column"] == c))
        if not len(members):
            continue
        symbols = [COMPARE_SYMBOLS[int(compare[k])] for k in members] if compare is not None else "circle"
        fig.add_trace(go.Scatter(  # the legend entry, in the column's full colour and without points
            x=[None], y=[None], mode="markers", name=COLUMN_TITLES[name], hoverinfo="skip",
            marker={"size": 12, "color": COLUMN_COLOURS[name]}))
        fig.add_trace(go.Scatter(
            x=xy[members, 0], y=xy[members, 1], mode="markers", name=COLUMN_TITLES[name], showlegend=False,
            customdata=members,
            text=[f"{res.layers[arrays['node_layer'][k]]}-{arrays['node_channel'][k]}" for k in members],
            hovertemplate=[f"%{{text}}<br>median activation {act[k]:.3g}<extra>{COLUMN_TITLES[name]}</extra>"
                           for k in members],
            marker={"size": 16, "symbol": symbols,
                    "color": [_rgba(COLUMN_COLOURS[name], 1.0 if lit[k] else FADED) for k in members],
                    "line": {"width": [3 if k in pins else 0 for k in members], "color": "black"}},
            # a clicked node is a Plotly selection: keep every node's own fill instead of Plotly's dimming
            selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
        ))
    fig.update_yaxes(tickvals=list(range(len(res.layers))), ticktext=res.layers, zeroline=False, showgrid=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(height=140 + 110 * len(res.layers), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      dragmode=False, plot_bgcolor="white",
                      legend={"orientation": "h", "y": 1.06, "x": 0})
    return fig


def activation_figure(res: PathwaysResult, layer: str, channel: int, strength: float) -> go.Figure:
    """Median activation of one channel against attack strength (0 = benign original), the chosen
    strength as a dot, and the benign original and target medians as reference lines."""
    curve = res.curve(layer, channel)
    fig = go.Figure(go.Scatter(x=curve["strength"], y=curve["median"], mode="lines+markers", name="median",
                               customdata=curve["images"],
                               hovertemplate="strength %{x:g}: %{y:.3g} (%{customdata} images)<extra></extra>"))
    here = curve[np.isclose(curve["strength"], strength)]
    fig.add_trace(go.Scatter(x=here["strength"], y=here["median"], mode="markers", name="current",
                             marker={"size": 13, "color": "#d62728"}))
    fig.add_hline(y=float(curve["median"].iloc[0]), line={"color": COLUMN_COLOURS["original"], "dash": "dash"},
                  annotation_text=f"benign {res.original}")
    fig.add_hline(y=float(curve["target"].iloc[0]), line={"color": COLUMN_COLOURS["target"], "dash": "dash"},
                  annotation_text=f"benign {res.target}")
    fig.update_layout(height=240, showlegend=False, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis_title=f"strength ({res.info['unit']})",
                      yaxis_title="median activation")
    return fig


def patch_crops(res: PathwaysResult, dataset: Any, node: int, scale: int = 4) -> list[tuple[str, np.ndarray]]:
    """The node's top dataset patches as (caption, H×W×3 uint8) crops, enlarged ``scale``× for display."""
    crops = []
    for sid, (y0, x0, y1, x1) in res.patches(node):
        image = to_rgb_uint8(dataset.inputs([sid])[0].numpy())[y0:y1, x0:x1]
        crops.append((f"#{sid} {dataset.classes[int(dataset.labels([sid])[0])]}",
                      np.kron(image, np.ones((scale, scale, 1), np.uint8))))
    return crops


def success_figure(res: PathwaysResult) -> go.Figure:
    """Attack success rate per strength."""
    fig = go.Figure(go.Bar(x=[f"{s:g}" for s in res.strengths], y=res.success_rate, marker_color="#d62728",
                           customdata=res.n_used[2:], hovertemplate="%{x}: %{y:.0%} (%{customdata} images)"
                           "<extra></extra>"))
    fig.update_layout(height=180, margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis={"range": [0, 1]},
                      xaxis_title=f"strength ({res.info['unit']})", yaxis_title="success")
    return fig


def default_strength(res: PathwaysResult) -> float:
    """The weakest strength at which at least half the attacks succeed (else the strongest): the
    first one worth looking at."""
    good = np.flatnonzero(res.success_rate >= 0.5)
    return float(res.strengths[good[0]] if len(good) else res.strengths[-1])


def selected_nodes(event: Any) -> list[int]:
    """Node indices of a Plotly selection event from ``st.plotly_chart(on_select=...)`` (points of
    the node traces carry their index as customdata; edge traces carry none)."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    return [int(p["customdata"]) for p in points if isinstance(p, dict) and p.get("customdata") is not None]


def pin(pinned: Sequence[int], nodes: Sequence[int]) -> list[int]:
    """``pinned`` with ``nodes`` pinned last, in order (a node pinned again moves to the end, so the
    last one is always the channel the user chose most recently)."""
    chosen = [int(n) for n in nodes]
    return [n for n in pinned if n not in chosen] + list(dict.fromkeys(chosen))
