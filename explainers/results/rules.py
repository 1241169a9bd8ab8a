"""The stored result of surrogate rule extraction (``explainers.surrogate_rules``) read back as rules,
importances and local explanations. Apart from the algorithm, so pages, views and the API use the
result without importing the analysis."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from explainers.base import ArtifactView

def _number(value: float) -> str:
    return f"{value:.4g}"


def condition_text(name: str, lo: float, hi: float) -> str:
    """``lo < name ≤ hi`` with an open side left out."""
    if math.isinf(lo):
        return f"{name} <= {_number(hi)}"
    if math.isinf(hi):
        return f"{name} > {_number(lo)}"
    return f"{_number(lo)} < {name} <= {_number(hi)}"


class RulesResult(ArtifactView):
    """A stored ``surrogate_rules`` artifact seen as rules, importances and local explanations.
    Every property and :meth:`local` reads the stored arrays; nothing is recomputed, so a share
    link (``loupe.artifact(key)``) reopens exactly this result. ``info`` holds k, how it was
    chosen, the prescreen rule, split sizes, metrics and seconds per stage."""

    KIND = "rules"

    def __init__(self, artifact: Any) -> None:
        super().__init__(artifact)
        self._a = artifact.arrays
        self._names = self._a["feature_names"]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def sample_ids(self) -> list[int]:
        """The dataset's sample ids of the held-out rows everything is reported on."""
        return list(self.artifact.meta["sample_ids"])

    # global
    @property
    def k(self) -> int:
        return int(self.info["k"])

    @property
    def top_features(self) -> list[str]:
        """The k features the surrogate may use, best first."""
        return [str(n) for n in self._names[self._a["order"][: self.k]]]

    def importance(self, n: int | None = None) -> list[dict[str, Any]]:
        """Features by combined rank (the first ``n``): name, combined (Borda) mean rank and each
        method's score (None where the prescreen left a feature unscored)."""
        order = self._a["order"][:n]
        methods = self.info["methods"]
        rows = []
        for position, j in enumerate(order, start=1):
            row = {"rank": position, "feature": str(self._names[j]), "mean_rank": float(self._a["mean_rank"][j])}
            for m in methods:
                value = float(self._a[f"importance__{m}"][j])
                row[m] = None if math.isnan(value) else value
            rows.append(row)
        return rows

    @property
    def metrics(self) -> dict[str, float]:
        """Held-out (test) fidelity, macro-F1 (g vs f), accuracy, black-box accuracy, probability
        R², leaves, depth, mean rule length, counterfactual validity."""
        return dict(self.info["metrics"])

    @property
    def fidelity(self) -> float:
        return float(self.metrics["fidelity"])

    @property
    def fidelity_curve(self) -> dict[int, float]:
        """k -> validation fidelity of the surrogate on the top-k features."""
        return {int(k): float(f) for k, f in zip(self._a["curve_k"], self._a["curve_fidelity"])}

    def _conditions(self, rule: int) -> list[tuple[int, float, float]]:
        picked = np.flatnonzero(self._a["cond_rule"] == rule)
        return [(int(self._a["cond_feature"][c]), float(self._a["cond_lo"][c]), float(self._a["cond_hi"][c]))
                for c in picked]

    def rule_text(self, rule: int) -> str:
        """``IF cond AND cond THEN class``."""
        conds = " AND ".join(condition_text(str(self._names[j]), lo, hi) for j, lo, hi in self._conditions(rule))
        return f"IF {conds or 'TRUE'} THEN {self.classes[int(self._a['rule_class'][rule])]}"

    @property
    def rules(self) -> list[dict[str, Any]]:
        """One dict per leaf: id, rule text, class, support, coverage, precision (vs the black box),
        accuracy (vs the truth), length; statistics on the held-out rows."""
        a = self._a
        out = []
        for r in range(len(a["rule_node"])):
            precision, accuracy = float(a["rule_precision"][r]), float(a["rule_accuracy"][r])
            out.append({"id": f"R{r + 1}", "rule": self.rule_text(r), "class": self.classes[int(a["rule_class"][r])],
                        "support": int(a["rule_support"][r]), "coverage": float(a["rule_coverage"][r]),
                        "precision": None if math.isnan(precision) else precision,
                        "accuracy": None if math.isnan(accuracy) else accuracy, "length": int(a["rule_length"][r])})
        return out

    @property
    def tree(self) -> dict[str, np.ndarray]:
        """The surrogate tree's arrays (children, global feature index, threshold, training samples
        and majority class per node; -1 marks leaves) for drawing."""
        return {name[5:]: self._a[name] for name in self._a if name.startswith("tree_")}

    @property
    def feature_names(self) -> np.ndarray:
        return self._names

    # local
    def _row(self, sample_id: int) -> int:
        ids = self.sample_ids
        try:
            return ids.index(int(sample_id))
        except ValueError:
            raise ValueError(f"sample {sample_id} is not among this result's {len(ids)} held-out samples "
                             f"(ids {ids[0]}..{ids[-1]})") from None

    def local(self, sample_id: int) -> dict[str, Any]:
        """The sample's black-box and surrogate predictions, its firing rule with each condition
        checked against its values, and its smallest counterfactual with the black box's verdict."""
        a, i = self._a, self._row(sample_id)
        top = list(a["order"][: self.k])
        values = {int(j): float(a["test_x_top"][i, top.index(j)]) for j in top}
        rule = int(a["test_rule"][i])
        conditions = [{"feature": str(self._names[j]), "condition": condition_text(str(self._names[j]), lo, hi),
                       "value": values[j], "holds": bool(lo < values[j] <= hi)} for j, lo, hi in self._conditions(rule)]
        f_pred, cf_rule = int(a["test_f_pred"][i]), int(a["cf_rule"][i])
        changes = [{"feature": str(self._names[int(j)]), "from": float(old), "to": float(new)}
                   for row, j, old, new in zip(a["cf_row"], a["cf_feature"], a["cf_from"], a["cf_to"]) if row == i]
        counterfactual = None if cf_rule < 0 else {
            "rule_id": f"R{cf_rule + 1}", "rule": self.rule_text(cf_rule),
            "class": self.classes[int(a["rule_class"][cf_rule])], "changes": changes,
            "blackbox_prediction": self.classes[int(a["cf_f_pred"][i])], "blackbox_agrees": bool(a["cf_valid"][i]),
        }
        return {
            "sample_id": int(sample_id), "label": self.classes[int(a["test_label"][i])],
            "blackbox_prediction": self.classes[f_pred], "blackbox_confidence": float(a["test_f_proba"][i, f_pred]),
            "surrogate_prediction": self.classes[int(a["test_g_pred"][i])],
            "agrees": bool(a["test_g_pred"][i] == f_pred),
            "rule_id": f"R{rule + 1}", "rule": self.rule_text(rule), "conditions": conditions,
            "counterfactual": counterfactual,
        }
