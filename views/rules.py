"""Figures and tables for surrogate-rule results (``explainers.surrogate_rules.RulesResult``): the
fidelity-versus-k curve, the surrogate tree, the rules table and a sample's local explanation.
Pure functions of the stored result, tested without Streamlit."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METHOD_LABELS = {"integrated_gradients": "IG", "shap_gradient": "SHAP (grad.)", "permutation": "permutation"}
"""Short column labels for the probing methods' importance scores."""
CLASS_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d")


def fidelity_curve_figure(curve: dict[int, float], chosen_k: int) -> go.Figure:
    """Validation fidelity against k, the chosen k marked."""
    ks, fids = list(curve), list(curve.values())
    fig = go.Figure(go.Scatter(x=ks, y=fids, mode="lines+markers", name="fidelity",
                               hovertemplate="k = %{x}<br>fidelity %{y:.3f}<extra></extra>"))
    if chosen_k in curve:
        fig.add_trace(go.Scatter(x=[chosen_k], y=[curve[chosen_k]], mode="markers", name=f"chosen k = {chosen_k}",
                                 marker={"size": 14, "symbol": "star", "color": "#e45756"}))
    fig.update_layout(xaxis_title="k (features the surrogate uses)", yaxis_title="fidelity ↑ (validation rows)",
                      height=300, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"orientation": "h", "y": -0.3})
    fig.update_xaxes(type="log" if max(ks) / max(min(ks), 1) > 20 else "linear")
    fig.update_yaxes(range=[max(0.0, min(fids) - 0.05), 1.005])
    return fig


def rules_frame(rules: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rules as a sortable table, the rule text right after its id (coverage and precision as
    numbers, so sorting works)."""
    columns = ["id", "rule", "class", "coverage", "precision", "accuracy", "support", "length"]
    return pd.DataFrame(list(rules), columns=columns)


def rules_row_height(rules: pd.DataFrame, chars_per_line: int = 42, line_px: int = 21) -> int:
    """A row height that holds the longest rule wrapped at ``chars_per_line`` characters. Streamlit's
    table wraps text only in rows taller than 64 px, so the height is at least 66."""
    longest = int(rules["rule"].str.len().max()) if len(rules) else 0
    return max(66, 12 + line_px * -(-longest // chars_per_line))


def importance_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Combined rank and each method's score for the listed features."""
    return pd.DataFrame(list(rows))


def _layout(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node positions: leaves spaced evenly left to right in tree order, a split centred over its
    children, depth downwards."""
    n = len(left)
    x, y = np.zeros(n), np.zeros(n)
    next_leaf = [0.0]

    def place(node: int, depth: int) -> float:
        y[node] = -depth
        if left[node] < 0:
            x[node] = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            x[node] = (place(int(left[node]), depth + 1) + place(int(right[node]), depth + 1)) / 2
        return x[node]

    place(0, 0)
    return x, y


def tree_figure(tree: dict[str, np.ndarray], feature_names: Sequence[str], classes: Sequence[str]) -> go.Figure:
    """The surrogate tree: splits as "feature <= threshold" (left branch = yes), leaves as their
    rule id and class, coloured by majority class, sized by training samples."""
    left, right = tree["left"], tree["right"]
    x, y = _layout(left, right)
    ex, ey = [], []
    for node in np.flatnonzero(left >= 0).tolist():
        for child in (left[node], right[node]):
            ex += [x[node], x[child], None]
            ey += [y[node], y[child], None]
    fig = go.Figure(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#999", "width": 1}, hoverinfo="skip",
                               showlegend=False))
    labels, hovers = [], []
    for node in range(len(left)):
        cls = classes[int(tree["class"][node])]
        if left[node] < 0:
            labels.append(f"R{int(tree['rule'][node]) + 1}: {cls}")
        else:
            labels.append(f"{feature_names[int(tree['feature'][node])]} <= {tree['threshold'][node]:.4g}")
        hovers.append(f"{labels[-1]}<br>{int(tree['samples'][node])} training rows, majority {cls}")
    size = 10 + 20 * np.sqrt(tree["samples"] / max(int(tree["samples"][0]), 1))
    for k, cls in enumerate(classes):
        mine = np.flatnonzero(tree["class"] == k)
        if not len(mine):
            continue
        fig.add_trace(go.Scatter(
            x=x[mine], y=y[mine], mode="markers+text", name=cls, text=[labels[i] for i in mine],
            textposition=["bottom center" if left[i] < 0 else "top center" for i in mine],
            hovertext=[hovers[i] for i in mine], hoverinfo="text", textfont={"size": 10},
            marker={"size": size[mine], "color": CLASS_COLOURS[k % len(CLASS_COLOURS)], "line": {"width": 1}},
        ))
    depth = int(-y.min()) if len(y) else 0
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, range=[-depth - 0.8, 0.6])
    fig.update_layout(height=140 + 90 * depth, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                      legend={"orientation": "h", "title": "majority class"})
    return fig


def conditions_frame(local: dict[str, Any]) -> pd.DataFrame:
    """A sample's firing rule, one condition per row, with the sample's value and whether it holds."""
    return pd.DataFrame([{"holds": "✓" if c["holds"] else "✗", "condition": c["condition"], "value": c["value"]}
                         for c in local["conditions"]], columns=["holds", "condition", "value"])


def changes_frame(local: dict[str, Any]) -> pd.DataFrame:
    """The counterfactual's changes: feature, current value, new value."""
    changes = (local.get("counterfactual") or {}).get("changes", [])
    return pd.DataFrame([{"feature": c["feature"], "from": c["from"], "to": c["to"]} for c in changes],
                        columns=["feature", "from", "to"])
