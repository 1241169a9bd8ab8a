"""What every number Loupe reports about an explanation means to a reader: its direction (is higher
better?), a one-line meaning for a hover, and how to print it. One table beside the definitions
(explainers/evaluation.py for the per-sample faithfulness metrics, explainers/surrogate_rules.py
for the rule metrics); pages and the CLI read it through ``loupe.metric_info``.

A sample's confidence (the model's probability of its predicted class) is a property of the
sample, not a measure of the explanation, so it has no entry here and pages show it beside the
label and prediction rather than among the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """One metric: ``higher_is_better`` gives the arrow (↑ or ↓; None for a count that is neither),
    ``help`` a one-line meaning, ``spec`` a Python format spec for one value ('.3f', '.0%')."""

    name: str
    label: str
    higher_is_better: bool | None
    help: str
    spec: str = ".3f"

    @property
    def arrow(self) -> str:
        """↑ when higher is better, ↓ when lower is better, empty when neither."""
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    @property
    def title(self) -> str:
        """The label with its arrow, for column headers and axis titles."""
        return f"{self.label} {self.arrow}".strip()

    @property
    def tooltip(self) -> str:
        """The meaning with the direction spelled out (for hovers)."""
        direction = {True: "Higher is better. ", False: "Lower is better. ", None: ""}[self.higher_is_better]
        return f"{direction}{self.help}"

    @property
    def printf(self) -> str:
        """The format as a Streamlit column's printf pattern, for values times :attr:`column_scale`.
        A percentage keeps its own decimals ("4.9%", "33.6%"); Streamlit's "percent" format drops
        trailing zeros and keeps up to two, so one column mixed "4.9%" with "33.57%"."""
        return f"%{self.spec[:-1]}f%%" if self.spec.endswith("%") else f"%{self.spec}"

    @property
    def column_scale(self) -> float:
        """What a column's fractions are multiplied by before :attr:`printf` shows them (100 for a
        percentage)."""
        return 100.0 if self.spec.endswith("%") else 1.0

    def format(self, value: object) -> str:
        """One value as text: booleans as hit/miss, missing values as –."""
        if value is None or (isinstance(value, float) and value != value):
            return "–"
        if isinstance(value, bool):
            return "hit" if value else "miss"
        return format(float(value), self.spec)  # type: ignore[arg-type]

    def interval(self, mean: float, half: float) -> str:
        """"mean ± half-width" in this metric's format; – when the mean is undefined."""
        return "–" if mean != mean else f"{self.format(float(mean))} ± {self.format(float(half))}"


_DELETION = ("the most-attributed pixels (or features) are removed first, replaced by the model's zero input; "
             "the curve's mean")
_INSERTION = "the most-attributed pixels (or features) are pasted into a blurred input first; the curve's mean"
METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("deletion_auc", "deletion AUC", False,
               f"Target logit ÷ its value on the input while {_DELETION} (SAMP's protocol). A faithful map makes "
               "it fall fast. Can be < 0."),
    MetricInfo("insertion_auc", "insertion AUC", True,
               f"Target logit ÷ its value on the input while {_INSERTION} (SAMP's protocol). A faithful map makes "
               "it rise fast. Can exceed 1."),

    MetricInfo("deletion_auc_prob", "deletion AUC (prob.)", False,
               f"Like deletion AUC on the softmax probability of the target (RISE's convention, trapezoid rule): "
               f"{_DELETION}."),
    MetricInfo("insertion_auc_prob", "insertion AUC (prob.)", True,
               f"Like insertion AUC on the softmax probability of the target (RISE's convention, trapezoid rule): "
               f"{_INSERTION}."),
    MetricInfo("pointing_hit", "pointing game", True,
               "Whether the map's maximum lies inside the ground-truth mask; over samples, the hit rate.", ".0%"),
    MetricInfo("mask_energy", "mask energy", True,
               "Share of the map's positive attribution that falls inside the ground-truth mask.", ".0%"),
    MetricInfo("sparsity_gini", "sparsity (Gini)", True,
               "Gini index of |map|: 0 spreads evenly, 1 puts everything on one unit. Concentration, not "
               "faithfulness by itself.", ".2f"),
    MetricInfo("spearman", "Spearman", True,
               "Rank correlation of two maps over all units: 1 ranks them identically, 0 unrelated, −1 reversed.",
               ".2f"),
    MetricInfo("topk_iou", "top-10% IoU", True,
               "Overlap (intersection over union) of the two maps' top 10% units by |value|.", ".2f"),
    MetricInfo("fidelity", "fidelity", True,
               "Share of held-out rows where the surrogate's rules predict what the model predicts."),
    MetricInfo("macro_f1", "macro-F1", True, "F1 of the surrogate against the model's labels, averaged over "
               "classes (held-out rows)."),
    MetricInfo("accuracy", "accuracy", True, "Share of held-out rows where the surrogate predicts the true label."),
    MetricInfo("blackbox_accuracy", "model accuracy", True, "Share of held-out rows the model itself gets right."),
    MetricInfo("proba_r2", "prob. R²", True, "How much of the model's class-probability variance the surrogate's "
               "leaf probabilities explain (held-out rows; 1 is perfect)."),
    MetricInfo("counterfactual_validity", "CF valid", True, "Share of held-out samples whose counterfactual the "
               "model itself assigns to the new class.", ".0%"),
    MetricInfo("coverage", "coverage", True, "Share of held-out rows the rule applies to.", ".1%"),
    MetricInfo("precision", "precision", True, "Share of the rows a rule covers that the model assigns to the "
               "rule's class."),
)}
"""Every metric Loupe reports, by the name results and exports carry."""


def in_display_order(names: list[str]) -> list[str]:
    """``names`` in the order of :data:`METRICS` (faithfulness first), unknown names last as given."""
    order = list(METRICS)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def metric_info(name: str) -> MetricInfo:
    """The entry for ``name``; a metric without one (e.g. from a user's explainer) gets its name as
    label, no direction and a general number format."""
    return METRICS.get(name) or MetricInfo(name, name, None, "", ".3g")
