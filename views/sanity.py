"""Figures and tables of a stored sanity check (cascading model randomisation, explainers/sanity.py):
how similar each sample's map stays to the trained model's map as the layers are randomised from the
output down, with the verdict. Pure; reads only the stored result (no recomputation)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explainers.results.sanity import SanityResult

VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700"}
_SAMPLE_LINE = "rgba(90, 90, 90, 0.25)"


def verdict_line(res: SanityResult) -> str:
    """The verdict as one Markdown line: coloured PASS/FAIL, the explainer and the plain sentence."""
    colour = {"pass": "green", "fail": "red"}.get(res.verdict, "orange")
    return f":{colour}[**{res.verdict.upper()}**] **{res.explainer}**. {res.verdict_text}."


def sanity_figure(res: SanityResult, height: int = 320) -> go.Figure:
    """Similarity to the trained model's map per cascade stage (x: the layer randomised last, output
    side first): one faint line per sample, the median Spearman of |map| in bold, the median SSIM
    dashed, the verdict threshold dotted and the judged stage marked."""
    layers = res.layers
    x = list(range(len(layers)))
    fig = go.Figure()
    for b, sample_id in enumerate(res.sample_ids):
        fig.add_trace(go.Scatter(x=x, y=res.spearman[:, b], mode="lines", line={"color": _SAMPLE_LINE, "width": 1},
                                 name=f"#{sample_id}", showlegend=False,
                                 hovertemplate=f"sample #{sample_id}<br>%{{y:.3f}}<extra></extra>"))
    medians = res.medians()
    fig.add_trace(go.Scatter(x=x, y=medians["spearman"], mode="lines+markers", name="Spearman of |map| (median)",
                             line={"color": "#0969da", "width": 3}, hovertemplate="median Spearman %{y:.3f}<extra></extra>"))
    if "ssim" in medians:
        fig.add_trace(go.Scatter(x=x, y=medians["ssim"], mode="lines+markers", name="SSIM (median)",
                                 line={"color": "#8250df", "width": 2, "dash": "dash"},
                                 hovertemplate="median SSIM %{y:.3f}<extra></extra>"))
    fig.add_hline(y=res.threshold, line={"color": "#6e7781", "dash": "dot"},
                  annotation_text=f"fail at ≥ {res.threshold:g}", annotation_position="top right")
    fig.add_vline(x=res.judged_stage, line={"color": VERDICT_COLOURS.get(res.verdict, "#6e7781"), "width": 2},
                  annotation_text=res.verdict.upper(), annotation_position="top left")
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=[f"…{name}" if i else name for i, name in enumerate(layers)],
                     title="randomised from the output down to")
    fig.update_yaxes(range=[min(-0.1, float(np.nanmin(res.spearman)) - 0.05), 1.05],
                     title="similarity to the trained model's map")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title=f"Sanity check of {res.explainer}: cascading model randomisation",
                      legend={"orientation": "h", "yanchor": "bottom", "y": -0.45, "x": 0})
    return fig


def stage_table(res: SanityResult) -> pd.DataFrame:
    """One row per stage: the layers randomised so far and the median similarities."""
    medians = res.medians()
    return pd.DataFrame({
        "stage": range(1, len(res.layers) + 1),
        "randomised down to": res.layers,
        **{f"median {name}": np.round(values, 3) for name, values in medians.items()},
    })
