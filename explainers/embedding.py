"""UMAP embeddings of a model's view of a dataset slice (McInnes, Healy, Melville, "UMAP: Uniform
Manifold Approximation and Projection for Dimension Reduction", arXiv 1802.03426, 2018).

Two sources of high-dimensional points, one per sample:

* ``activations``: the penultimate activations, i.e. the input of the model's last ``nn.Linear``
  (the representation the classifier separates), computed on the worker with the predictions;
* ``attributions``: the stored attribution maps of one explainer (default parameters, predicted
  target), each scaled by its largest |value| so that maps compare by shape, not magnitude.

The 2-D layout is computed on the worker. Following notes/stack.md §5, the exact k-nearest
neighbours come from scikit-learn and reach UMAP as ``precomputed_knn`` (UMAP's own exact kNN
below 4,096 points loops in Python over all pairs). The layout is seeded (``random_state``), so a
request reproduces its points; the store caches the artifact, and umap is imported only here, on
the worker, never on the app's import path.

The artifact (kind ``embedding``): ``points`` N×2, ``labels``, ``predictions``, ``confidences``
and, for attributions, one ``metric_<name>`` array per numeric metric of the stored run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from data.base import Dataset, parse_samples
from data.lazy import Rows
from explainers._common import classifier_layer, hooks
from explainers.base import Analysis, ExplainError, Params, Prepared, Spec, param
from model_registry.base import ModelHandle

SOURCES = ("activations", "attributions")


@dataclass(frozen=True)
class EmbeddingParams(Params):
    source: str = param("activations", choices=SOURCES,
                        help="penultimate activations of the model, or the stored maps of an explainer")
    explainer: str = param("integrated_gradients",
                           help="for source = attributions: the explainer whose stored maps (default parameters) are embedded")
    samples: str = param("0:200", help="the dataset slice: 'a:b[:step]', '1,4,7' or 'all'")
    n_neighbors: int = param(15, low=2, high=200, help="UMAP neighbourhood size: larger keeps more global structure",
                             group="UMAP")
    min_dist: float = param(0.1, low=0.0, high=1.0, help="UMAP minimum distance between embedded points",
                            group="UMAP")
    seed: int = param(0, low=0, high=2**31 - 1, help="UMAP random_state (a seeded layout is reproducible)",
                      group="UMAP")


def penultimate(model: ModelHandle, x: torch.Tensor | np.ndarray | Rows,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N×d penultimate activations, N×classes probabilities) of ``x`` on the model's device; lazy
    rows (``data.lazy.Rows``) are read one batch at a time."""
    layer = classifier_layer(model.module)
    if layer is None:
        raise ExplainError(f"model {model.id!r} has no nn.Linear classifier layer whose input could be embedded")
    seen: list[torch.Tensor] = []
    with hooks([layer.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().flatten(1).cpu()))]):
        logits = torch.cat([model.logits(torch.as_tensor(np.asarray(x[s:s + batch_size])), batch_size=batch_size)
                            for s in range(0, len(x), batch_size)])
    return torch.cat(seen).float().numpy(), torch.softmax(logits, dim=1).numpy()


def umap_layout(features: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """N×2 UMAP coordinates from exact Euclidean kNN (scikit-learn) passed as ``precomputed_knn``."""
    import warnings

    import umap
    from sklearn.neighbors import NearestNeighbors

    dists, index = NearestNeighbors(n_neighbors=n_neighbors).fit(features).kneighbors(features)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                        precomputed_knn=(index, dists.astype(np.float32)), transform_mode="embedding")
    with warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state": the seeded layout is single-threaded by design
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return reducer.fit_transform(features).astype(np.float32)


class UmapEmbedding(Analysis[EmbeddingParams]):
    """UMAP of penultimate activations or of attribution maps (see the module docstring)."""

    spec = Spec(
        id="umap_embedding",
        title="UMAP embedding",
        paper="McInnes, Healy, Melville. UMAP: Uniform Manifold Approximation and Projection for Dimension "
              "Reduction. arXiv 1802.03426, 2018",
        modalities=("image", "tabular"),
        needs_gradients=False,
        output="embedding",
        description="2-D map of the samples as the model (penultimate activations) or an explainer (maps) sees them.",
    )
    Params = EmbeddingParams

    def prepare(self, model: ModelHandle, dataset: Dataset, params: EmbeddingParams) -> Prepared:
        ids = parse_samples(params.samples, len(dataset))
        if len(ids) <= params.n_neighbors:
            raise ExplainError(f"an embedding needs more samples ({len(ids)}) than n_neighbors ({params.n_neighbors})")
        labels = dataset.model_labels(model.classes, ids)
        if params.source == "activations":
            if not isinstance(model.module, nn.Module) or classifier_layer(model.module) is None:
                raise ExplainError(f"model {model.id!r} has no nn.Linear classifier layer whose input could be embedded")
            return Prepared(ids, {"x": dataset.samples(ids), "labels": labels})
        return Prepared(ids, {"labels": labels, **self._stored_maps(model, dataset, ids, params.explainer)})

    @staticmethod
    def _stored_maps(model: ModelHandle, dataset: Dataset, ids: list[int], explainer_id: str) -> dict[str, np.ndarray]:
        """The stored run of ``explainer_id`` (default params, predicted target) over ``ids``: maps,
        predictions and metrics, read from the store (one lookup; nothing is computed here)."""
        from explainers.registry import get_explainer
        from explainers.runner import check_compatible, run_fields
        from store.keys import RunNotFound, run_key
        from store.runs import Store

        explainer = get_explainer(explainer_id)
        reason = explainer.unsupported_reason(model)
        if reason:
            raise ExplainError(reason)
        check_compatible(model, dataset)
        dataset.check_ids(ids)
        fields = run_fields(model, dataset, ids, explainer.spec.id, explainer.Params().to_dict(), "predicted")
        try:
            items = Store().get_run(run_key(**fields)).items
        except RunNotFound:
            raise ExplainError(f"no stored {explainer_id} maps for these {len(ids)} samples of {dataset.id} on "
                               f"{model.id}; explain them first (the Embeddings page does this for you)") from None
        metrics = {f"metric_{name}": np.array([rec.metrics.get(name) for rec in items], dtype=np.float64)
                   for name, value in items[0].metrics.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        return {"maps": np.stack([np.asarray(rec.map) for rec in items]),
                "predictions": np.array([rec.prediction for rec in items], dtype=np.int64),
                "confidences": np.array([rec.confidence for rec in items], dtype=np.float32), **metrics}

    def compute(self, model: ModelHandle, params: EmbeddingParams, inputs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {k: v for k, v in inputs.items() if k not in ("x", "maps")}
        if params.source == "activations":
            features, probs = penultimate(model, inputs["x"])
            arrays.update(predictions=probs.argmax(1), confidences=probs.max(1))
        else:
            flat = np.asarray(inputs["maps"], dtype=np.float32).reshape(len(inputs["maps"]), -1)
            features = flat / np.maximum(np.abs(flat).max(axis=1, keepdims=True), 1e-12)
        arrays["points"] = umap_layout(features, params.n_neighbors, params.min_dist, params.seed)
        info = {"source": params.source, "explainer": params.explainer if params.source == "attributions" else None,
                "feature_dim": int(features.shape[1]), "classes": list(model.classes)}
        return info, arrays


ANALYSES = (UmapEmbedding,)
