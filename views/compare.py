"""Tables for the Compare page: N explainers × M models over one dataset slice.

* :func:`metric_table`: each metric's mean ± 95% interval per (model, explainer);
* :func:`agreement_matrix`: the mean per-sample agreement of every explainer pair on one model
  (Spearman rank correlation of the maps, or IoU of their top 10% units: explainers/evaluation.py);
* :func:`disagreement`: samples ordered by how little the explainers agree on them.
Pure functions of :class:`~explainers.base.Result` objects; tested without Streamlit."""
from __future__ import annotations

from itertools import combinations
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from explainers.base import Result
from explainers.evaluation import spearman, topk_iou
from views.runs import metric_summary

AGREEMENT: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Spearman": spearman,
    "top-10% IoU": topk_iou,
}
"""Agreement measures between two batches of maps (one value per sample)."""

Results = Mapping[tuple[str, str], Result]
"""(model id, explainer id) -> result over the same samples."""


def metric_table(results: Results) -> pd.DataFrame:
    """One row per (model, explainer): "mean ± half-width" of each metric over the samples."""
    rows = []
    for (model, explainer), res in results.items():
        summary = metric_summary(res)
        row = {"model": model, "explainer": explainer, "samples": len(res.sample_ids)}
        row.update({metric: f"{s['mean']:.3f} ± {s['± 95% CI']:.3f}" for metric, s in summary.iterrows()
                    if metric != "confidence" and s["n"] > 0})
        rows.append(row)
    return pd.DataFrame(rows)


def _by_model(results: Results, model: str) -> dict[str, Result]:
    return {e: r for (m, e), r in results.items() if m == model}


def agreement_matrix(results: Results, model: str, measure: str = "Spearman") -> pd.DataFrame:
    """Explainer × explainer mean agreement on ``model`` (1 on the diagonal; NaN-safe means)."""
    chosen = _by_model(results, model)
    names = list(chosen)
    table = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in combinations(names, 2):
        value = float(np.nanmean(AGREEMENT[measure](chosen[a].attributions, chosen[b].attributions)))
        table.loc[a, b] = table.loc[b, a] = value
    return table.round(3)


def disagreement(results: Results, model: str, measure: str = "Spearman") -> pd.DataFrame:
    """Per sample of ``model``'s results: the mean pairwise agreement between explainers (lowest,
    i.e. most disputed, first) and the lowest pair."""
    chosen = _by_model(results, model)
    names = list(chosen)
    if len(names) < 2:
        raise ValueError("agreement needs at least two explainers")
    first = chosen[names[0]]
    pairs = {f"{a} vs {b}": AGREEMENT[measure](chosen[a].attributions, chosen[b].attributions)
             for a, b in combinations(names, 2)}
    values = np.vstack(list(pairs.values()))
    frame = pd.DataFrame({
        "sample": first.sample_ids,
        "label": first.labels,
        "prediction": first.predictions,
        f"mean {measure}": np.nanmean(values, axis=0).round(3),
        "least agreeing pair": [list(pairs)[j] for j in np.nanargmin(np.where(np.isnan(values), np.inf, values), axis=0)],
    })
    return frame.sort_values(f"mean {measure}", kind="stable").reset_index(drop=True)
