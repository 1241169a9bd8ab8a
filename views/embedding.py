"""The Embeddings page's figure: UMAP points of a stored ``embedding`` artifact coloured by label,
prediction, correctness, confidence or a metric, and the sample ids of a box/lasso selection. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

import loupe


CATEGORY_COLOURS = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6",
                    "#9d755d", "#bab0ac")
"""Ten categorical colours that stay distinct (Tableau 10): the default palette repeats hues by 10 classes."""


@dataclass(frozen=True)
class Colouring:
    """Values per point; ``categorical`` ones get a legend, numeric ones a colour bar titled
    ``title`` (a metric's title carries its direction, e.g. "deletion AUC ↓")."""

    values: np.ndarray
    categorical: bool
    title: str


def colourings(arrays: Mapping[str, np.ndarray], classes: Sequence[str]) -> dict[str, Colouring]:
    """Colour name -> :class:`Colouring`: label, prediction, correct, confidence and every stored
    ``metric_<name>``."""
    labels, predictions = np.asarray(arrays["labels"]), np.asarray(arrays["predictions"])
    options = {
        "label": Colouring(np.array([classes[i] if i >= 0 else "not a model class" for i in labels]), True, "label"),
        "prediction": Colouring(np.array([classes[i] for i in predictions]), True, "prediction"),
        "correct": Colouring(np.where(labels < 0, "unknown", np.where(labels == predictions, "correct", "wrong")), True,
                             "correct"),
        "confidence": Colouring(np.asarray(arrays["confidences"], dtype=np.float64), False, "confidence"),
    }
    for name, values in arrays.items():
        if name.startswith("metric_"):
            options[name[len("metric_"):]] = Colouring(np.asarray(values, dtype=np.float64), False,
                                                       loupe.metric_info(name[len("metric_"):]).title)
    return options


def embedding_figure(points: np.ndarray, sample_ids: Sequence[int], colour: Colouring) -> go.Figure:
    """A scatter of the embedded samples; categorical colours get one trace per category (so the
    legend names them), numeric ones a colour bar. ``customdata`` carries each point's sample id.
    The top margin leaves Plotly's toolbar (with the box and lasso tools) its own strip, above the
    legend."""
    ids = np.asarray(sample_ids)
    fig = go.Figure()
    hover = "sample %{customdata}<extra>%{text}</extra>"
    if colour.categorical:
        for k, category in enumerate(sorted(set(colour.values.tolist()))):
            at = colour.values == category
            fig.add_trace(go.Scatter(x=points[at, 0], y=points[at, 1], mode="markers", name=str(category),
                                     customdata=ids[at], text=[str(category)] * int(at.sum()),
                                     marker={"size": 8, "color": CATEGORY_COLOURS[k % len(CATEGORY_COLOURS)]},
                                     hovertemplate=hover))
    else:
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=colour.title,
                                 customdata=ids, text=[f"{colour.title} {v:.3g}" for v in colour.values],
                                 marker={"size": 8, "color": colour.values, "colorscale": "Viridis", "showscale": True,
                                         "colorbar": {"title": colour.title, "thickness": 12}},
                                 hovertemplate=hover))
    fig.update_layout(dragmode="lasso", height=520, margin={"l": 0, "r": 0, "t": 40, "b": 0},
                      legend={"title": colour.title}, plot_bgcolor="white")
    fig.update_xaxes(showticklabels=False, title="UMAP 1", showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, title="UMAP 2", showgrid=False, zeroline=False)
    return fig


def selected_samples(points: Sequence[Mapping[str, Any]]) -> list[int]:
    """Sample ids of the selected points (Streamlit's ``selection.points``, each with its
    ``customdata``), in selection order without repeats."""
    ids = []
    for point in points:
        value = point.get("customdata")
        value = value[0] if isinstance(value, (list, tuple)) else value
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


def same_request(meta: Mapping[str, Any], model: str, dataset: str, params: Mapping[str, Any]) -> bool:
    """Whether a stored embedding's ``meta`` is the request of these widget values (its stored
    params hold every parameter, so a changed value shows)."""
    stored = meta["params"]
    return meta["model_id"] == model and meta["dataset_id"] == dataset and all(
        stored.get(name) == value for name, value in params.items())
