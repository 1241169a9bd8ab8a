"""Tables and figures for the Compare page: N explainers × M models over one dataset slice.

* :func:`metric_frame` / :func:`metric_figure` / :func:`metric_table`: each metric's mean with its
  95% interval per (model, explainer), as long data, as a dot-and-whisker chart (one panel per
  metric, titled with its direction) and as a table of "mean ± half-width" strings;
* :func:`agreement_matrix` / :func:`agreement_figure`: the mean per-sample agreement of every
  explainer pair on one model (``loupe.agreement``: Spearman rank correlation of the maps, or IoU of
  their top 10% units);
* :func:`disagreement` / :func:`disputed_samples`: samples ordered by how little the explainers
  agree on them (per model, and over all models for the map grid).

Pure functions of :class:`~explainers.base.Result` objects; tested without Streamlit."""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import loupe
from explainers.base import Result
from views.runs import metric_summary

Results = Mapping[tuple[str, str], Result]
"""(model id, explainer id) -> result over the same samples."""
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MODEL_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross")


def metric_frame(results: Results) -> pd.DataFrame:
    """Long form: one row per (model, explainer, metric) with mean, ci95 (half-width) and n."""
    rows = []
    for (model, explainer), res in results.items():
        for metric, s in metric_summary(res).iterrows():
            if s["n"] > 0:
                rows.append({"model": model, "explainer": explainer, "metric": metric, "mean": float(s["mean"]),
                             "ci95": float(s["ci95"]), "n": int(s["n"])})
    return pd.DataFrame(rows, columns=["model", "explainer", "metric", "mean", "ci95", "n"])


def metric_table(results: Results) -> pd.DataFrame:
    """One row per (model, explainer): the number of samples and "mean ± half-width" of each metric
    in the metric's own format (columns named by metric id, in first-seen order)."""
    frame = metric_frame(results)
    rows = []
    for (model, explainer), res in results.items():
        row: dict[str, object] = {"model": model, "explainer": explainer, "samples": len(res.sample_ids)}
        mine = frame[(frame["model"] == model) & (frame["explainer"] == explainer)].set_index("metric")
        row.update({m: loupe.metric_info(m).interval(mine.loc[m, "mean"], mine.loc[m, "ci95"])
                    for m in loupe.metric_order(list(mine.index))})
        rows.append(row)
    return pd.DataFrame(rows)


