"""Issue #3: cached execution on a real Dask cluster (embedded LocalCluster), pass counting,
overlap reuse, cancellation, a worker killed mid-job, and an external scheduler + worker."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import loupe
from data.registry import get_dataset
from explainers.runner import explain_samples
from model_registry.registry import get_model
from store.runs import Store
from worker import cluster
from worker.dispatch import BatchCancelled, JobFailed

ROOT = Path(__file__).resolve().parents[1]


def test_identical_request_runs_zero_passes_and_returns_the_same_result(fresh_home):
    first = loupe.explain("shapes_cnn", "shapes", "0:4", "saliency")
    assert not first.cached and first.provenance["passes"] > 0 and first.provenance["computed"] == 4
    again = loupe.explain("shapes_cnn", "shapes", [0, 1, 2, 3], "saliency", params={"abs": True})
    assert again.cached and again.provenance["passes"] == 0 and again.provenance["computed"] == 0
    assert again.key == first.key and again.link == first.link
    np.testing.assert_array_equal(again.attributions, first.attributions)
    assert again.metrics == first.metrics


def test_overlapping_request_computes_only_new_samples(fresh_home):
    loupe.explain("shapes_cnn", "shapes", "10:14", "input_x_gradient")
    res = loupe.explain("shapes_cnn", "shapes", "12:16", "input_x_gradient")
    assert res.provenance["reused"] == 2 and res.provenance["computed"] == 2
    assert res.sample_ids == [12, 13, 14, 15]


def test_cluster_result_equals_in_process_result():
    res = loupe.explain("shapes_cnn", "shapes", "20:23", "integrated_gradients", params={"n_steps": 8})
    local = explain_samples(get_model("shapes_cnn"), get_dataset("shapes"), [20, 21, 22], "integrated_gradients",
                            {"n_steps": 8})
    np.testing.assert_allclose(res.attributions, local.attributions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.predictions, local.predictions)
    assert res.provenance["device"] == str(get_model("shapes_cnn").device)


def test_stored_run_opens_by_key_and_exports():
    res = loupe.explain("shapes_cnn", "shapes", "30:33", "saliency")
    opened = loupe.run(res.key)
    np.testing.assert_array_equal(opened.attributions, res.attributions)
    frame = loupe.export(res.key)
    assert list(frame["sample_id"]) == [30, 31, 32] and set(frame["run_key"]) == {res.key}
    assert frame["link"].iloc[0] == res.link == loupe.link(res.key)
    classes = loupe.model("shapes_cnn").classes  # every export carries class names beside the indices
    assert frame["prediction_name"].tolist() == [classes[int(i)] for i in res.predictions]
    assert frame["label_name"].tolist() == [loupe.dataset("shapes").classes[int(i)] for i in res.labels]


def test_cancel_keeps_finished_chunks_and_a_rerun_resumes():
    cancel = threading.Event()
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 16:
            cancel.set()

    with pytest.raises(BatchCancelled):
        from worker.batch import explain_cached, make_request

        req = make_request(get_model("shapes_cnn"), get_dataset("shapes"), range(100, 164), "saliency")
        explain_cached(req, chunk_size=16, progress=progress, cancel=cancel)
    stored_before = len(Store().lookup(req.item_keys()))
    assert 16 <= stored_before < 64
    res = loupe.explain("shapes_cnn", "shapes", "100:164", "saliency")
    assert res.provenance["reused"] == stored_before and res.provenance["computed"] == 64 - stored_before


KILLER = '''
import os
import torch
from torch import nn

class Killer(nn.Module):
    """Kills its worker process when the flag file exists (simulates an out-of-memory kill)."""
    def __init__(self, flag):
        super().__init__()
        self.flag = flag
        self.lin = nn.Linear(4, 2)
    def forward(self, x):
        if os.path.exists(self.flag):
            os._exit(3)
        return self.lin(x)

def build(flag):
    return Killer(flag)
'''


def test_worker_killed_mid_job_reports_and_next_request_works(tmp_path, monkeypatch, fresh_home, fresh_cluster):
    pkg = tmp_path / "killer_pkg"
    pkg.mkdir()
    (pkg / "killer_model.py").write_text(KILLER)
    monkeypatch.syspath_prepend(str(pkg))
    flag = tmp_path / "kill.flag"
    import torch

    from killer_model import build

    torch.save(build(str(flag)).state_dict(), tmp_path / "killer.pt")
    np.savez(tmp_path / "rows.npz", x=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32),
             y=np.array([0, 1] * 4))
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'''
[[model]]
id = "killer"
kind = "state_dict"
path = "{tmp_path / 'killer.pt'}"
factory = "killer_model:build"
factory_kwargs = {{ flag = "{flag}" }}
task = "tabular"
input_shape = [4]
classes = ["a", "b"]

[[dataset]]
id = "rows"
kind = "npz"
path = "{tmp_path / 'rows.npz'}"
''')
    monkeypatch.setenv("LOUPE_MANIFEST", str(manifest))
    monkeypatch.setenv("PYTHONPATH", f"{pkg}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    loupe.model("killer")  # loaded (and probed) here while the flag is absent
    flag.write_text("die")
    with pytest.raises(JobFailed, match="died"):
        loupe.explain("killer", "rows", "0:4", "input_x_gradient")
    flag.unlink()
    res = loupe.explain("killer", "rows", "0:4", "input_x_gradient")
    assert res.attributions.shape == (4, 4) and np.isfinite(res.attributions).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    from distributed import Client

    with Client(address, timeout="20s") as client:
        client.wait_for_workers(n, timeout=timeout)


def test_external_scheduler_and_worker(monkeypatch, tmp_path, fresh_home, fresh_cluster):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bin_dir = Path(sys.executable).parent
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                               "--no-dashboard", "--preload", "worker.preload"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_workers(address, 1)
        monkeypatch.setenv("LOUPE_SCHEDULER", address)
        res = loupe.explain("shapes_cnn", "shapes", "40:42", "saliency")
        assert not res.cached and res.provenance["passes"] > 0
        client = cluster.get_client()
        assert client.scheduler.address == address
        # a manifest model travels to an external worker as bytes, once, named by their hash
        import hashlib

        import torch

        torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2))).save(str(tmp_path / "lin.pt"))
        np.savez(tmp_path / "rows.npz", x=np.ones((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
        (tmp_path / "manifest.toml").write_text(f'''
[[model]]
id = "shipped"
kind = "torchscript"
path = "{tmp_path / 'lin.pt'}"
task = "tabular"
input_shape = [3]
classes = ["a", "b"]

[[dataset]]
id = "rows3"
kind = "npz"
path = "{tmp_path / 'rows.npz'}"
''')
        monkeypatch.setenv("LOUPE_MANIFEST", str(tmp_path / "manifest.toml"))
        shipped = loupe.explain("shipped", "rows3", "all", "input_x_gradient")
        assert shipped.attributions.shape == (4, 3)
        digest = hashlib.sha256((tmp_path / "lin.pt").read_bytes()).hexdigest()
        from store.paths import loupe_home

        assert (loupe_home() / "worker_files" / f"{digest}.pt").exists()
    finally:
        cluster.shutdown()  # the client first, while its scheduler is still there
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_unreachable_scheduler_is_a_clear_error(monkeypatch, fresh_home, fresh_cluster, refused_address):
    monkeypatch.setenv("LOUPE_SCHEDULER", refused_address)
    monkeypatch.setenv("LOUPE_SCHEDULER_TIMEOUT", "2")
    started = time.monotonic()
    with pytest.raises(cluster.ClusterError, match="cannot reach the Dask scheduler"):
        loupe.explain("shapes_cnn", "shapes", "50:51", "saliency")
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_cli_batch_killed_mid_way_resumes_without_duplicates_or_gaps(fresh_home):
    import signal

    import duckdb

    from worker.batch import make_request

    ids = range(200, 296)
    keys = make_request(get_model("shapes_cnn"), get_dataset("shapes"), ids, "occlusion").item_keys()
    cmd = [sys.executable, "-m", "loupe", "explain", "--model", "shapes_cnn", "--dataset", "shapes",
           "--samples", "200:296", "--explainer", "occlusion", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    store = Store()
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        stored = len(store.lookup(keys))
        if stored >= 16:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its embedded cluster, mid-batch
    proc.wait()
    assert 16 <= stored < 96, f"the batch was not interrupted mid-way (stored {stored} of 96)"
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout)
    assert out["cached"] is False and len(out["results"]) == 96
    assert [r["sample_id"] for r in out["results"]] == list(ids)
    assert len(store.lookup(keys)) == 96
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        counts = con.execute("SELECT count(*), count(DISTINCT item_key) FROM items WHERE item_key IN "
                             "(SELECT unnest(?::VARCHAR[]))", [keys]).fetchone()
        runs = con.execute("SELECT count(*) FROM runs WHERE key = ?", [out["key"]]).fetchone()[0]
    finally:
        con.close()
    assert counts == (96, 96) and runs == 1


def test_sanity_check_runs_on_the_cluster_and_separates_methods():
    saliency = loupe.sanity_check("shapes_cnn", "shapes", "0:6", "saliency")
    assert saliency.shape == (6,) and np.isfinite(saliency).all()
    assert saliency.mean() < 0.9, "a trained CNN's saliency should change when its weights are randomised"


def test_workers_spawned_under_a_streamlit_script_do_not_run_it(tmp_path, monkeypatch, fresh_home, fresh_cluster):
    """Streamlit installs the script it runs as a bare ``__main__`` module; spawned workers must not
    re-execute that file (a page that cannot run bare made the Nanny fail to start)."""
    import types

    marker = tmp_path / "page_ran"
    page = tmp_path / "page.py"
    page.write_text(f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('a page ran in a worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    res = loupe.explain("breast_cancer_mlp", "breast_cancer", [5, 6], "saliency", batch_size=2)
    assert not res.cached and res.attributions.shape == (2, 30)
    cluster.shutdown()  # while the fake __main__ is still installed: stopping workers spawns nothing
    assert not marker.exists()


def test_a_part_of_a_stored_run_is_answered_from_its_samples_without_computing():
    res = loupe.explain("shapes_cnn", "shapes", [740, 743, 749], "saliency")
    assert loupe.stored("shapes_cnn", "shapes", [743, 750], "saliency") is None  # #750 was never explained
    before = len(loupe.runs(limit=10_000))
    part = loupe.stored("shapes_cnn", "shapes", [749, 743], "saliency")
    assert part is not None and part.sample_ids == [749, 743] and part.provenance["computed"] == 0
    np.testing.assert_array_equal(part.attributions, res.attributions[[2, 1]])
    assert part.metrics == [res.metrics[2], res.metrics[1]]
    assert len(loupe.runs(limit=10_000)) == before + 1 and loupe.run(part.key).sample_ids == [749, 743]  # a link
    assert loupe.estimate("shapes_cnn", "shapes", [749, 743], "saliency").n_cached == 2
