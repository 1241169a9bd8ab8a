"""Share links: every stored result opens at ``<base>/<page>?run=<key>`` (plus an optional view),
where the page is the one that shows its kind (:data:`PAGE_OF_KIND`); ``<base>/?run=<key>`` works
too (the home page routes it by the stored kind), but costs the browser one page switch more.

The base is ``LOUPE_BASE_URL`` (default ``http://localhost:8501``, Streamlit's default port). The
``run`` query parameter comes back from the browser untrusted, so :func:`parse_run_param` validates
it before the store sees it.
"""
from __future__ import annotations

import os
from urllib.parse import urlencode

from store.keys import check_key

DEFAULT_BASE_URL = "http://localhost:8501"
PAGE_OF_KIND = {"attribution": "explain", "embedding": "embeddings", "rules": "rules", "pathways": "pathways",
                "sanity": "sanity"}
"""Result kind -> the URL path of the app page that shows a stored result of that kind."""


def base_url() -> str:
    """``LOUPE_BASE_URL`` without its trailing slash, or the default."""
    return (os.environ.get("LOUPE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def run_link(key: str, view: str | None = None, kind: str = "attribution") -> str:
    """The permanent URL of the stored result ``key`` (validated) of ``kind``, opening ``view`` when
    given; a kind no page shows links to the home page, which says so."""
    query = {"run": check_key(key)}
    if view:
        query["view"] = view
    return f"{base_url()}/{PAGE_OF_KIND.get(kind, '')}?{urlencode(query)}"


def parse_run_param(value: object) -> str:
    """The run key from a ``?run=`` value (surrounding spaces and upper case tolerated); raises
    :class:`store.keys.InvalidKey` for anything else, including a missing value."""
    text = value.strip().lower() if isinstance(value, str) else value
    return check_key(text)
