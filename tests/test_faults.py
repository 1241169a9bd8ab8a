"""Faults with real components (issue #9): a Dask worker killed mid-batch, a read-only database, a
full disk, and an unreachable or malformed scheduler address. Each must give a clear user error,
keep what was stored before, store no partial rows, and let a rerun resume.

The submitting process killed mid-batch (``python -m loupe explain`` killed with SIGKILL, rerun
resumes without duplicates) is tests/test_worker.py::test_cli_batch_killed_mid_way_resumes_without_duplicates_or_gaps
(slow).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

import loupe
from data.registry import get_dataset
from model_registry.registry import get_model
from store.runs import ItemRecord, Store
from worker import cluster
from worker.batch import make_request
from worker.dispatch import JobFailed

ROOT = Path(__file__).resolve().parents[1]


def _store_run(path: Path) -> tuple[str, np.ndarray]:
    """A run of 3 hand-built breast_cancer maps stored in the database at ``path``."""
    maps = np.random.default_rng(1).normal(size=(3, 30)).astype(np.float32)
    meta = {"model_id": "breast_cancer_mlp", "weights_hash": "1" * 64, "dataset_id": "breast_cancer",
            "explainer_id": "saliency", "explainer_version": "1", "params": {"abs": True}}
    keys = [hashlib.sha256(f"faults-{i}".encode()).hexdigest() for i in range(3)]
    store = Store(path)
    store.put_items(meta, [ItemRecord(k, i, 0, 0, 0, 0.5, map=maps[i]) for i, k in enumerate(keys)])
    key = store.put_run({**meta, "sample_ids": [0, 1, 2], "content_hash": "c" * 64, "target": "predicted"}, keys)
    return key, maps


_CLI = """
import contextlib, io, json, sys
import loupe

def cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        code = loupe.main(list(argv))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}
"""


def _run_python(script: str, home: Path, prefix: list[str] | None = None) -> dict:
    """Run ``script`` after :data:`_CLI` in a fresh interpreter with LOUPE_HOME=home; it prints one
    JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_HOME": str(home)}
    env.pop("LOUPE_MANIFEST", None)
    source = _CLI + textwrap.dedent(script)
    done = subprocess.run([*(prefix or []), sys.executable, "-c", source], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])




# -- a worker killed mid-batch ------------------------------------------------------------------
def test_worker_killed_mid_batch_keeps_whole_chunks_and_a_rerun_resumes(tmp_path, monkeypatch, fresh_home):
    from fault_models import MARK, build

    flag = tmp_path / "kill.flag"
    torch.save(build(str(flag)).state_dict(), tmp_path / "killer.pt")
    x = np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
    x[40, 0] = MARK  # in the third chunk of 16
    np.savez(tmp_path / "rows.npz", x=x, y=np.arange(48) % 2)
    (tmp_path / "manifest.toml").write_text(f"""
[[model]]
id = "killer"
kind = "state_dict"
path = "killer.pt"
factory = "fault_models:build"
factory_kwargs = {{ flag = "{flag}" }}
task = "tabular"
input_shape = [4]
classes = ["a", "b"]

[[dataset]]
id = "rows48"
kind = "npz"
path = "rows.npz"
""")
    monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
    keys = make_request(get_model("killer"), get_dataset("rows48"), range(48), "input_x_gradient").item_keys()
    store = Store()
    flag.write_text("die")
    # the dead worker held the marked chunk and possibly the one queued before it: either may report it
    with pytest.raises(JobFailed, match=r"the worker running samples (16…31|32…47) .* died .* run the same request again"):
        loupe.explain("killer", "rows48", "all", "input_x_gradient")
    kept = store.lookup(keys)
    assert sorted(rec.sample_id for rec in kept.values()) == list(range(len(kept)))
    assert len(kept) in (16, 32), f"whole chunks before the killed one are kept, got {len(kept)} items"
    for rec in kept.values():  # complete rows: map file, prediction, metrics
        assert rec.map.shape == (4,) and np.isfinite(rec.map).all() and rec.metrics and rec.prediction in (0, 1)
    assert loupe.runs(model="killer") == []  # the run is recorded only when every sample is stored
    assert not list(store.root.rglob("*.tmp"))
    flag.unlink()
    res = loupe.explain("killer", "rows48", "all", "input_x_gradient")
    assert res.provenance["reused"] == len(kept) and res.provenance["computed"] == 48 - len(kept)
    assert res.sample_ids == list(range(48))
    for rec in kept.values():  # the kept rows are the ones the result serves
        np.testing.assert_array_equal(res.attributions[rec.sample_id], rec.map)
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        items = con.execute("SELECT count(*), count(DISTINCT item_key) FROM items WHERE item_key IN "
                            "(SELECT unnest(?::VARCHAR[]))", [keys]).fetchone()
        runs = con.execute("SELECT count(*) FROM runs WHERE model_id = 'killer'").fetchone()[0]
    finally:
        con.close()
    assert items == (48, 48) and runs == 1


