"""Surrogate rule extraction for high-dimensional black boxes (Karim et al., "Interpreting Black-box
Machine Learning Models for High Dimensional Datasets", DSAA 2023, arXiv 2208.13405; spec
``surrogate.md``). The paper's body was not available; the pipeline follows the spec's §3 design:

1. **Probe** the black box f for global importance with several methods, each explaining f's own
   predicted class on an explain set of held-out rows (§3C): Integrated Gradients (Captum, baseline
   = training median, so scores are in output units whatever the feature scales) and SHAP's
   GradientExplainer for differentiable models; SHAP's KernelExplainer for black boxes
   without gradients; and scikit-learn's permutation importance with y = f's own labels (the drop in
   agreement with f: model reliance). **Prescreen rule:** when the table has more than
   ``candidates`` features, the perturbation methods score only the ``candidates`` features ranked
   highest by a cheap full-width score: the mean rank of the gradient methods for differentiable
   models, the impurity importance of an ExtraTrees mimic of f (fit on f's labels, so it sees
   interactions that univariate screens miss) for black boxes. Unscored features rank last.
   Methods are combined by Borda count (mean rank), ties broken by the mean max-normalised score.
2. **k** is the smallest value on the held-out fidelity-versus-k curve within ``k_tolerance`` of the
   best (§3D), or the user's k.
3. **Surrogate**: a decision tree with leaf and depth caps on the top-k columns in raw units,
   trained on f's labels, never the true ones (§1.4, P7).
4. **Global rules**: one per leaf (§3F), conditions merged into intervals, with support, coverage,
   precision against f, accuracy against the truth and length, counted with ``apply`` on the
   held-out (test) rows, never from ``tree_.value`` (P12). Fidelity, macro-F1 (g vs f), accuracy
   and probability R² on the test rows.
5. **Local**: the factual rule of each test row and the smallest counterfactual (§3G, LORE-style):
   among leaves of another class, ordered by (number of conditions x violates, summed distance in
   IQR units), the first whose minimal edit x' (each violated feature moved just inside the leaf's
   interval, other features unchanged) f itself assigns to that leaf's class; when none does, the
   cheapest, flagged invalid against f.

Everything the page and the API show later (a sample's local rule, sorting, the tree drawing) is
read from the stored arrays by :class:`RulesResult`; nothing is recomputed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from data.base import DatasetError
from explainers.base import Analysis, Params, Prepared, Spec, param, preset_choice
from model_registry.base import ModelHandle

K_GRID = (5, 10, 15, 20, 30, 50, 100)
_LEAF = -1


@dataclass(frozen=True)
class SurrogateParams(Params):
    """The paper's own settings are not known (specs/surrogate.md §0): both presets are the spec's
    reconstruction, which no Loupe bench has found a reason to change (README, "Presets")."""

    presets: ClassVar[dict] = {"loupe": {}, "paper": {}}
    preset: str = preset_choice()
    k: int = param(0, low=0, high=10_000, help="features the surrogate may use; 0 picks k from the held-out fidelity-versus-k curve", group="surrogate")
    max_leaves: int = param(16, low=2, high=256, help="leaf cap of the surrogate tree (= number of global rules)", group="surrogate")
    max_depth: int = param(8, low=1, high=32, help="depth cap of the surrogate tree", group="surrogate")
    k_tolerance: float = param(0.005, low=0.0, high=0.2, help="automatic k: the smallest k whose held-out fidelity is within this of the best", group="surrogate")
    candidates: int = param(100, low=10, high=5_000, help="prescreen: wider tables have only this many features scored by the perturbation methods", group="probing")
    n_explain: int = param(256, low=16, high=5_000, help="held-out rows the importance methods explain", group="probing")
    n_shap: int = param(64, low=8, high=1_000, help="rows SHAP explains (a subset of the explain set)", group="probing")
    seed: int = param(0, low=0, high=2**31 - 1, help="seed for the splits, sampling and the tree")


# -- data handling -------------------------------------------------------------------------------
def _stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` row indices, proportional per class (every present class keeps ≥ 1 row), sorted."""
    if n >= len(labels):
        return np.arange(len(labels))
    picked = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        take = max(1, round(n * len(rows) / len(labels)))
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))


