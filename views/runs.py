"""Tables and figures for a stored run, shared by the pages that show one."""
from __future__ import annotations

import numpy as np
import pandas as pd

from explainers.base import Result
from loupe import PAGE_OF_KIND


def metrics_table(res: Result) -> pd.DataFrame:
    """One row per sample: ids, label/target/prediction, confidence and every scalar metric."""
    rows = []
    for i, sid in enumerate(res.sample_ids):
        metrics = res.metrics[i] if res.metrics else {}
        rows.append({
            "sample": int(sid), "label": int(res.labels[i]), "target": int(res.targets[i]),
            "prediction": int(res.predictions[i]), "confidence": round(float(res.confidences[i]), 4),
            **{k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)},
        })
    return pd.DataFrame(rows)


def metric_summary(res: Result) -> pd.DataFrame:
    """Mean and a 95% normal-approximation interval of each numeric metric over the run's samples."""
    table = metrics_table(res).drop(columns=["sample", "label", "target", "prediction"])
    numeric = table.apply(pd.to_numeric, errors="coerce").astype(float)
    n = numeric.notna().sum()
    half = 1.96 * numeric.std(ddof=1) / np.sqrt(n.clip(lower=1))
    return pd.DataFrame({"mean": numeric.mean(), "± 95% CI": half.fillna(0.0), "n": n}).round(4)


RUN_PAGES = {kind: f"pages/{path}.py" for kind, path in PAGE_OF_KIND.items()}
"""Result kind -> the page file that opens a stored result of that kind from its ``?run=<key>`` link
(app.py serves each page file at the URL path of the same name)."""


def run_page(key: str) -> tuple[str, str | None]:
    """(kind, page) of the stored result ``key``; the page is None when no page shows that kind.
    A malformed or unknown key raises InvalidKey / RunNotFound (user errors)."""
    import loupe

    kind = loupe.kind_of(key)
    return kind, RUN_PAGES.get(kind)
