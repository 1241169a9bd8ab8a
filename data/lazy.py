"""Sample arrays that read their rows on access, so that opening a dataset costs nothing per sample.

A :class:`Rows` looks like a read-only N×… float32 numpy array to the code that indexes it
(``len``, ``shape``, ``dtype``, ``x[i]``, ``x[a:b]``, ``x[[i, j]]``, ``np.asarray(x)``), but produces
the rows only when they are indexed: image files are decoded then (``data.images.ImageFiles``), a
memory-mapped ``.npz`` member is paged in (:class:`ArrayRows`). :class:`data.base.Split` accepts one
wherever it takes an array, and ``take`` gives a row subset (a seeded train/test split) without
reading anything.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np


class Rows(ABC):
    """A lazily read N×… float32 array (see the module docstring)."""

    dtype = np.dtype(np.float32)

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """(N, *row shape), known without reading a row."""

    @abstractmethod
    def read(self, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` (int64, validated), stacked as float32."""

    def digests(self, positions: np.ndarray) -> list[bytes] | None:
        """Per row, a digest of the bytes it is read from (a file's bytes and how they are decoded),
        so content hashes need no decoding; None when the rows are plain array values (then the
        content hash is taken over the values, as for in-memory arrays)."""
        return None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _positions(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key]
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean index of shape {arr.shape} for {n} rows")
            return np.flatnonzero(arr).astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise IndexError(f"rows are indexed by integers, slices or boolean masks, got {arr.dtype}")
        positions = arr.astype(np.int64).reshape(-1)
        bad = positions[(positions < -n) | (positions >= n)]
        if bad.size:
            raise IndexError(f"row {int(bad[0])} is out of range for {n} rows")
        return np.where(positions < 0, positions + n, positions)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # x[rows, ...]: read the rows, then index the rest in memory
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            return self.read(self._positions([key]))[0]
        positions = self._positions(key)
        if not positions.size:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        return self.read(positions)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def take(self, positions: np.ndarray) -> Rows:
        """The rows at ``positions`` as a new lazy array (nothing is read)."""
        return Subset(self, self._positions(positions))

    def stats(self) -> dict[str, int]:
        """Counters of the work done so far (``decoded``: rows decoded from files)."""
        return {}


class Subset(Rows):
    """Some rows of another :class:`Rows`, in the given order."""

    def __init__(self, base: Rows, positions: np.ndarray) -> None:
        self.base, self.positions = base, positions

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.positions), *self.base.shape[1:])

    def read(self, positions: np.ndarray) -> np.ndarray:
        return self.base.read(self.positions[positions])

    def digests(self, positions: np.ndarray) -> list[bytes] | None:
        return self.base.digests(self.positions[positions])

    def take(self, positions: np.ndarray) -> Rows:
        return Subset(self.base, self.positions[self._positions(positions)])

    def stats(self) -> dict[str, int]:
        return self.base.stats()


class ArrayRows(Rows):
    """Rows of an array that is not in memory (a memory-mapped ``.npz`` member), converted to
    float32 on access; ``check`` validates every block read (e.g. finite values) and raises a
    DatasetError naming the first bad row."""

    def __init__(self, array: np.ndarray, check: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
        self.array, self.check = array, check

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def read(self, positions: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.array[positions], dtype=np.float32)
        if self.check is not None:
            self.check(rows, positions)
        return rows