def metric_figure(results: Results, columns: int = 4) -> go.Figure:
    """Dot-and-whisker panels, one per metric (title with ↑/↓): each (model, explainer) a dot at its
    mean with its 95% interval, colour = explainer, symbol = model; the hover gives the numbers and
    the metric's meaning."""
    frame = metric_frame(results)
    metrics = loupe.metric_order(list(dict.fromkeys(frame["metric"])))
    rows = max(1, -(-len(metrics) // columns))
    infos = {m: loupe.metric_info(m) for m in metrics}
    panel = 40 + 26 * len(results)
    height = 40 + rows * panel + (rows - 1) * 70
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[infos[m].title for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.03, vertical_spacing=70 / height)
    pairs = list(results)
    explainers = list(dict.fromkeys(e for _, e in pairs))
    models = list(dict.fromkeys(m for m, _ in pairs))
    labels = [f"{e} · {m}" if len(models) > 1 else e for m, e in pairs]
    for k, metric in enumerate(metrics):
        mine = frame[frame["metric"] == metric].set_index(["model", "explainer"])
        info = infos[metric]
        for (model, explainer), label in zip(pairs, labels):
            if (model, explainer) not in mine.index:
                continue
            s = mine.loc[(model, explainer)]
            fig.add_trace(go.Scatter(
                x=[s["mean"]], y=[label], mode="markers", name=label, legendgroup=label, showlegend=False,
                error_x={"type": "data", "array": [s["ci95"]], "thickness": 1.5, "width": 4},
                marker={"size": 10, "color": PALETTE[explainers.index(explainer) % len(PALETTE)],
                        "symbol": MODEL_SYMBOLS[models.index(model) % len(MODEL_SYMBOLS)]},
                hovertemplate=f"<b>{label}</b><br>{info.title}: {info.interval(s['mean'], s['ci95'])} "
                              f"(95% CI, n = {int(s['n'])})<br>{_wrap(info.tooltip)}<extra></extra>",
            ), row=k // columns + 1, col=k % columns + 1)
        fig.update_xaxes(tickformat=".0%" if info.spec.endswith("%") else None, row=k // columns + 1,
                         col=k % columns + 1)
    fig.update_yaxes(autorange="reversed", showgrid=True, gridcolor="#eee")
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False, nticks=5)
    fig.update_annotations(font_size=13)
    fig.update_layout(height=height, margin={"l": 0, "r": 10, "t": 30, "b": 10}, plot_bgcolor="white")
    return fig


def _wrap(text: str, width: int = 60) -> str:
    """``text`` broken into lines of about ``width`` characters for a Plotly hover."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def _by_model(results: Results, model: str) -> dict[str, Result]:
    return {e: r for (m, e), r in results.items() if m == model}


def agreement_matrix(results: Results, model: str, measure: str = "spearman") -> pd.DataFrame:
    """Explainer × explainer mean agreement on ``model`` (1 on the diagonal; NaN-safe means)."""
    chosen = _by_model(results, model)
    names = list(chosen)
    table = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in combinations(names, 2):
        value = float(np.nanmean(loupe.agreement(chosen[a].attributions, chosen[b].attributions, measure)))
        table.loc[a, b] = table.loc[b, a] = value
    return table


def agreement_figure(matrix: pd.DataFrame, measure: str) -> go.Figure:
    """The agreement matrix as an annotated heatmap (diverging for Spearman's −1…1, sequential for
    IoU's 0…1)."""
    info = loupe.metric_info(measure)
    signed = measure == "spearman"
    fig = go.Figure(go.Heatmap(
        z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index), zmin=-1 if signed else 0, zmax=1,
        colorscale="RdBu" if signed else "Blues", reversescale=not signed, texttemplate="%{z:.2f}",
        colorbar={"title": info.title, "thickness": 10},
        hovertemplate=f"%{{y}} vs %{{x}}: {info.label} %{{z:.3f}}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 45 * len(matrix), margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


def _pair_agreement(chosen: Mapping[str, Result], measure: str) -> dict[str, np.ndarray]:
    return {f"{a} vs {b}": loupe.agreement(chosen[a].attributions, chosen[b].attributions, measure)
            for a, b in combinations(list(chosen), 2)}


def disagreement(results: Results, model: str, classes: Sequence[str], measure: str = "spearman") -> pd.DataFrame:
    """Per sample of ``model``'s results: label and prediction (class names), the mean pairwise
    agreement between explainers (lowest, i.e. most disputed, first) and the least agreeing pair."""
    chosen = _by_model(results, model)
    if len(chosen) < 2:
        raise ValueError("agreement needs at least two explainers")
    first = next(iter(chosen.values()))
    pairs = _pair_agreement(chosen, measure)
    values = np.vstack(list(pairs.values()))
    label = f"mean {loupe.metric_info(measure).label}"
    frame = pd.DataFrame({
        "sample": [int(s) for s in first.sample_ids],
        "label": [classes[int(i)] for i in first.labels],
        "prediction": [classes[int(i)] for i in first.predictions],
        label: np.nanmean(values, axis=0),
        "least agreeing pair": [list(pairs)[j]
                                for j in np.nanargmin(np.where(np.isnan(values), np.inf, values), axis=0)],
    })
    return frame.sort_values(label, kind="stable").reset_index(drop=True)


def disputed_samples(results: Results, measure: str = "spearman") -> list[int]:
    """Every sample id, the most disputed first: ordered by the mean, over the models with at least
    two explainers, of the mean pairwise agreement on that sample (models with one explainer do not
    order anything)."""
    first = next(iter(results.values()))
    ids = [int(s) for s in first.sample_ids]
    per_model = []
    for model in dict.fromkeys(m for m, _ in results):
        chosen = _by_model(results, model)
        if len(chosen) > 1:
            per_model.append(np.nanmean(np.vstack(list(_pair_agreement(chosen, measure).values())), axis=0))
    if not per_model:
        return ids
    score = np.nanmean(np.vstack(per_model), axis=0)
    return [ids[j] for j in np.argsort(np.where(np.isnan(score), np.inf, score), kind="stable")]
