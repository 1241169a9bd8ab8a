"""Each explainer's pass estimate (``Explainer.passes``, summed with the runner's own passes by
``explainers.runner.sample_passes``) against the rows the worker's ``PassCounter`` really counts
on a job, for every explainer on the model kinds it supports; and the worker's pass timing."""
from __future__ import annotations

import pytest

import loupe
from explainers.base import Passes
from explainers.registry import all_explainers
from explainers.runner import sample_passes
from worker.batch import _job, make_request, pass_time
from worker.jobs import run_job
from worker.samples import job_samples


SMALL = {
    "samp": {"n_frag": 4, "pixels_per_step": 256},
    "osa_das": {"n_views": 2, "patch": 8, "stride": 8},
    "integrated_gradients": {"n_steps": 4},
    "gradient_shap": {"n_samples": 3},
    "smoothgrad": {"nt_samples": 3},
    "shap": {"nsamples": 40, "n_background": 4},
    "occlusion": {"window": 8, "stride": 6},
    "feature_ablation": {"cell": 8},
}
CASES = [("digits_cnn", "digits", e, SMALL.get(e, {})) for e in sorted(all_explainers())
         if all_explainers()[e].unsupported_reason(loupe.model("digits_cnn")) is None]
CASES += [("breast_cancer_mlp", "breast_cancer", "shap", SMALL["shap"]),
          ("breast_cancer_mlp", "breast_cancer", "feature_ablation", {}),
          ("shapes_cnn", "shapes", "osa_das", {"n_views": 2, "patch": 16, "stride": 16, "preselect": 0.4}),
          ("shapes_cnn", "shapes", "samp", {"n_frag": 0, "pixels_per_step": 512})]


def _counted(model: str, dataset: str, explainer: str, params: dict, ids: list[int]) -> int:
    req = make_request(loupe.model(model), loupe.dataset(dataset), ids, explainer, params)
    return run_job(_job(req, ids, 16), job_samples(req.dataset, tuple(ids)))[1]


@pytest.mark.parametrize(("model", "dataset", "explainer", "params"), CASES,
                         ids=[f"{m}-{e}-{len(p)}" for m, _, e, p in CASES])
def test_estimate_brackets_the_counted_passes(model, dataset, explainer, params):
    counted = _counted(model, dataset, explainer, params, [0, 1])
    low, high = sample_passes(loupe.model(model), explainer, params).times(2).forward
    assert low <= counted <= high
    if not all_explainers()[explainer].spec.id == "samp":
        assert low == high  # every method but SAMP has a data-independent count


def test_estimate_follows_the_params():
    """The count moves with the knob it depends on (a constant estimate would pass the test above
    only by luck)."""
    model = loupe.model("digits_cnn")
    few, many = (sample_passes(model, "integrated_gradients", {"n_steps": n}) for n in (4, 40))
    assert many.forward[0] - few.forward[0] == 36 and many.backward[0] - few.backward[0] == 36
    assert _counted("digits_cnn", "digits", "integrated_gradients", {"n_steps": 40}, [3]) == many.forward[0]


def test_samp_range_is_exact_without_the_infinitesimal_constraint():
    """Without IC a path takes ceil(P / pixels_per_step) steps, P ≤ H·W active pixels; with every
    pixel active (no pixel equal to its end value) the upper bound is the count. Every pass is a
    forward + backward: one gradient per step and one at the path's end (which closes the last step's
    credit and gives f(end))."""
    model = loupe.model("digits_cnn")
    est = all_explainers()["samp"].passes(model, all_explainers()["samp"].Params(n_frag=0, pixels_per_step=256))
    assert est == Passes((2 * 2, 2 * (4 + 1)), (2 * 2, 2 * (4 + 1)))


def test_pass_time_runs_on_the_worker_and_is_cached():
    model = loupe.model("digits_cnn")
    first = pass_time(model)
    assert first.device == "cpu" and first.forward_s > 0 and first.backward_s >= 0
    assert first.forward_s < 0.05  # a 32×32 CNN row takes well under 50 ms on any CPU
    assert pass_time(model) is first  # cached per model and device
