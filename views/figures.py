"""Plotly figures for attribution results. Display normalisation lives here, never in explainers:
signed maps use a diverging scale centred on zero (scaled by the largest |value|), so red means
evidence for the target and blue evidence against it."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

DIVERGING = "RdBu_r"


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A C×H×W float image in [0, 1] (C = 1 or 3) as H×W×3 uint8 for display."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = np.transpose(img, (1, 2, 0))
    else:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def symmetric_limit(values: np.ndarray) -> float:
    """The colour-scale half-range for a signed map: max |value| (1.0 for an all-zero map)."""
    peak = float(np.nanmax(np.abs(values))) if np.size(values) else 0.0
    return peak if peak > 0 else 1.0


def attribution_overlay(image: np.ndarray, attribution: np.ndarray, opacity: float = 0.6,
                        title: str = "") -> go.Figure:
    """The image with the signed attribution map drawn over it on a diverging scale."""
    limit = symmetric_limit(attribution)
    fig = go.Figure()
    fig.add_trace(go.Image(z=to_rgb_uint8(image), hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=np.asarray(attribution, dtype=np.float32), colorscale=DIVERGING, zmin=-limit, zmax=limit, zmid=0,
        opacity=opacity, colorbar={"thickness": 10, "len": 0.8},
        hovertemplate="row %{y}, col %{x}<br>attribution %{z:.3g}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor="x")
    fig.update_xaxes(visible=False)
    fig.update_layout(title=title, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0}, height=280)
    return fig


def feature_bars(attribution: np.ndarray, feature_names: Sequence[str], top: int = 15,
                 title: str = "") -> go.Figure:
    """The ``top`` features by |attribution| as a horizontal bar chart (signed colours)."""
    values = np.asarray(attribution, dtype=np.float32)
    order = np.argsort(-np.abs(values), kind="stable")[:top][::-1]
    fig = go.Figure(go.Bar(
        x=values[order], y=[feature_names[i] for i in order], orientation="h",
        marker={"color": values[order], "colorscale": DIVERGING, "cmid": 0},
    ))
    fig.update_layout(title=title, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
                      height=max(240, 22 * len(order)))
    return fig