# -- the database read-only -----------------------------------------------------------------------
def _without_permission_override() -> list[str]:
    """Root ignores permission bits, so as root the subprocess runs in a new user namespace
    (``unshare --user``): it still owns the files but can no longer override their modes."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and `unshare --user` (to make file modes bind) is not available")
    return [unshare, "--user"]


def test_read_only_database_serves_stored_runs_and_refuses_new_ones(tmp_path):
    home = tmp_path / "home"
    key, maps = _store_run(home / "loupe.duckdb")
    db_file = home / "loupe.duckdb"
    before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    db_file.chmod(0o444)
    home.chmod(0o555)  # a read-only volume: neither the file nor its folder can be written
    try:
        out = _run_python(f"""
        link = cli("link", "--run", "{key}")
        export = cli("export", "--run", "{key}", "--csv", "{tmp_path / 'out.csv'}")
        explain = cli("explain", "--model", "breast_cancer_mlp", "--dataset", "breast_cancer", "--samples", "0:2",
                      "--explainer", "saliency")
        print(json.dumps({{"link": link, "export": export, "explain": explain}}))
        """, home, _without_permission_override())
    finally:
        home.chmod(0o755)
        db_file.chmod(0o644)
    assert out["link"]["code"] == 0 and key in out["link"]["out"]
    assert out["export"]["code"] == 0 and len((tmp_path / "out.csv").read_text().splitlines()) == 4
    err = out["explain"]["err"]
    assert out["explain"]["code"] == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: the Loupe database {db_file} is read-only") and "set LOUPE_HOME" in err
    assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before
    np.testing.assert_array_equal(Store(db_file).get_run(key).items[1].map, maps[1])


# -- a full disk ----------------------------------------------------------------------------------
def test_full_disk_is_a_clear_error_and_a_rerun_resumes_when_space_is_back(tmp_path):
    """The disk fills up (RLIMIT_FSIZE: no file may grow past 4 KB, so every write to the 1 MB
    database and to a 16 KB map fails with EFBIG as a full disk's ENOSPC would) between two batches."""
    home = tmp_path / "home"
    out = _run_python("""
    import resource
    import numpy as np, torch
    from data.base import Dataset, Split
    from data.registry import register_dataset
    from model_registry.base import ModelHandle
    from model_registry.registry import register_model
    from store.keys import digest
    from store.runs import ItemRecord, Store

    torch.manual_seed(0)
    register_model(ModelHandle("tiny", torch.nn.Linear(4, 2).eval(), "tabular", (4,), ["a", "b"]))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    register_dataset(Dataset("rows", "tabular", ["a", "b"], Split(x, np.array([0, 1] * 4))))
    args = ["explain", "--model", "tiny", "--dataset", "rows", "--explainer", "saliency", "--samples"]
    first = cli(*args, "0:4")
    store = Store()
    n_files = sum(1 for _ in store.root.rglob("*"))
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    full = cli(*args, "4:8")
    meta = dict(model_id="m", weights_hash="w", dataset_id="d", explainer_id="e", explainer_version="1", params={})
    try:
        store.put_items(meta, [ItemRecord(digest("big"), 0, map=np.ones((64, 64), np.float32))])
        big = "stored"
    except Exception as err:
        big = f"{type(err).__name__}: {err}"
    tmp_files = [str(p) for p in store.root.rglob("*.tmp")]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    again = cli(*args, "4:8")
    reopened = cli("runs", "--model", "tiny", "--json")
    print(json.dumps({"first": first, "full": full, "big": big, "tmp_files": tmp_files, "again": again,
                      "runs": json.loads(reopened["out"]), "n_files": n_files}))
    """, home)
    assert out["first"]["code"] == 0 and "computed 4" in out["first"]["out"]
    err = out["full"]["err"]
    assert out["full"]["code"] == 2 and err.count("\n") == 1, err
    assert err.startswith("error: cannot save to the Loupe database") and "disk is full or a file-size limit" in err
    assert out["big"].startswith("StoreFull: cannot save") and "File too large" in out["big"]
    assert out["tmp_files"] == []
    assert out["again"]["code"] == 0, out["again"]  # what the full disk kept in the WAL is reused
    assert sorted(r["sample_ids"] for r in out["runs"]) == [[0, 1, 2, 3], [4, 5, 6, 7]]


# -- the scheduler ----------------------------------------------------------------------------------
def test_scheduler_address_malformed_unreachable_and_the_allowed_fallback(monkeypatch, capsys, fresh_home,
                                                                         fresh_cluster, refused_address):
    """A malformed LOUPE_SCHEDULER is an error even with the fallback allowed; an unreachable one is
    an error without LOUPE_ALLOW_EMBEDDED_FALLBACK (tests/test_worker.py checks the CLI message),
    and with it a warning and the work runs on the embedded cluster (this test's own)."""
    monkeypatch.setenv("LOUPE_SCHEDULER", "gpu-box")
    monkeypatch.setenv("LOUPE_ALLOW_EMBEDDED_FALLBACK", "1")
    code = loupe.main(["explain", "--model", "breast_cancer_mlp", "--dataset", "breast_cancer",
                       "--samples", "100:102", "--explainer", "saliency"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "error: LOUPE_SCHEDULER='gpu-box' is not a Dask scheduler address" in err and "tcp://HOST:8786" in err

    address = refused_address
    monkeypatch.setenv("LOUPE_SCHEDULER", address)
    monkeypatch.setenv("LOUPE_SCHEDULER_TIMEOUT", "2")
    monkeypatch.delenv("LOUPE_ALLOW_EMBEDDED_FALLBACK")
    with pytest.raises(cluster.ClusterError, match=f"cannot reach the Dask scheduler at {address}"):
        cluster.get_client()
    monkeypatch.setenv("LOUPE_ALLOW_EMBEDDED_FALLBACK", "1")
    with pytest.warns(RuntimeWarning, match=f"cannot reach the Dask scheduler at {address}.*embedded cluster"):
        res = loupe.explain("breast_cancer_mlp", "breast_cancer", "110:112", "saliency")
    assert res.provenance["computed"] == 2 and np.isfinite(res.attributions).all()
    assert cluster.get_client().scheduler.address != address


@contextlib.contextmanager
def _listening(answer: bool):
    """A TCP server on a free port that accepts connections and then never says a word (``answer``
    False), or a plain ``distributed`` Server that answers as what it is, not a scheduler (True)."""
    from distributed.core import Server

    ready: queue.Queue = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        if answer:
            server = Server({})
            await server.listen("tcp://127.0.0.1:0")
            ready.put(server.address)
        else:
            silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            ready.put(f"tcp://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
        while not stop.is_set():
            await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=10)
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize(("answer", "says"), [
    (False, "accepted the connection but nothing answered as a Dask scheduler within 3 s"),
    (True, "the server there is a Server, not a Dask scheduler"),
])
def test_a_scheduler_address_where_something_else_listens_is_an_error_in_bounded_time(
        monkeypatch, fresh_cluster, answer, says):
    """A port that accepts and stays silent left ``distributed.Client`` waiting forever (its
    handshake read has no timeout); a Dask server that is not a scheduler (a worker's address given
    by mistake) is named as such."""
    monkeypatch.setenv("LOUPE_SCHEDULER_TIMEOUT", "1")
    monkeypatch.delenv("LOUPE_ALLOW_EMBEDDED_FALLBACK", raising=False)
    with _listening(answer) as address:
        monkeypatch.setenv("LOUPE_SCHEDULER", address)
        started = time.monotonic()
        with pytest.raises(cluster.ClusterError, match=f"cannot reach the Dask scheduler at {address}.*{says}"):
            cluster.get_client()
    assert time.monotonic() - started < 10
