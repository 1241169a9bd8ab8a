"""Test-wide isolation: every test session gets its own LOUPE_HOME (cache, manifest, database) so
nothing a developer has in ~/.cache/loupe leaks into the tests, and no test writes there."""
from __future__ import annotations

import os
import socket
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


def _new_home(path: Path, session_home: Path) -> Path:
    """An empty LOUPE_HOME at ``path`` that shares the session's generated built-in datasets (they
    are deterministic and read-only once written, so nothing is generated twice)."""
    path.mkdir(parents=True)
    (session_home / "datasets").mkdir(exist_ok=True)
    (path / "datasets").symlink_to(session_home / "datasets", target_is_directory=True)
    return path


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_loupe_home: Path) -> Path:
    """An empty store (database, maps, batches, manifest) for a test whose assertions depend on what
    is stored: a first request that must compute, counts of computed and reused samples, the runs
    of a model. Without it such a test passes or fails with the order the suite runs in."""
    home = _new_home(tmp_path / "loupe_home", _isolated_loupe_home)
    monkeypatch.setenv("LOUPE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory, _isolated_loupe_home: Path):
    """:func:`fresh_home` for a whole test module (``pytestmark = pytest.mark.usefixtures("module_home")``),
    for modules whose module-scoped fixtures store a result that several tests then read."""
    home = _new_home(tmp_path_factory.mktemp("module_home") / "loupe_home", _isolated_loupe_home)
    saved = os.environ["LOUPE_HOME"]
    os.environ["LOUPE_HOME"] = str(home)
    yield home
    os.environ["LOUPE_HOME"] = saved


@pytest.fixture
def fresh_cluster():
    """For a test that changes what the workers see (environment, sys.path, ``__main__``, the
    scheduler): the shared embedded cluster is shut down before it, so its workers start under the
    test's settings, and its own cluster is shut down after it, so no later test runs on it."""
    from worker import cluster

    cluster.shutdown()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def refused_address():
    """A ``tcp://127.0.0.1:PORT`` that refuses connections for the whole test: the port stays bound
    (not listening) by this fixture, so no other process can take it between lookup and use, and a
    connect cannot pick it as its own source port (Linux's TCP self-connect)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{held.getsockname()[1]}"
