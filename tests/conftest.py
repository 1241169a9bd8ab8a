"""Test-wide isolation: every test session gets its own LOUPE_HOME (cache, manifest, database) so
nothing a developer has in ~/.cache/loupe leaks into the tests, and no test writes there."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def _isolated_loupe_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("loupe_home")
    saved = {k: os.environ.get(k) for k in ("LOUPE_HOME", "LOUPE_MANIFEST", "LOUPE_SCHEDULER")}
    os.environ["LOUPE_HOME"] = str(home)
    os.environ.pop("LOUPE_MANIFEST", None)
    os.environ.pop("LOUPE_SCHEDULER", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
