"""Plotly figures for attribution results. Display normalisation lives here, never in explainers:
signed maps use a diverging scale centred on zero (scaled by the largest |value|), so red means
evidence for the target and blue evidence against it; maps without negative values (OSA-DAS,
absolute saliency) use a sequential scale from zero."""
from __future__ import annotations

import functools
import io
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

DIVERGING = "RdBu_r"
SEQUENTIAL = "Reds"


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


def colour_scale(attribution: np.ndarray) -> tuple[str, float, float]:
    """(scale, zmin, zmax): diverging and symmetric about zero when the map has negative values,
    else sequential from zero to its maximum."""
    limit = symmetric_limit(attribution)
    if np.size(attribution) and float(np.nanmin(attribution)) < 0:
        return DIVERGING, -limit, limit
    return SEQUENTIAL, 0.0, limit


def attribution_overlay(image: np.ndarray, attribution: np.ndarray, opacity: float = 0.6,
                        title: str = "") -> go.Figure:
    """The image with the attribution map drawn over it (scale from :func:`colour_scale`)."""
    scale, low, high = colour_scale(attribution)
    fig = go.Figure()
    fig.add_trace(go.Image(z=to_rgb_uint8(image), hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=np.asarray(attribution, dtype=np.float32), colorscale=scale, zmin=low, zmax=high,
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


def top_features(attribution: np.ndarray, feature_names: Sequence[str], k: int = 5) -> list[str]:
    """The ``k`` features with the largest |attribution|, each with its sign (a tabular map in words)."""
    values = np.asarray(attribution, dtype=np.float64)
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    names = [feature_names[j] if j < len(feature_names) else f"feature {j}" for j in order]
    return [f"{name} {'+' if values[j] >= 0 else '−'}" for name, j in zip(names, order)]


@functools.lru_cache(maxsize=8)
def _lut(scale: str) -> np.ndarray:
    """The Plotly colour scale ``scale`` sampled at 256 levels, as a read-only 256×3 float array
    (cached: sampling it in Python costs milliseconds per map)."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    lut = np.array([unlabel_rgb(c) for c in sample_colorscale(scale, np.linspace(0, 1, 256))], dtype=np.float32)
    lut.flags.writeable = False
    return lut


def _overlay_pixels(image: np.ndarray, attribution: np.ndarray, opacity: float) -> np.ndarray:
    """H×W×3 uint8: the attribution coloured by :func:`colour_scale` and blended over the image."""
    scale, low, high = colour_scale(attribution)
    values = np.nan_to_num(np.asarray(attribution, dtype=np.float32))
    index = np.clip(np.round((values - low) / (high - low) * 255), 0, 255).astype(np.int64)
    blended = (1 - opacity) * to_rgb_uint8(image).astype(np.float32) + opacity * _lut(scale)[index]
    return np.clip(blended, 0, 255).round().astype(np.uint8)


def _png(pixels: Any) -> bytes:
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(image: np.ndarray, attribution: np.ndarray, opacity: float = 0.6) -> bytes:
    """The overlay of :func:`attribution_overlay` as PNG bytes at the input's resolution (same scale
    and opacity), drawn with Pillow so no browser or image-export engine is needed."""
    from PIL import Image

    return _png(Image.fromarray(_overlay_pixels(image, attribution, opacity)))


def overlay_card_png(image: np.ndarray, attribution: np.ndarray, opacity: float = 0.6, size: int = 256,
                     colour_bar: bool = True) -> bytes:
    """The overlay enlarged to ``size`` pixels (nearest neighbour: each input pixel stays a sharp
    block) with a colour bar labelled by the scale's limits (unless ``colour_bar`` is False, for
    grids of small maps), as PNG bytes. The page shows this by default: an image costs the browser
    nothing to draw, while the interactive Plotly figure (:func:`attribution_overlay`) needs Plotly's
    multi-megabyte script first."""
    from PIL import Image, ImageDraw

    pixels = Image.fromarray(_overlay_pixels(image, attribution, opacity))
    scale_factor = max(1, round(size / max(pixels.size)))
    pixels = pixels.resize((pixels.width * scale_factor, pixels.height * scale_factor), Image.Resampling.NEAREST)
    if not colour_bar:
        return _png(pixels)
    scale, low, high = colour_scale(attribution)
    bar_height = pixels.height - 16
    ramp = _lut(scale)[np.linspace(255, 0, bar_height).round().astype(int)]
    card = Image.new("RGB", (pixels.width + 70, pixels.height), "white")
    card.paste(pixels, (0, 0))
    card.paste(Image.fromarray(np.repeat(ramp[:, None, :], 10, axis=1).round().astype(np.uint8)), (pixels.width + 6, 8))
    draw = ImageDraw.Draw(card)
    for value, y in ((high, 8), ((high + low) / 2, 8 + bar_height // 2), (low, 8 + bar_height - 1)):
        draw.line([(pixels.width + 16, y), (pixels.width + 19, y)], fill="black")
        draw.text((pixels.width + 21, y - 5), f"{value + 0.0:.2g}", fill="black")  # + 0.0: no "-0"
    return _png(card)


PAIR = ("#1f77b4", "#ff7f0e")
"""Two colours that stay apart for colour-blind readers and in print (Plotly's blue and orange)."""


def _small(fig: go.Figure, title: str, height: int = 240) -> go.Figure:
    """A small figure: the title on top, the legend (if any) under the x axis, so the two never
    overlap however narrow the column."""
    fig.update_layout(title={"text": title, "x": 0, "xanchor": "left", "y": 0.98, "yanchor": "top"}, height=height,
                      margin={"l": 0, "r": 0, "t": 36, "b": 0},
                      legend={"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"})
    return fig


def curves_figure(fractions: np.ndarray, deletion: np.ndarray, insertion: np.ndarray, title: str = "") -> go.Figure:
    """Deletion and insertion curves of one sample: the normalised target logit against the
    fraction of units moved (specs/samp.md §3); the AUCs are their means. Deletion (↓ better) is a
    dashed blue line, insertion (↑ better) a solid orange one."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=fractions, y=deletion, name=f"deletion ↓ (AUC {np.mean(deletion):.3f})", mode="lines",
                             line={"color": PAIR[0], "dash": "dash", "width": 2}))
    fig.add_trace(go.Scatter(x=fractions, y=insertion, name=f"insertion ↑ (AUC {np.mean(insertion):.3f})",
                             mode="lines", line={"color": PAIR[1], "width": 2}))
    fig.update_xaxes(title="fraction of units moved")
    fig.update_yaxes(title="logit / f(x)")
    return _small(fig, title or "Deletion / insertion", height=300)


def path_logits_figure(paths: dict[str, np.ndarray], title: str = "") -> go.Figure:
    """SAMP's target logit along each manipulation path of one sample (NaN padding dropped)."""
    fig = go.Figure()
    for name, logits in paths.items():
        values = np.asarray(logits, dtype=np.float64)
        values = values[~np.isnan(values)]
        fig.add_trace(go.Scatter(x=np.arange(len(values)), y=values, name=f"{name} path", mode="lines+markers",
                                 marker={"size": 3}, line={"color": PAIR[len(fig.data) % 2]}))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="target logit")
    return _small(fig, title or "SAMP path logits", height=300)


def patch_grid_figure(scores: np.ndarray, evaluated: np.ndarray | None = None, title: str = "") -> go.Figure:
    """OSA-DAS's per-window scores (1 − subspace similarity) on the window grid; windows the
    gradient pre-selection skipped are left empty."""
    z = np.asarray(scores, dtype=np.float64).copy()
    if evaluated is not None:
        z[~np.asarray(evaluated, dtype=bool)] = np.nan
    fig = go.Figure(go.Heatmap(z=z, colorscale=SEQUENTIAL, colorbar={"thickness": 10},
                               hovertemplate="window row %{y}, col %{x}<br>score %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title="window row")
    fig.update_xaxes(title="window col")
    return _small(fig, title or "OSA-DAS window scores", height=260)
