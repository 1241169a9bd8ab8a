"""One conformance suite over the whole explainer registry × every model each explainer applies to
(the toy models of tests/toy_models.py and the built-in zoo).

Per case: output shape, dtype and finiteness; determinism (two runs equal); batch invariance (one
batch of 3 vs three batches of 1); no hooks left on any module after a normal run, after a run with
an out-of-range target and after a run whose forward pass raises; plus a JSON round-trip of every
explainer's Params. Params are shrunk (``fast_params``) so the suite stays quick on 2 CPU cores; run with
``--durations=15`` to see the slowest cases.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any

import numpy as np
import pytest
import torch

from data.builtin import load_builtin
from explainers.base import Explainer, Result
from explainers.registry import all_explainers
from model_registry.base import ModelHandle
from model_registry.zoo import ZOO, load_zoo_model
from tests import toy_models as toys

pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:shap"),
    # LARS on 5,000 features from only 64 coalitions (fast_params) drops degenerate regressors
    # and can leave a singular regression: expected for that deliberately tiny budget.
    pytest.mark.filterwarnings("ignore:Regressors in active set degenerate"),
    pytest.mark.filterwarnings("ignore:Linear regression equation is singular"),
]


def fast_params(explainer_id: str, model: ModelHandle) -> dict[str, Any]:
    """Small settings per explainer id (windows scale with the image side); ids not listed run
    with their defaults."""
    side = min(model.input_shape[-2:]) if model.task == "image" else 8
    table: dict[str, dict[str, Any]] = {
        "integrated_gradients": {"n_steps": 4},
        "smoothgrad": {"nt_samples": 2},
        "gradient_shap": {"n_samples": 2},
        "occlusion": {"window": side // 4, "stride": side // 8},
        "feature_ablation": {"cell": side // 4},
        "shap": {"nsamples": 64},
        "osa_das": {"n_views": 3, "patch": max(2, side // 4), "stride": max(1, side // 8)},
        "samp": {"pixels_per_step": max(1, side * side // 4), "n_frag": 2},
    }
    return table.get(explainer_id, {})


N = 3

MODELS: dict[str, ModelHandle] = {
    **{m.id: m for m in toys.all_toys()},
    **{f"zoo:{model_id}": load_zoo_model(model_id, device=torch.device("cpu")) for model_id in sorted(ZOO)},
}


@functools.lru_cache(maxsize=None)
def samples(key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x: N samples, target: N class indices, background: 8 reference samples) for a model:
    the dataset's first samples and labels for zoo models, seeded random inputs for toys."""
    model = MODELS[key]
    if key.startswith("zoo:"):
        ds = load_builtin(model.dataset)
        ids = list(range(N))
        return ds.inputs(ids), torch.as_tensor(ds.labels(ids)), ds.background(8)
    if model.task == "image":
        return toys.random_images(N, model.input_shape), torch.arange(N) % len(model.classes), toys.random_images(8, model.input_shape, seed=1)
    return (
        toys.random_table(N, model.input_shape[0], scale=0.9),
        torch.arange(N) % len(model.classes),
        toys.random_table(8, model.input_shape[0], seed=1, scale=0.9),
    )


CASES = [
    pytest.param(eid, key, id=f"{eid}-{key}")
    for eid, explainer in all_explainers().items()
    for key, model in MODELS.items()
    if explainer.unsupported_reason(model) is None
]


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")


def hooks_left(module: torch.nn.Module) -> list[str]:
    """Every non-empty hook dict on any submodule (forward, pre-forward, backward, which also holds
    full backward hooks, pre-backward) and the global module hooks."""
    found = [
        f"{name or '<root>'}.{attr}"
        for name, sub in module.named_modules()
        for attr in _HOOK_DICTS
        if getattr(sub, attr, None)
    ]
    return found + [attr for attr in _GLOBAL_HOOKS if getattr(torch.nn.modules.module, attr, None)]


class _Boom(RuntimeError):
    """Raised by a test hook inside the model's forward pass."""


def _explode(*_: Any) -> None:
    raise _Boom("forward failed")


def _run(explainer: Explainer, model: ModelHandle, x, target, background) -> Result:
    params = explainer.Params.from_dict(fast_params(explainer.spec.id, model))
    return explainer.explain(model, x, target, params, background)


def test_every_registered_explainer_has_a_case() -> None:
    covered = {p.values[0] for p in CASES}
    assert covered == set(all_explainers())


@pytest.mark.parametrize(("explainer_id", "key"), CASES)
def test_conformance(explainer_id: str, key: str) -> None:
    explainer = all_explainers()[explainer_id]
    model = MODELS[key]
    x, target, background = samples(key)

    first = _run(explainer, model, x, target, background)
    attr = np.asarray(first.attributions)
    if explainer.spec.output == "attribution":
        expected = (N, *model.input_shape[-2:]) if model.task == "image" else (N, model.input_shape[0])
        assert attr.shape == expected and attr.dtype == np.float32
    assert np.isfinite(attr).all()
    np.testing.assert_array_equal(_run(explainer, model, x, target, background).attributions, attr)

    singles = np.concatenate([_run(explainer, model, x[i : i + 1], target[i : i + 1], background).attributions for i in range(N)])
    scale = float(np.abs(attr).max()) if attr.size else 0.0
    np.testing.assert_allclose(singles, attr, rtol=1e-4, atol=1e-4 * scale + 1e-7)
    assert hooks_left(model.module) == []

    n = len(model.classes)
    with pytest.raises(ValueError, match=rf"^{explainer_id}: target class\(es\) \[{n}(, {n})*\] out of range for model "
                                         rf"'{re.escape(model.id)}' with {n} classes$"):
        _run(explainer, model, x, torch.full_like(target, n), background)
    assert hooks_left(model.module) == []

    boom = model.module.register_forward_hook(_explode)
    try:
        with pytest.raises(_Boom):
            _run(explainer, model, x, target, background)
    finally:
        boom.remove()
    assert hooks_left(model.module) == []


@pytest.mark.parametrize("explainer_id", list(all_explainers()))
def test_params_round_trip(explainer_id: str) -> None:
    cls = all_explainers()[explainer_id].Params
    for p in (cls(), cls.from_dict(fast_params(explainer_id, MODELS["toy_convnet"]))):
        again = cls.from_dict(json.loads(p.to_json()))
        assert again == p and again.to_json() == p.to_json()


def test_hooks_left_sees_every_kind_of_hook() -> None:
    """The hook check itself: each kind of hook is reported while registered and gone once removed."""
    module = toys.tiny_convnet().module
    conv = module.features.conv2
    handles = [
        conv.register_forward_hook(lambda *_: None),
        conv.register_forward_pre_hook(lambda *_: None),
        conv.register_full_backward_hook(lambda *_: None),
        conv.register_full_backward_pre_hook(lambda *_: None),
        torch.nn.modules.module.register_module_forward_hook(lambda *_: None),
    ]
    assert len(hooks_left(module)) == 5
    for handle in handles:
        handle.remove()
    assert hooks_left(module) == []
