"""The Explain page's state as a URL: what is selected (model, dataset, samples, explainers, their
params, target) encoded in query parameters and back, a selection rebuilt from a stored run, and
links into the page from other pages. Pure; tested without Streamlit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlencode

from views.params import from_query, to_query

EXPLAIN_PATH = "explain"
"""The Explain page's url_path in app.py."""
TARGETS = ("predicted", "label")


class SelectionError(ValueError):
    """A query parameter of the Explain page cannot be read; the message names it."""


def _ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SelectionError(f"samples must be comma-separated sample ids such as 3,7; got {text!r}") from None


@dataclass(frozen=True)
class Selection:
    """What the Explain page shows. ``params`` maps an explainer id to its non-default values."""

    model: str
    dataset: str
    samples: tuple[int, ...] = ()
    explainers: tuple[str, ...] = ()
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    target: str = "predicted"

    @classmethod
    def from_query(cls, query: Mapping[str, str], default_model: str, default_dataset: str) -> "Selection":
        """The selection in ``query`` (missing parts take the defaults); raises SelectionError."""
        explainers = tuple(e for e in query.get("explainers", "").split(",") if e)
        target = query.get("target", "predicted")
        if target not in TARGETS and not target.isdigit():
            raise SelectionError(f"target must be 'predicted', 'label' or a class index; got {target!r}")
        model = query.get("model", default_model)
        return cls(
            model=model,
            dataset=query.get("dataset", default_dataset if model == default_model else ""),
            samples=_ids(query.get("samples", "")),
            explainers=explainers,
            params={e: from_query(e, query) for e in explainers},
            target=target,
        )

    @classmethod
    def from_run(cls, provenance: Mapping[str, Any], defaults: Mapping[str, Any]) -> "Selection":
        """The selection that reproduces a stored run (``defaults``: the explainer's default params,
        so only changed values go into the URL)."""
        explainer = provenance["explainer_id"]
        params = {k: v for k, v in provenance["params"].items() if defaults.get(k) != v}
        return cls(provenance["model_id"], provenance["dataset_id"], tuple(provenance["sample_ids"]),
                   (explainer,), {explainer: params}, str(provenance.get("target", "predicted")))

    def to_query(self, schemas: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, str]:
        """Query parameters for this selection; ``schemas`` (explainer id -> Params.schema()) drop
        parameters at their default."""
        query = {"model": self.model, "dataset": self.dataset}
        if self.samples:
            query["samples"] = ",".join(str(i) for i in self.samples)
        if self.explainers:
            query["explainers"] = ",".join(self.explainers)
        if self.target != "predicted":
            query["target"] = self.target
        for explainer in self.explainers:
            query.update(to_query(explainer, self.params.get(explainer, {}), schemas.get(explainer, [])))
        return query


def explain_link(base: str, model: str, dataset: str, samples: Sequence[int], explainers: Sequence[str] = ()) -> str:
    """An absolute link that opens these samples on the Explain page (``base``: the app's URL)."""
    query = {"model": model, "dataset": dataset, "samples": ",".join(str(int(i)) for i in samples)}
    if explainers:
        query["explainers"] = ",".join(explainers)
    return f"{base.rstrip('/')}/{EXPLAIN_PATH}?{urlencode(query)}"


def caption(sample_id: int, classes: Sequence[str], label: int, prediction: int, confidence: float) -> str:
    """A gallery thumbnail's caption: id, label, prediction and confidence (✗ marks a mistake);
    ``classes`` are the model's, and a label of -1 (a class the model does not have) shows as "?"."""
    if label < 0:
        return f"#{sample_id} · ? → {classes[prediction]} ({confidence:.2f})"
    mark = "" if label == prediction else " ✗"
    return f"#{sample_id} · {classes[label]} → {classes[prediction]} ({confidence:.2f}){mark}"


@dataclass(frozen=True)
class GalleryFilter:
    """Which samples the gallery shows: only the model's mistakes, only some labels (indices into
    the dataset's classes; empty: all), only a range of the model's confidence."""

    misclassified: bool = False
    labels: tuple[int, ...] = ()
    confidence: tuple[float, float] = (0.0, 1.0)

    @property
    def active(self) -> bool:
        return self.misclassified or bool(self.labels) or self.confidence != (0.0, 1.0)

    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether a prediction row (label, prediction, confidence) passes."""
        low, high = self.confidence
        return ((not self.misclassified or row["label"] != row["prediction"])
                and (not self.labels or row["label"] in self.labels) and low <= row["confidence"] <= high)


def gallery_page(predict: Callable[[tuple[int, ...]], list[dict]], start: int, n: int, chosen: GalleryFilter,
                 size: int = 12, chunk: int = 96, limit: int = 960) -> tuple[list[dict], int]:
    """The next ``size`` prediction rows from sample ``start`` on (of ``n``) that ``chosen`` keeps,
    and where the scan stopped (the next page's start). ``predict(ids)`` gives the rows of a chunk
    of ids (the page's cached worker call); at most ``limit`` samples are scanned per page, so a
    rare filter costs a bounded number of model passes and the user pages on."""
    rows: list[dict] = []
    position, end = start, min(n, start + (limit if chosen.active else size))
    while position < end and len(rows) < size:
        ids = tuple(range(position, min(position + (chunk if chosen.active else size), end)))
        for row in predict(ids):
            position = row["sample_id"] + 1
            if chosen.keeps(row):
                rows.append(row)
                if len(rows) == size:
                    break
    return rows, position
