"""Several app processes on one LOUPE_HOME (issue #18, a lab behind a reverse proxy): a batch that one
process runs is seen as running by the others, is never run twice, can be cancelled from any of
them, and reads "interrupted" once its process is killed; manifest entries that processes add at
the same time are all kept. The processes here are real interpreters sharing a real LOUPE_HOME;
tests/test_serving.py runs the whole app twice behind nginx."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from loupe import background

ROOT = Path(__file__).resolve().parents[1]
ROWS = 40  # three chunks of 16: a cancel is seen after the first one

# The other process: a session model (runs in that process, no Dask) whose forward pass waits for a
# gate file, so the batch stays running until the test opens the gate.
OWNER = """
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
from data.base import Dataset, Split
from data.registry import register_dataset
from loupe import background
from model_registry.base import ModelHandle
from model_registry.registry import register_model

gate = Path(sys.argv[1])

class Gated(torch.nn.Linear):
    def forward(self, x):
        while not gate.exists():
            time.sleep(0.02)
        return super().forward(x)

torch.manual_seed(0)
register_model(ModelHandle("gated", Gated(4, 2).eval(), "tabular", (4,), ["a", "b"]))
x = np.random.default_rng(0).normal(size=(%d, 4)).astype(np.float32)
register_dataset(Dataset("gated_rows", "tabular", ["a", "b"], Split(x, np.arange(%d) %% 2)))
record = background.start(background.BatchSpec("gated", "gated_rows", sys.argv[2], {"saliency": {}}))
print(json.dumps({"id": record.id, "status": record.status}), flush=True)
print(json.dumps({"final": background.wait(record.id).status}), flush=True)
""" % (ROWS, ROWS)


def _owner(home: Path, gate: Path, samples: str) -> tuple[subprocess.Popen, str]:
    """Start the other process's batch; returns the process and the batch id once it runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(gate), samples], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the other process did not start its batch: {proc.communicate()[1][-3000:]}")
    started = json.loads(line)
    assert started["status"] == "running"
    return proc, started["id"]


def _register_here(home: Path) -> None:
    """The same session model and rows in this process, so this process can validate the same spec."""
    import torch

    from data.base import Dataset, Split
    from data.registry import register_dataset
    from model_registry.base import ModelHandle
    from model_registry.registry import register_model

    torch.manual_seed(0)
    register_model(ModelHandle("gated", torch.nn.Linear(4, 2).eval(), "tabular", (4,), ["a", "b"]))
    x = np.random.default_rng(0).normal(size=(ROWS, 4)).astype(np.float32)
    register_dataset(Dataset("gated_rows", "tabular", ["a", "b"], Split(x, np.arange(ROWS) % 2)))


def _stored_items(home: Path) -> int:
    import duckdb

    con = duckdb.connect(str(home / "loupe.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM items WHERE model_id = 'gated'").fetchone()[0]
    finally:
        con.close()


def test_a_batch_of_another_process_runs_once_and_that_process_can_be_cancelled_from_here(tmp_path, fresh_home):
    gate = tmp_path / "gate"
    proc, batch_id = _owner(fresh_home, gate, f"0:{ROWS}")
    try:
        assert background.batch(batch_id).status == "running"  # not "interrupted": its owner is alive
        assert [r.id for r in background.list_batches() if r.status == "running"] == [batch_id]
        _register_here(fresh_home)
        again = background.start(background.BatchSpec("gated", "gated_rows", f"0:{ROWS}", {"saliency": {}}))
        assert again.id == batch_id and again.status == "running"
        assert batch_id not in background._THREADS  # returned the other process's record, started nothing here
        background.cancel(batch_id)
        gate.touch()  # the owner sees the cancel as it reports progress, before its second chunk at the latest
        record = background.wait(batch_id, timeout=120)
        assert record.status == "cancelled" and record.total == ROWS, record
        assert _stored_items(fresh_home) <= 16  # it stopped at the latest after its first chunk (of three)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"final": "cancelled"}
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_batch_whose_process_was_killed_reads_interrupted_and_resumes_here(tmp_path, fresh_home):
    gate = tmp_path / "gate"
    proc, batch_id = _owner(fresh_home, gate, "0:8")
    try:
        assert background.batch(batch_id).status == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert background.batch(batch_id).status == "interrupted"  # the kernel dropped the dead owner's lock
    _register_here(fresh_home)
    resumed = background.wait(background.start(background.BatchSpec("gated", "gated_rows", "0:8",
                                                                     {"saliency": {}})).id, timeout=120)
    assert resumed.status == "done" and resumed.done == resumed.total == 8 and len(resumed.run_keys) == 1


ADDER = """
import sys, time
from pathlib import Path
from model_registry.uploads import add_entry
worker, n, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
(folder / f"ready{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
for i in range(n):
    add_entry("dataset", {"id": f"rows_{worker}_{i}", "kind": "npz", "path": str(folder / "rows.npz")})
"""


def test_manifest_entries_added_by_two_processes_at_once_are_all_kept(tmp_path, fresh_home):
    """Adding an entry reads the manifest, checks the candidate and replaces the file; without the
    manifest's lock two processes doing it at once each replaced the file with their own entry
    added to what they read, so the other's entry was lost."""
    import manifest

    np.savez(tmp_path / "rows.npz", x=np.zeros((4, 3), np.float32), y=np.arange(4) % 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_HOME": str(fresh_home)}
    env.pop("LOUPE_MANIFEST", None)
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(ADDER), str(w), str(n), str(tmp_path)], cwd=ROOT,
                              env=env, stderr=subprocess.PIPE, text=True) for w in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{w}").exists() for w in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start adding at the same moment
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    read = manifest.read_manifest(fresh_home / "manifest.toml", set(), set())
    assert not read.errors, read.errors
    assert sorted(e.id for e in read.datasets) == sorted(f"rows_{w}_{i}" for w in range(2) for i in range(n))
