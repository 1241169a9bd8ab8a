"""The data layer's error type, apart from ``data.base`` so that every data module can raise it."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset could not be loaded or a request against it is invalid; the message says why."""
