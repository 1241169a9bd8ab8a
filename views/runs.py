"""Tables for a stored run, shared by the pages that show one: its metrics per sample (confidence is
a property of the sample and stays out), their means with 95% intervals, and one sample's metrics
as a small table whose names explain themselves on hover (``loupe.metric_info``)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

import loupe
from explainers.base import Result
from loupe import PAGE_OF_KIND


def sample_metrics(res: Result, i: int) -> dict[str, float | bool | None]:
    """The scalar metrics of sample ``i`` in display order (arrays in the metrics, if any, are left out)."""
    metrics = res.metrics[i] if res.metrics else {}
    return {k: metrics[k] for k in loupe.metric_order(list(metrics)) if not isinstance(metrics[k], np.ndarray)}


def metric_values(res: Result) -> pd.DataFrame:
    """One row per sample (indexed by sample id), one float column per scalar metric (a hit is 1.0,
    a miss 0.0, an undefined value NaN)."""
    rows = [sample_metrics(res, i) for i in range(len(res.sample_ids))]
    frame = pd.DataFrame(rows, index=pd.Index([int(s) for s in res.sample_ids], name="sample"))
    return frame.apply(pd.to_numeric, errors="coerce").astype(float)


def metric_summary(res: Result) -> pd.DataFrame:
    """Per metric: mean, the half-width of its 95% confidence interval (Student's t with n − 1
    degrees of freedom, so small slices get honest, wider intervals; 0 for a single sample) and n."""
    from scipy.stats import t

    values = metric_values(res)
    n = values.notna().sum()
    factor = np.array([t.ppf(0.975, k - 1) if k > 1 else 0.0 for k in n])
    half = (factor * values.std(ddof=1).fillna(0.0) / np.sqrt(n.clip(lower=1))).fillna(0.0)
    return pd.DataFrame({"mean": values.mean(), "ci95": half, "n": n})


def metrics_html(res: Result, i: int) -> str:
    """Sample ``i``'s metrics as a two-column HTML table: each name with its direction (↑/↓) and its
    meaning as a hover title, each value in the metric's own format."""
    rows = []
    for name, value in sample_metrics(res, i).items():
        info = loupe.metric_info(name)
        rows.append(f'<tr><td title="{html.escape(info.tooltip)}" style="border-bottom:1px dotted #999;'
                    f'cursor:help;padding:1px 12px 1px 0">{html.escape(info.title)}</td>'
                    f'<td style="text-align:right;font-variant-numeric:tabular-nums;padding:1px 0">'
                    f"{html.escape(info.format(value))}</td></tr>")
    return f'<table style="border:none;font-size:0.85rem;border-collapse:collapse">{"".join(rows)}</table>'


def metric_line(metrics: dict, names: list[str]) -> str:
    """The named metrics of one sample as a short line of HTML (small, grey), each name with its
    direction and its meaning as a hover title; for captions under small maps."""
    parts = []
    for name in names:
        if name in metrics:
            info = loupe.metric_info(name)
            title = f'<span title="{html.escape(info.tooltip)}" style="cursor:help">{html.escape(info.title)}</span>'
            parts.append(f"{title} {html.escape(info.format(metrics[name]))}")
    return f'<div style="font-size:0.8rem;color:#666;line-height:1.4">{"<br>".join(parts)}</div>'


RUN_PAGES = {kind: f"pages/{path}.py" for kind, path in PAGE_OF_KIND.items()}
"""Result kind -> the page file that opens a stored result of that kind from its ``?run=<key>`` link
(app.py serves each page file at the URL path of the same name)."""


def run_page(key: str) -> tuple[str, str | None]:
    """(kind, page) of the stored result ``key``; the page is None when no page shows that kind.
    A malformed or unknown key raises InvalidKey / RunNotFound (user errors)."""
    kind = loupe.kind_of(key)
    return kind, RUN_PAGES.get(kind)
