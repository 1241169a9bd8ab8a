"""The Embeddings page's figure: UMAP points of a stored ``embedding`` artifact coloured by label,
prediction, correctness, confidence or a metric, and the sample ids of a box/lasso selection. Pure."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go


def colourings(arrays: Mapping[str, np.ndarray], classes: Sequence[str]) -> dict[str, tuple[np.ndarray, bool]]:
    """Colour name -> (values per point, categorical?): label, prediction, correct, confidence and
    every stored ``metric_<name>``."""
    labels, predictions = np.asarray(arrays["labels"]), np.asarray(arrays["predictions"])
    options = {
        "label": (np.array([classes[i] if i >= 0 else "not a model class" for i in labels]), True),
        "prediction": (np.array([classes[i] for i in predictions]), True),
        "correct": (np.where(labels < 0, "unknown", np.where(labels == predictions, "correct", "wrong")), True),
        "confidence": (np.asarray(arrays["confidences"], dtype=np.float64), False),
    }
    options.update({name[len("metric_"):]: (np.asarray(a, dtype=np.float64), False)
                    for name, a in arrays.items() if name.startswith("metric_")})
    return options


def embedding_figure(points: np.ndarray, sample_ids: Sequence[int], colour: tuple[np.ndarray, bool],
                     colour_name: str) -> go.Figure:
    """A scatter of the embedded samples; categorical colours get one trace per category (so the
    legend names them), numeric ones a colour bar. ``customdata`` carries each point's sample id."""
    values, categorical = colour
    ids = np.asarray(sample_ids)
    fig = go.Figure()
    hover = "sample %{customdata}<extra>%{text}</extra>"
    if categorical:
        for category in sorted(set(values.tolist())):
            at = values == category
            fig.add_trace(go.Scatter(x=points[at, 0], y=points[at, 1], mode="markers", name=str(category),
                                       customdata=ids[at], text=[str(category)] * int(at.sum()),
                                       marker={"size": 7}, hovertemplate=hover))
    else:
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=colour_name,
                                   customdata=ids, text=[f"{colour_name} {v:.3g}" for v in values],
                                   marker={"size": 7, "color": values, "colorscale": "Viridis", "showscale": True,
                                           "colorbar": {"title": colour_name, "thickness": 10}},
                                   hovertemplate=hover))
    fig.update_layout(dragmode="lasso", height=520, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                      legend={"title": colour_name})
    fig.update_xaxes(showticklabels=False, title="UMAP 1")
    fig.update_yaxes(showticklabels=False, title="UMAP 2")
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
