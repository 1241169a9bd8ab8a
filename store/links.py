"""Share links: every stored run opens at ``<base>/?run=<key>`` (plus an optional view).

The base is ``LOUPE_BASE_URL`` (default ``http://localhost:8501``, Streamlit's default port). The
``run`` query parameter comes back from the browser untrusted, so :func:`parse_run_param` validates
it before the store sees it.
"""
from __future__ import annotations

import os
from urllib.parse import urlencode

from store.keys import check_key

DEFAULT_BASE_URL = "http://localhost:8501"


def base_url() -> str:
    """``LOUPE_BASE_URL`` without its trailing slash, or the default."""
    return (os.environ.get("LOUPE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def run_link(key: str, view: str | None = None) -> str:
    """The permanent URL of the run ``key`` (validated), opening ``view`` when given."""
    query = {"run": check_key(key)}
    if view:
        query["view"] = view
    return f"{base_url()}/?{urlencode(query)}"


def parse_run_param(value: object) -> str:
    """The run key from a ``?run=`` value (surrounding spaces and upper case tolerated); raises
    :class:`store.keys.InvalidKey` for anything else, including a missing value."""
    text = value.strip().lower() if isinstance(value, str) else value
    return check_key(text)
