"""Model-agnostic SHAP for tabular black boxes (Lundberg & Lee, "A Unified Approach to
Interpreting Model Predictions", NeurIPS 2017), via ``shap.KernelExplainer``.

Why Kernel SHAP and not shap's permutation explainer: one permutation pass costs 2F + 1 model
evaluations, and on the 5,000-feature ``highdim`` table shap's permutation explainer allocated
several GB per sample. Kernel SHAP with a budget of ``nsamples`` coalitions and a LARS selection of
the ``max_features`` most relevant features (shap's ``l1_reg="num_features(k)"``) is an order of
magnitude faster there (bench/results/design_measurements.md).
Tables with at most ``max_features`` features skip the selection and solve the full weighted least
squares problem; when ``nsamples`` ≥ 2^F − 2 every coalition is enumerated and the values are exact
(for a linear black box with independent background: φ_i = w_i (x_i − E[background_i])).

The explained output is ``model.predict_proba(·)[:, target]`` (the black-box view), one
KernelExplainer per sample, seeded with ``np.random`` at a per-sample seed so that results do not
depend on batch composition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explainers._common import check_inputs, sample_seed, seeded
from explainers.base import Explainer, Params, Passes, Result, Spec, param
from model_registry.base import ModelHandle


@dataclass(frozen=True)
class ShapParams(Params):
    nsamples: int = param(512, low=8, high=100_000, help="coalitions evaluated per sample (model calls × background rows); shap caps it at 2^F − 2, which enumerates small tables exactly")
    max_features: int = param(32, low=1, high=100_000, help="LARS keeps this many features (shap's num_features(k)) when the table has more; the rest get 0")
    n_background: int = param(8, low=1, high=1024, help="first n background rows used as the reference distribution (cost grows linearly)")
    seed: int = param(0, low=0, high=2**31 - 1, help="random seed for coalition sampling (combined with each sample's bytes)")


class Shap(Explainer[ShapParams]):
    """Kernel SHAP on ``predict_proba`` of the target class; see the module docstring for the
    choice of estimator. ``extras["base_value"]`` holds E[f(background)] per sample, so
    attributions sum to f(x) − base_value."""

    spec = Spec(
        id="shap",
        title="SHAP (Kernel)",
        paper="Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017",
        modalities=("tabular",),
        needs_gradients=False,
        stochastic=True,
        description="Shapley values of the target-class probability, estimated by weighted linear regression over feature coalitions.",
    )
    Params = ShapParams

    def passes(self, model: ModelHandle, params: ShapParams) -> Passes:
        """Rows of ``predict_proba``: the n background rows once (E[f]), x once, then n rows per
        coalition; shap evaluates at most 2^F − 2 coalitions."""
        n_features = model.input_shape[0]
        coalitions = min(params.nsamples, 2**n_features - 2) if n_features < 63 else params.nsamples
        return Passes.exact(params.n_background * (1 + coalitions) + 1)

    def explain(self, model: ModelHandle, x: torch.Tensor, target: torch.Tensor, params: ShapParams,
                background: torch.Tensor | None = None) -> Result:
        import shap

        target = check_inputs(self.spec.id, model, x, target)
        if background is None or len(background) == 0:
            raise ValueError(f"shap needs background samples for model {model.id!r}; pass background=...")
        reference = background[: params.n_background].detach().cpu().numpy().astype(np.float64)
        n_features = x.shape[1]
        l1_reg = f"num_features({params.max_features})" if params.max_features < n_features else False
        values, base = [], []
        for i in range(len(x)):
            k = int(target[i])
            explainer = shap.KernelExplainer(lambda rows: model.predict_proba(rows)[:, k], reference)
            with seeded(sample_seed(params.seed, x[i]), torch.device("cpu")):
                phi = explainer.shap_values(
                    x[i : i + 1].detach().cpu().numpy().astype(np.float64),
                    nsamples=params.nsamples,
                    l1_reg=l1_reg,
                    silent=True,
                )
            values.append(np.asarray(phi, dtype=np.float32).reshape(n_features))
            base.append(float(explainer.expected_value))
        return Result(np.stack(values), extras={"base_value": np.asarray(base, dtype=np.float32)})


EXPLAINERS = (Shap,)