def _split_fit_rows(f_labels: np.ndarray, seed: int, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation row indices of the fitting pool, stratified by f's labels (spec §1.1)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(f_labels))
    counts = np.bincount(f_labels)
    stratify = f_labels if counts[counts > 0].min() >= 2 else None
    train, val = train_test_split(rows, test_size=val_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def _iqr(x: np.ndarray) -> np.ndarray:
    """Per-column robust scale: IQR, else std, else 1 (spec §3A)."""
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = (q75 - q25).astype(np.float64)
    std = x.std(axis=0).astype(np.float64)
    scale = np.where(scale > 0, scale, std)
    return np.where(scale > 0, scale, 1.0)


# -- step 1: importance --------------------------------------------------------------------------
def _integrated_gradients(model: ModelHandle, x: np.ndarray, target: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Mean |IG| per feature (Sundararajan et al. 2017), baseline = the training median."""
    from captum.attr import IntegratedGradients

    dev = model.device
    ig = IntegratedGradients(model.module)
    xt = torch.from_numpy(x).to(dev)
    attr = ig.attribute(xt, baselines=torch.from_numpy(baseline[None]).to(dev),
                        target=torch.from_numpy(target).to(dev), n_steps=16, internal_batch_size=1024)
    return attr.abs().mean(0).detach().cpu().numpy()


def _gradient_shap(model: ModelHandle, x: np.ndarray, background: np.ndarray, seed: int) -> np.ndarray:
    """Mean |SHAP| per feature from shap's GradientExplainer (expected gradients over the background),
    explaining each row's top-ranked class, i.e. f's prediction."""
    import shap

    dev = model.device
    explainer = shap.GradientExplainer(model.module, torch.from_numpy(background).to(dev), batch_size=256)
    values, _ = explainer.shap_values(torch.from_numpy(x).to(dev), nsamples=32, ranked_outputs=1,
                                      output_rank_order="max", rseed=seed)
    values = np.asarray(values[0] if isinstance(values, list) else values)
    return np.abs(values.reshape(len(x), x.shape[1], -1)[:, :, 0]).mean(0)


class _Embedded:
    """``x_C -> f(rows with columns C replaced)``: lets SHAP and scikit-learn perturb only the
    candidate columns C while every other column keeps ``base``'s values."""

    def __init__(self, proba: Callable[[np.ndarray], np.ndarray], base: np.ndarray, cols: np.ndarray) -> None:
        self.proba, self.base, self.cols = proba, base, cols

    def fit(self, *_: Any) -> "_Embedded":
        """Already fitted: the black box is; scikit-learn only checks that the method exists."""
        return self

    def predict_proba(self, xc: np.ndarray) -> np.ndarray:
        rows = np.broadcast_to(self.base, (len(xc), self.base.shape[-1])).copy()
        rows[:, self.cols] = xc
        return self.proba(rows)

    def predict(self, xc: np.ndarray) -> np.ndarray:
        return self.predict_proba(xc).argmax(1)


def _kernel_shap(proba: Callable, x: np.ndarray, target: np.ndarray, background: np.ndarray,
                 cols: np.ndarray, median: np.ndarray, seed: int) -> np.ndarray:
    """Mean |SHAP| per candidate feature from shap's KernelExplainer (Lundberg & Lee 2017) with
    2|C| + 256 coalitions per row and 8 background rows, other features held at the training
    median. Kernel rather than shap's permutation explainer: the latter JIT-compiles with numba
    for ~15 s in every new worker process."""
    import shap

    embedded = _Embedded(proba, median.astype(np.float32), cols)
    explainer = shap.KernelExplainer(embedded.predict_proba, background[:, cols])
    np.random.seed(seed)  # KernelExplainer samples coalitions with np.random
    values = explainer.shap_values(x[:, cols], nsamples=2 * len(cols) + 256, l1_reg=False, silent=True)
    values = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values)
    return np.abs(values.reshape(len(x), len(cols), -1)[np.arange(len(x)), :, target]).mean(0)


def _permutation_importance(proba: Callable, x: np.ndarray, f_labels: np.ndarray, cols: np.ndarray,
                            seed: int) -> np.ndarray:
    """scikit-learn permutation importance of the candidate columns, scored as agreement with f's
    own labels (spec §3C.3): how much f relies on each feature."""
    from sklearn.inspection import permutation_importance

    embedded = _Embedded(proba, x, cols)  # row i of every permuted block is filled into x[i]: rows keep their order
    scored = permutation_importance(embedded, x[:, cols], f_labels, n_repeats=3, random_state=seed,
                                    scoring=lambda est, xc, y: float(np.mean(est.predict(xc) == y)))
    return scored.importances_mean


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank 1 = most important; NaN (unscored) ranks last; ties share their mean rank."""
    from scipy.stats import rankdata

    return rankdata(np.where(np.isnan(scores), np.inf, -scores), method="average")


def combine(scores: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Borda count over methods: ``(order, mean_rank)``, ``order`` the feature indices best first,
    ties in mean rank broken by the mean max-normalised score (spec §3C, "Consensus")."""
    stacked = np.stack(list(scores.values()))
    mean_rank = np.stack([_ranks(s) for s in stacked]).mean(0)
    peak = np.nanmax(np.where(np.isnan(stacked), 0.0, stacked), axis=1, keepdims=True)
    normed = np.nan_to_num(stacked / np.where(peak > 0, peak, 1.0)).mean(0)
    return np.lexsort((-normed, mean_rank)), mean_rank


def _mimic_importance(x: np.ndarray, f_labels: np.ndarray, seed: int) -> np.ndarray:
    """Impurity importance of an ExtraTrees mimic of f: the black-box prescreen."""
    from sklearn.ensemble import ExtraTreesClassifier

    trees = ExtraTreesClassifier(n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=-1)
    return trees.fit(x, f_labels).feature_importances_


def probe_importance(model: ModelHandle, proba: Callable, data: "_Data", params: SurrogateParams,
                     clock: "_Clock") -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Step 1: per-method global scores (length d, NaN where a method did not score), the candidate
    columns the perturbation methods scored, and the prescreen rule that picked them."""
    x, target = data.x_explain, data.f_explain
    d = x.shape[1]
    rng = np.random.default_rng(params.seed)
    shap_rows = _stratified_pick(target, params.n_shap, rng)
    background = data.x_train[rng.choice(len(data.x_train), size=min(64, len(data.x_train)), replace=False)]
    scores: dict[str, np.ndarray] = {}
    if model.differentiable:
        scores["integrated_gradients"] = _integrated_gradients(model, x, target, data.median)
        clock.lap("integrated_gradients")
        scores["shap_gradient"] = _gradient_shap(model, x[shap_rows], background, params.seed)
        clock.lap("shap_gradient")
    wide = d > params.candidates
    if not wide:
        cols, rule = np.arange(d), f"none: all {d} features are scored by every method"
    elif model.differentiable:
        order, _ = combine(scores)
        cols = np.sort(order[: params.candidates])
        rule = (f"{d} features > {params.candidates}: permutation importance scores the top {params.candidates} "
                "by the mean rank of Integrated Gradients and gradient SHAP")
    else:
        cols = np.sort(np.argsort(-_mimic_importance(data.x_train, data.f_train, params.seed))[: params.candidates])
        clock.lap("prescreen")
        rule = (f"{d} features > {params.candidates}: SHAP and permutation importance score the top "
                f"{params.candidates} by the impurity importance of an ExtraTrees mimic of the black box")
    if not model.differentiable:
        values = np.full(d, np.nan)
        values[cols] = _kernel_shap(proba, x[shap_rows], target[shap_rows], background[:8], cols, data.median,
                                    params.seed)
        scores["shap_kernel"] = values
        clock.lap("shap_kernel")
    values = np.full(d, np.nan)
    values[cols] = _permutation_importance(proba, x, target, cols, params.seed)
    scores["permutation"] = values
    clock.lap("permutation")
    return scores, cols, rule


# -- steps 2-3: k and the surrogate --------------------------------------------------------------
def _tree(params: SurrogateParams, n_rows: int) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_leaf_nodes=params.max_leaves, max_depth=params.max_depth,
                                  min_samples_leaf=max(5, int(0.002 * n_rows)), random_state=params.seed)


def fidelity_curve(data: "_Data", order: np.ndarray, params: SurrogateParams) -> tuple[np.ndarray, np.ndarray]:
    """Validation fidelity of the surrogate on the top-k columns for each k of the grid, all
    features when there are fewer than its largest k, and the user's k: ``(ks, fidelities)``."""
    d = len(order)
    grid = {k for k in K_GRID if k <= d} | {min(d, K_GRID[-1])} | ({min(params.k, d)} if params.k else set())
    ks = sorted(grid)
    fids = []
    for k in ks:
        cols = order[:k]
        tree = _tree(params, len(data.f_train)).fit(data.x_train[:, cols], data.f_train)
        fids.append(float(np.mean(tree.predict(data.x_val[:, cols]) == data.f_val)))
    return np.asarray(ks, dtype=np.int64), np.asarray(fids)


def choose_k(ks: np.ndarray, fids: np.ndarray, tolerance: float) -> int:
    """The smallest k whose validation fidelity is within ``tolerance`` of the best (spec §3D)."""
    return int(ks[np.flatnonzero(fids >= fids.max() - tolerance)[0]])


# -- step 4: rules -------------------------------------------------------------------------------
def leaf_intervals(tree_: Any, columns: np.ndarray) -> dict[int, dict[int, list[float]]]:
    """For every leaf node: feature (global index via ``columns``) -> [lo, hi], the merged
    conditions lo < x ≤ hi of its root-to-leaf path (spec §3F)."""
    out: dict[int, dict[int, list[float]]] = {}
    stack: list[tuple[int, dict[int, list[float]]]] = [(0, {})]
    while stack:
        node, bounds = stack.pop()
        left, right = tree_.children_left[node], tree_.children_right[node]
        if left == _LEAF:
            out[node] = bounds
            continue
        feat, thr = int(columns[tree_.feature[node]]), float(tree_.threshold[node])
        lo, hi = bounds.get(feat, [-math.inf, math.inf])
        stack.append((left, {**bounds, feat: [lo, min(hi, thr)]}))
        stack.append((right, {**bounds, feat: [max(lo, thr), hi]}))
    return out


def rule_table(leaves: np.ndarray, leaf_class: np.ndarray, test_leaf: np.ndarray, f_test: np.ndarray,
               y_test: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Per-rule statistics counted on held-out rows (``apply``), never read from ``tree_.value``."""
    n = len(test_leaf)
    support = np.array([np.sum(test_leaf == leaf) for leaf in leaves])
    hits = np.array([np.sum((test_leaf == leaf) & (f_test == c)) for leaf, c in zip(leaves, leaf_class)])
    right = np.array([np.sum((test_leaf == leaf) & (y_test == c)) for leaf, c in zip(leaves, leaf_class)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"rule_support": support, "rule_coverage": support / max(n, 1),
                "rule_precision": np.where(support > 0, hits / support, np.nan),
                "rule_accuracy": np.where(support > 0, right / support, np.nan), "rule_length": lengths}


# -- step 5: counterfactuals ---------------------------------------------------------------------
DEPTHS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""How far into a counterfactual leaf an edit goes, in units of the distance from just past its
thresholds (0) to the leaf's typical training values (1). Deeper edits cost more, so they are
used only when the black box disagrees with the shallower ones."""


Edit = list[tuple[int, np.ndarray, np.ndarray]]
"""One candidate counterfactual for every row: (feature, rows violating its condition, new values)."""


def counterfactuals(x: np.ndarray, g_pred: np.ndarray, intervals: list[dict[int, list[float]]],
                    leaf_class: np.ndarray, typical: list[dict[int, float]], scale: np.ndarray,
                    span: tuple[np.ndarray, np.ndarray], proba: Callable) -> dict[str, np.ndarray]:
    """For each row of ``x`` (full width) the smallest counterfactual (module docstring, step 5).
    Candidates are (leaf of another class, depth of :data:`DEPTHS`), ordered per row by (conditions
    violated, distance moved in IQR units). Rounds of one batched black-box call try each row's next
    candidate until f assigns it the leaf's class, so the first hit is the cheapest valid one; a row
    with no hit keeps its cheapest candidate, flagged invalid. Returns the rule index, f's prediction
    on x', the validity flag, and the changes as a table (row, feature, from, to)."""
    n = len(x)
    cands = [(r, depth) for r in range(len(intervals)) for depth in DEPTHS]
    edits = [_edits(x, intervals[r], typical[r], scale, span, depth) for r, depth in cands]
    violated = np.stack([sum((m.astype(float) for _, m, _ in e), np.zeros(n)) for e in edits], axis=1)
    moved = np.stack([sum((np.abs(v - x[:, j]) * m / scale[j] for j, m, v in e), np.zeros(n)) for e in edits], axis=1)
    cand_class = leaf_class[[r for r, _ in cands]]
    violated[cand_class[None, :] == g_pred[:, None]] = np.inf
    order = np.lexsort((moved, violated), axis=1)
    n_allowed = np.isfinite(violated).sum(1)
    pos = np.zeros(n, dtype=np.int64)
    chosen, f_cf = np.where(n_allowed > 0, order[:, 0], -1), np.full(n, -1, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    active = n_allowed > 0
    while active.any():
        rows = np.flatnonzero(active)
        cand = order[rows, pos[rows]]
        built = x[rows].copy()
        for c in np.unique(cand):
            _apply(built, edits[c], rows, cand == c)
        pred = proba(built).argmax(1)
        hit = pred == cand_class[cand]
        first = pos[rows] == 0
        f_cf[rows[first]] = pred[first]
        chosen[rows[hit]], f_cf[rows[hit]], valid[rows[hit]] = cand[hit], pred[hit], True
        pos[rows] += 1
        active[rows[hit]] = False
        active &= pos < n_allowed
    changes = [(i, j, float(x[i, j]), float(v[i])) for i in np.flatnonzero(chosen >= 0)
               for j, m, v in sorted(edits[chosen[i]], key=lambda e: e[0]) if m[i]]
    table = np.asarray(changes, dtype=np.float64).reshape(-1, 4)
    rule = np.where(chosen >= 0, np.asarray([r for r, _ in cands])[np.maximum(chosen, 0)], -1)
    return {"cf_rule": rule.astype(np.int64), "cf_f_pred": f_cf, "cf_valid": valid,
            "cf_row": table[:, 0].astype(np.int64), "cf_feature": table[:, 1].astype(np.int64),
            "cf_from": table[:, 2], "cf_to": table[:, 3]}


def _apply(built: np.ndarray, edit: Edit, rows: np.ndarray, selected: np.ndarray) -> None:
    """Write one candidate's new values into the ``selected`` rows of ``built`` (rows ``rows`` of x)."""
    for j, mask, values in edit:
        take = selected & mask[rows]
        built[take, j] = values[rows[take]]


def _edits(x: np.ndarray, bounds: Mapping[int, list[float]], typical: Mapping[int, float],
           scale: np.ndarray, span: tuple[np.ndarray, np.ndarray], depth: float) -> Edit:
    """For each condition lo < x ≤ hi of a leaf, the rows that violate it and their new value: just
    inside the interval (1 % of the feature's IQR, at most half the interval), moved ``depth`` of
    the way towards the leaf's typical value (beyond it for depth > 1, but never past the training
    range ``span`` = (min, max) nor out of the interval); float32, so the tree sees exactly the
    stored value."""
    out = []
    for j, (lo, hi) in bounds.items():
        col = x[:, j].astype(np.float64)
        outside = ~((col > lo) & (col <= hi))
        step = 0.01 * scale[j]
        if math.isfinite(lo) and math.isfinite(hi):
            step = min(step, (hi - lo) / 2)
        if col.max() > hi:  # rows above the interval move down into it
            floor = max(lo + step, min(span[0][j], hi - step))
            target = (hi - step) + depth * (typical[j] - hi + step)
            col = np.where(col > hi, max(min(target, hi - step), floor), col)
        if col.min() <= lo:  # rows below it move up
            ceiling = min(hi, max(span[1][j], lo + step))
            target = (lo + step) + depth * (typical[j] - lo - step)
            col = np.where(col <= lo, min(max(target, lo + step), ceiling), col)
        values = col.astype(np.float32)
        out.append((j, outside, values))
    return out


def typical_values(x_train_top: np.ndarray, train_node: np.ndarray, leaves: np.ndarray,
                   intervals: list[dict[int, list[float]]], top: np.ndarray) -> list[dict[int, float]]:
    """Per rule, the median training value of each feature it constrains among the training rows
    in its leaf (inside the interval, since those rows satisfy it); the interval's edge when the
    leaf holds no rows."""
    column = {int(j): c for c, j in enumerate(top)}
    out = []
    for leaf, bounds in zip(leaves, intervals):
        inside = train_node == leaf
        out.append({j: float(np.median(x_train_top[inside, column[j]])) if inside.any()
                    else (hi if math.isfinite(hi) else lo) for j, (lo, hi) in bounds.items()})
    return out


# -- the analysis --------------------------------------------------------------------------------
@dataclass
class _Data:
    """The three row sets (train: surrogate fit, val: k choice and explain set, test: report) with
    f's labels, in the black box's input units."""

    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    f_train: np.ndarray
    f_val: np.ndarray
    f_test: np.ndarray
    p_test: np.ndarray
    y_test: np.ndarray
    x_explain: np.ndarray
    f_explain: np.ndarray
    median: np.ndarray


class _Clock:
    """Seconds per pipeline stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


def _proba_fn(model: ModelHandle) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rows: model.predict_proba(np.ascontiguousarray(rows, dtype=np.float32))


def _gather(inputs: Mapping[str, Any], proba: Callable, params: SurrogateParams) -> _Data:
    x_fit, x_test = inputs["x_fit"], inputs["x_test"]
    f_fit = proba(x_fit).argmax(1)
    p_test = proba(x_test)
    train, val = _split_fit_rows(f_fit, params.seed)
    explain = val[_stratified_pick(f_fit[val], params.n_explain, np.random.default_rng(params.seed))]
    return _Data(x_fit[train], x_fit[val], x_test, f_fit[train], f_fit[val], p_test.argmax(1), p_test,
                 np.asarray(inputs["y_test"]), x_fit[explain], f_fit[explain],
                 np.median(x_fit[train], axis=0).astype(np.float32))


class SurrogateRules(Analysis[SurrogateParams]):
    """See the module docstring."""

    spec = Spec(
        id="surrogate_rules",
        title="Surrogate rules",
        paper="Karim et al. Interpreting Black-box Machine Learning Models for High Dimensional Datasets. DSAA 2023",
        modalities=("tabular",),
        needs_gradients=False,
        output="rules",
        description="Top-k features by combined probing, a decision-tree surrogate of the black box with held-out "
                    "fidelity, its global rules, and per-sample factual and counterfactual rules.",
    )
    Params = SurrogateParams

    def prepare(self, model: ModelHandle, dataset: Any, params: SurrogateParams) -> Prepared:
        """The training split fits (train/val), the evaluation split is reported on. A dataset
        without a training split gives a seeded 70 % of its rows to fitting; the rest are the
        reported samples."""
        if tuple(dataset.input_shape) != tuple(model.input_shape):
            raise DatasetError(f"model {model.id!r} takes {list(model.input_shape)} features but dataset "
                               f"{dataset.id!r} has rows of shape {list(dataset.input_shape)}")
        names = dataset.feature_names or [f"x{j}" for j in range(dataset.input_shape[0])]
        if dataset.train is not None:
            ids = dataset.ids
            x_fit = dataset.train.x
        else:
            order = np.random.default_rng(params.seed).permutation(len(dataset))
            cut = int(0.7 * len(dataset))
            ids = sorted(int(i) for i in order[cut:])
            x_fit = dataset.eval.x[np.sort(order[:cut])]
        class_map = dataset.class_map_for(model.classes)
        class_map.require(model.id, dataset.id, "the rules' accuracy")
        return Prepared(ids, {"x_fit": np.ascontiguousarray(x_fit, dtype=np.float32),
                              "x_test": dataset.inputs(ids).numpy(), "y_test": class_map.labels(dataset.labels(ids)),
                              "features": list(names), "classes": list(model.classes)})

    def compute(self, model: ModelHandle, params: SurrogateParams, inputs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Steps 1-5 of the module docstring, each timed."""
        clock = _Clock()
        proba = _proba_fn(model)
        data = _gather(inputs, proba, params)
        clock.lap("black_box_labels")
        scores, cols, rule = probe_importance(model, proba, data, params, clock)
        order, mean_rank = combine(scores)
        ks, fids = fidelity_curve(data, order, params)
        k = min(params.k, len(order)) if params.k else choose_k(ks, fids, params.k_tolerance)
        clock.lap("fidelity_curve")
        top = order[:k]
        tree = _tree(params, len(data.f_train)).fit(data.x_train[:, top], data.f_train)
        g_test = tree.predict(data.x_test[:, top])
        clock.lap("surrogate")
        leaves, leaf_class, intervals, arrays = _rule_arrays(tree, top, data)
        clock.lap("rules")
        typical = typical_values(data.x_train[:, top], tree.apply(data.x_train[:, top]), leaves, intervals, top)
        span = (data.x_train.min(0).astype(np.float64), data.x_train.max(0).astype(np.float64))
        cf = counterfactuals(data.x_test, g_test, intervals, leaf_class, typical, _iqr(data.x_train), span, proba)
        clock.lap("counterfactuals")
        info = {
            "classes": list(inputs["classes"]), "methods": list(scores), "k": int(k),
            "k_source": "user" if params.k else "curve", "prescreen": rule, "n_candidates": int(len(cols)),
            "n_features": int(len(order)), "n_train": int(len(data.f_train)), "n_val": int(len(data.f_val)),
            "n_test": int(len(data.f_test)), "n_explain": int(len(data.f_explain)),
            "metrics": _metrics(tree, top, data, g_test, arrays["rule_length"], cf["cf_valid"], len(model.classes)),
            "seconds": clock.seconds,
        }
        arrays.update({
            "feature_names": np.asarray(inputs["features"], dtype=str), "order": order.astype(np.int64),
            "mean_rank": mean_rank.astype(np.float32),
            **{f"importance__{m}": s.astype(np.float32) for m, s in scores.items()},
            "curve_k": ks, "curve_fidelity": fids,
            "test_x_top": data.x_test[:, top].astype(np.float32), "test_f_pred": data.f_test.astype(np.int64),
            "test_f_proba": data.p_test.astype(np.float32), "test_g_pred": g_test.astype(np.int64),
            "test_label": data.y_test.astype(np.int64), **cf,
        })
        return info, arrays


def _rule_arrays(tree: Any, top: np.ndarray, data: _Data
                 ) -> tuple[np.ndarray, np.ndarray, list[dict[int, list[float]]], dict[str, np.ndarray]]:
    """The fitted tree as stored arrays: its nodes (global feature indices), one rule per leaf with
    its conditions as a flat table and its held-out statistics, and each test row's rule. Also
    returns the leaves, their classes and their intervals for the counterfactual search."""
    t = tree.tree_
    leaves = np.flatnonzero(t.children_left == _LEAF)
    leaf_class = tree.classes_[t.value[leaves, 0].argmax(1)].astype(np.int64)
    bounds = leaf_intervals(t, top)
    intervals = [bounds[int(leaf)] for leaf in leaves]
    node_rule = np.full(t.node_count, -1, dtype=np.int64)
    node_rule[leaves] = np.arange(len(leaves))
    test_node = tree.apply(data.x_test[:, top])
    lengths = np.array([len(b) for b in intervals], dtype=np.int64)
    flat = [(r, j, lo, hi) for r, b in enumerate(intervals) for j, (lo, hi) in sorted(b.items())]
    conds = np.asarray(flat, dtype=np.float64).reshape(-1, 4)
    return leaves, leaf_class, intervals, {
        "tree_left": t.children_left.astype(np.int64), "tree_right": t.children_right.astype(np.int64),
        "tree_feature": np.where(t.feature >= 0, top[np.maximum(t.feature, 0)], -1).astype(np.int64),
        "tree_threshold": t.threshold.astype(np.float64), "tree_samples": t.n_node_samples.astype(np.int64),
        "tree_class": tree.classes_[t.value[:, 0].argmax(1)].astype(np.int64), "tree_rule": node_rule,
        "rule_node": leaves.astype(np.int64), "rule_class": leaf_class,
        **rule_table(leaves, leaf_class, test_node, data.f_test, data.y_test, lengths),
        "cond_rule": conds[:, 0].astype(np.int64), "cond_feature": conds[:, 1].astype(np.int64),
        "cond_lo": conds[:, 2], "cond_hi": conds[:, 3], "test_rule": node_rule[test_node],
    }


def _metrics(tree: Any, top: np.ndarray, data: _Data, g_test: np.ndarray, lengths: np.ndarray,
             cf_valid: np.ndarray, n_classes: int) -> dict[str, float]:
    """Held-out metrics (spec §3E): label fidelity and macro-F1 of g against f, accuracies against the
    truth, probability R² (variance-weighted), tree size, rule length, counterfactual validity."""
    from sklearn.metrics import f1_score, r2_score

    g_proba = np.zeros((len(g_test), n_classes))
    g_proba[:, tree.classes_] = tree.predict_proba(data.x_test[:, top])
    return {
        "fidelity": float(np.mean(g_test == data.f_test)),
        "macro_f1": float(f1_score(data.f_test, g_test, average="macro")),
        "accuracy": float(np.mean(g_test == data.y_test)),
        "blackbox_accuracy": float(np.mean(data.f_test == data.y_test)),
        "proba_r2": float(r2_score(data.p_test, g_proba, multioutput="variance_weighted")),
        "n_leaves": int(tree.get_n_leaves()), "depth": int(tree.get_depth()),
        "mean_rule_length": float(lengths.mean()),
        "counterfactual_validity": float(np.mean(cf_valid)),
    }


ANALYSES = [SurrogateRules]
