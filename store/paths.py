"""Filesystem locations Loupe uses, all derived from ``LOUPE_HOME``.

``LOUPE_HOME`` defaults to ``~/.cache/loupe``; generated datasets, the manifest and (later) the DuckDB
file live under it, so deleting that folder resets Loupe without touching the code.
"""
from __future__ import annotations

import os
from pathlib import Path


def loupe_home() -> Path:
    """The cache directory (created on first use)."""
    home = Path(os.environ.get("LOUPE_HOME", Path.home() / ".cache" / "loupe")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def manifest_path() -> Path:
    """The user manifest: ``LOUPE_MANIFEST`` or ``$LOUPE_HOME/manifest.toml``."""
    env = os.environ.get("LOUPE_MANIFEST")
    return Path(env).expanduser() if env else loupe_home() / "manifest.toml"


def dataset_cache() -> Path:
    """Where generated built-in datasets are written."""
    path = loupe_home() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path
