"""Analyses (results that are one artifact, not per-sample maps): the store keeps them content-
addressed, an identical request is served without a worker task, the worker computes what the
oracle says, and links name their kind. A toy analysis with a known answer (the mean logit vector
of the samples it reads) runs on the real embedded Dask cluster and on a session model in-process."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cloudpickle
import numpy as np
import pytest
import torch

import loupe
from data.registry import get_dataset
from explainers.base import Analysis, ExplainError, ParamError, Params, Prepared, Spec, param
from explainers.registry import UnknownExplainer, all_analyses
from model_registry.base import ModelHandle, weights_hash
from model_registry.registry import get_model, register_model
from store.files import StoreError
from store.keys import InvalidKey, RunNotFound, array_digest
from store.runs import Store
from worker.analyses import run_analysis

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import test modules


@dataclass(frozen=True)
class MeanParams(Params):
    n: int = param(8, low=1, high=1000, help="first n eval samples")


class MeanLogits(Analysis):
    """Oracle analysis: the mean logit vector over the first ``n`` eval samples."""

    spec = Spec("mean_logits_test", "Mean logits", "-", ("tabular",), needs_gradients=False, output="toy")
    Params = MeanParams

    def prepare(self, model, dataset, params):
        ids = list(range(params.n))
        return Prepared(ids, {"x": dataset.inputs(ids).numpy()})

    def compute(self, model, params, inputs):
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(inputs["x"]).to(model.device)).cpu().numpy()
        return {"n": int(params.n), "classes": list(model.classes)}, {"mean": logits.mean(0)}


@pytest.fixture(scope="module")
def tabular():
    return get_model("breast_cancer_mlp"), get_dataset("breast_cancer")


def _oracle(model, dataset, n: int) -> np.ndarray:
    with torch.no_grad():
        return model.logits(dataset.inputs(list(range(n)))).numpy().mean(0)


def test_computed_once_on_the_cluster_then_served_from_the_store(tabular, fresh_home):
    model, dataset = tabular
    first = run_analysis(MeanLogits(), model, dataset, {"n": 12})
    assert not first.cached and first.kind == "toy" and first.meta["device"] == "cpu"
    np.testing.assert_allclose(first.arrays["mean"], _oracle(model, dataset, 12), rtol=1e-5, atol=1e-6)
    assert first.info == {"n": 12, "classes": list(model.classes)}
    assert first.meta["sample_ids"] == list(range(12)) and first.meta["params"] == {"n": 12}
    again = run_analysis(MeanLogits(), model, dataset, {"n": "12"})  # URL-style string, same request
    assert again.cached and again.key == first.key and again.link.endswith(f"?run={first.key}")
    np.testing.assert_array_equal(again.arrays["mean"], first.arrays["mean"])
    assert not again.arrays["mean"].flags.writeable
    other = run_analysis(MeanLogits(), model, dataset, {"n": 5})
    assert other.key != first.key and not other.cached
    np.testing.assert_allclose(other.arrays["mean"], _oracle(model, dataset, 5), rtol=1e-5, atol=1e-6)


def test_links_name_the_kind_and_reopen_the_artifact(tabular):
    model, dataset = tabular
    art = run_analysis(MeanLogits(), model, dataset, {"n": 3})
    assert loupe.kind_of(art.key) == "toy" and loupe.kind_of(art.key.upper()) == "toy"
    reopened = loupe.artifact(art.key)
    assert reopened.cached and reopened.info == art.info and reopened.meta["inputs_hash"] == art.meta["inputs_hash"]
    assert loupe.link(art.key) == art.link
    assert [a["key"] for a in Store().list_artifacts(kind="toy", model=model.id)][0] == art.key
    assert Store().list_artifacts(kind="toy", model=model.id, dataset="digits") == []  # its dataset is not digits
    with pytest.raises(RunNotFound, match="no stored result"):
        loupe.kind_of("0" * 64)
    with pytest.raises(InvalidKey):
        loupe.artifact("1; DROP TABLE artifacts")


def test_a_session_model_runs_in_process(tabular, fresh_home):
    """Models registered in a notebook cannot be loaded by a worker: they run here, still cached."""
    _, dataset = tabular
    net = torch.nn.Linear(30, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.5, -2.0]))
    handle = ModelHandle("const_analysis", net, "tabular", (30,), ["a", "b"], weights_hash=weights_hash(net))
    register_model(handle)
    art = run_analysis(MeanLogits(), handle, dataset, {"n": 4})
    assert not art.cached
    np.testing.assert_allclose(art.arrays["mean"], [1.5, -2.0], atol=1e-6)
    assert run_analysis(MeanLogits(), handle, dataset, {"n": 4}).cached


def test_bad_requests_are_refused_before_any_work(tabular):
    model, dataset = tabular
    with pytest.raises(ExplainError, match="works on tabular models, not image"):
        run_analysis(MeanLogits(), get_model("shapes_cnn"), get_dataset("shapes"))
    with pytest.raises(ParamError, match="n must be ≥ 1, got 0"):
        run_analysis(MeanLogits(), model, dataset, {"n": 0})
    with pytest.raises(UnknownExplainer, match="unknown analysis 'nope'; known: .*'surrogate_rules'"):
        loupe.analysis("nope", model.id, dataset.id)


def test_a_lost_artifact_file_is_a_clear_error(tabular):
    model, dataset = tabular
    art = run_analysis(MeanLogits(), model, dataset, {"n": 2})
    store = Store()
    (store.root / art.meta["path"]).unlink()
    with pytest.raises(StoreError, match="missing or unreadable"):
        store.get_artifact(art.key)


def test_the_inputs_digest_sees_every_byte_and_name():
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": [1, 2]}
    assert array_digest(a) == array_digest({"ids": [1, 2], "x": a["x"].copy()})
    assert array_digest(a) != array_digest({**a, "x": a["x"].reshape(3, 2)})
    assert array_digest(a) != array_digest({**a, "x": a["x"].astype(np.float64)})
    changed = a["x"].copy()
    changed[1, 2] += 1e-6
    assert array_digest(a) != array_digest({**a, "x": changed})
    assert array_digest(a) != array_digest({"y": a["x"], "ids": [1, 2]})


def test_analyses_and_explainers_share_one_id_space():
    listed = {e["id"]: e["output"] for e in loupe.explainers()}
    assert all(listed[i] != "attribution" for i in all_analyses())
    assert listed["integrated_gradients"] == "attribution"


def test_an_embedding_of_stored_maps_reads_exactly_the_stored_run(fresh_home):
    """source=attributions embeds the stored maps of one explainer (default params, predicted
    target): refused with a clear message before they are stored, then built from that run's maps,
    predictions and metrics, which it reads from the store and never computes."""
    params = {"source": "attributions", "explainer": "saliency", "samples": "0:24", "n_neighbors": 5}
    with pytest.raises(ExplainError, match="no stored saliency maps for these 24 samples of digits on digits_cnn"):
        loupe.analysis("umap_embedding", "digits_cnn", "digits", params)
    with pytest.raises(ExplainError, match="shap works on tabular models, not image"):
        loupe.analysis("umap_embedding", "digits_cnn", "digits", {**params, "explainer": "shap"})
    run = loupe.explain("digits_cnn", "digits", "0:24", "saliency")
    emb = loupe.analysis("umap_embedding", "digits_cnn", "digits", params)
    assert not emb.cached and emb.info["source"] == "attributions" and emb.info["feature_dim"] == 32 * 32
    assert emb.arrays["points"].shape == (24, 2) and np.isfinite(emb.arrays["points"]).all()
    np.testing.assert_array_equal(emb.arrays["predictions"], run.predictions)
    np.testing.assert_allclose(emb.arrays["confidences"], run.confidences)
    np.testing.assert_allclose(emb.arrays["metric_deletion_auc"], [m["deletion_auc"] for m in run.metrics])
    np.testing.assert_array_equal(emb.arrays["labels"], run.labels)
