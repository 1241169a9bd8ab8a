"""How a job's samples reach the worker that runs it: never inside the Dask task graph.

* **By reference** (:class:`SampleRef`): when the worker can open the dataset itself (a built-in,
  or a manifest dataset on the embedded cluster, whose workers share this machine's files), the job
  carries the dataset's id or manifest entry, the sample ids and their content hash. The worker
  opens the dataset lazily (cached per process), reads only those samples, and checks their content
  hash, so a file edited after the request was made fails clearly instead of giving a result stored
  under the old content's key.
* **Shipped**: otherwise (datasets registered in-process; manifest datasets when the workers are
  another machine's, ``LOUPE_SCHEDULER``) the submitter reads the samples and sends them with
  ``client.scatter``; the task receives futures, which Dask resolves on the worker.

Either way the graph holds ids and small values, so Dask never warns about a large graph.
:func:`outbound` prepares a job's values in the submitting process, :func:`inbound` turns them back
into arrays on the worker.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from data.base import Dataset, DatasetError, Samples

SHIP_BYTES = 1 << 20
"""Arrays at least this large travel by ``client.scatter``, not inside the task graph."""


@dataclass(frozen=True)
class DatasetRef:
    """How a worker opens a dataset: a built-in by id, a manifest dataset by its entry."""

    dataset_id: str
    entry: Any = None

    def open(self) -> Dataset:
        """The dataset in this process (cached by the data registry)."""
        from data.registry import get_dataset, open_entry

        return open_entry(self.entry) if self.entry is not None else get_dataset(self.dataset_id)


@dataclass(frozen=True)
class SampleRef:
    """Evaluation-split samples a worker reads itself, with the content hash they must have."""

    dataset: DatasetRef
    ids: tuple[int, ...]
    content_hash: str

    def open(self) -> Dataset:
        """The dataset, after checking that these samples still have the submitter's content."""
        ds = self.dataset.open()
        found = ds.content_hash(self.ids)
        if found != self.content_hash:
            raise DatasetError(
                f"dataset {self.dataset.dataset_id!r}: samples {self.ids[0]}…{self.ids[-1]} on the worker differ "
                "from the ones the request was made for (files changed since?); run the request again"
            )
        return ds

    def rows(self) -> Samples:
        """The samples, read when indexed."""
        return Samples(self.open(), self.ids)


def dataset_ref(ds: Dataset) -> DatasetRef | None:
    """A reference a worker can open ``ds`` by, or None when the samples must be shipped."""
    from data.registry import origin

    found = origin(ds)
    if found is None:
        return None
    kind, entry = found
    if kind == "manifest" and os.environ.get("LOUPE_SCHEDULER"):
        return None  # another machine's workers may not see this machine's files
    return DatasetRef(ds.id, entry)


def sample_ref(ds: Dataset, ids: tuple[int, ...]) -> SampleRef | None:
    """``ids`` of ``ds`` by reference, or None when the worker cannot open ``ds``."""
    ref = dataset_ref(ds)
    return None if ref is None else SampleRef(ref, ids, ds.content_hash(ids))


def _ship(client: Any, value: Any) -> Any:
    """A large array scattered to the cluster (a future), anything else as it is."""
    if client is not None and isinstance(value, np.ndarray) and value.nbytes >= SHIP_BYTES:
        return client.scatter(value, hash=True)
    return value


def outbound(values: Mapping[str, Any], client: Any = None) -> dict[str, Any]:
    """A job's named values ready to send: :class:`~data.base.Samples` become a :class:`SampleRef`
    when the worker can read them, else their arrays; large arrays are scattered (``client`` None:
    the job runs in this process, nothing is sent)."""
    out = {}
    for name, value in values.items():
        if isinstance(value, Samples) and client is not None:
            ref = sample_ref(value.dataset, value.ids)
            value = ref if ref is not None else np.asarray(value)
        out[name] = _ship(client, value)
    return out


def inbound(values: Mapping[str, Any]) -> dict[str, Any]:
    """On the worker: every :class:`SampleRef` as the samples it names (read when indexed)."""
    return {name: value.rows() if isinstance(value, SampleRef) else value for name, value in values.items()}


def job_samples(ds: Dataset, ids: tuple[int, ...], client: Any = None) -> dict[str, Any]:
    """What an explanation job reads: its samples by reference, or their inputs, masks and the
    dataset's background (reference samples) as arrays, scattered when a ``client`` is given."""
    ref = sample_ref(ds, ids) if client is not None else None
    if ref is not None:
        return {"samples": ref}
    arrays = {"x": ds.inputs(ids).numpy(), "masks": ds.masks(ids), "background": ds.background(32).numpy()}
    return {name: _ship(client, value) for name, value in arrays.items()}


def job_arrays(values: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """On the worker: (inputs, masks, background) of an explanation job's samples."""
    ref = values.get("samples")
    if ref is None:
        return values["x"], values["masks"], values["background"]
    ds = ref.open()
    return ds.inputs(ref.ids).numpy(), ds.masks(ref.ids), ds.background(32).numpy()
