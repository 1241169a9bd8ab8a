"""Several processes and threads on one Loupe database: no lock error reaches a caller, no row is
lost or duplicated (issue #3: the app and a CLI batch run at the same time)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from store import db
from store.keys import item_key, run_key
from store.runs import ItemRecord, Store

ROOT = Path(__file__).resolve().parents[1]
N_RUNS = 25
SHARED_EVERY = 5
META = {"model_id": "m", "weights_hash": "w", "dataset_id": "d", "explainer_id": "e", "explainer_version": "1",
        "params": {"n": 1}}

# Each worker stores N_RUNS runs of two samples: sample i (the same item in both workers) and a
# sample of its own. Every SHARED_EVERY-th run is the same request in both workers. Between writes
# it reads its own run back, lists runs and looks up the other worker's items.
WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from store import db
from store.keys import item_key
from store.runs import ItemRecord, Store

path, worker, n_runs, shared_every, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
META = json.loads(sys.argv[6])
store = Store(Path(path))

def item(sid):
    key = item_key(**META, sample_id=sid, sample_hash=f"h{sid}", target="predicted")
    return ItemRecord(key, sid, label=0, target=1, prediction=1, confidence=0.5, metrics={"m": float(sid)},
                      map=np.full((8, 8), sid, dtype=np.float32))

(go.parent / f"ready{worker}").touch()
while not go.exists():
    time.sleep(0.005)
started = time.perf_counter()
for i in range(n_runs):
    own = i if i % shared_every == 0 else 10_000 * (worker + 1) + i
    items = [item(i), item(own)]
    store.put_items(META, items)
    tag = f"shared-{i}" if i % shared_every == 0 else f"{worker}-{i}"
    key = store.put_run({**META, "sample_ids": [i, own], "content_hash": tag, "target": "predicted"},
                        [x.item_key for x in items])
    run = store.get_run(key)
    assert [x.sample_id for x in run.items] == [i, own], run.items
    assert float(run.items[1].map[0, 0]) == own
    if i % 5 == 0:
        store.list_runs(limit=5)
        store.lookup([item(10_000 * (2 - worker) + i).item_key])
print(json.dumps({"seconds": time.perf_counter() - started, "turn_waits": db.STATS.turn_waits,
                  "connects": db.STATS.connects, "max_lock_wait_s": db.STATS.max_lock_wait_s}))
"""

# Holds the database for a while: "duckdb" like a foreign process (DuckDB's own file lock),
# "loupe" like another Loupe process in the middle of an operation (the turn lock as well).
HOLDER = r"""
import sys, time, duckdb
from pathlib import Path
from store import db
path, seconds, kind = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
with (duckdb.connect(str(path)) if kind == "duckdb" else db.connection(path)):
    print("held", flush=True)
    time.sleep(seconds)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _count(path: Path, table: str) -> int:
    con = duckdb.connect(str(path))
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_two_processes_write_and_read_one_file(tmp_path: Path):
    path, go = tmp_path / "loupe.duckdb", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(w), str(N_RUNS), str(SHARED_EVERY), str(go), json.dumps(META)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
        )
        for w in (0, 1)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{w}").exists() for w in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0 and "Traceback" not in err, err
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["turn_waits"] for r in reports) > 0, "the workers never contended: the test proved nothing"

    shared_runs = len(range(0, N_RUNS, SHARED_EVERY))
    n_runs = 2 * N_RUNS - shared_runs
    assert _count(path, "runs") == n_runs
    assert _count(path, "run_items") == 2 * n_runs
    assert _count(path, "items") == N_RUNS + 2 * (N_RUNS - shared_runs)
    expected = {
        run_key(**META, sample_ids=[i, i if i % SHARED_EVERY == 0 else 10_000 * (w + 1) + i],
                content_hash=f"shared-{i}" if i % SHARED_EVERY == 0 else f"{w}-{i}", target="predicted")
        for w in (0, 1) for i in range(N_RUNS)
    }
    assert {r["key"] for r in Store(path).list_runs(limit=1000)} == expected


def _items(n: int) -> list[ItemRecord]:
    return [
        ItemRecord(item_key(**META, sample_id=i, sample_hash=f"h{i}", target="predicted"), i,
                   metrics={"m": 1.0}, map=np.full((4, 4), i, dtype=np.float32))
        for i in range(n)
    ]


def test_threads_storing_the_same_results_lose_nothing(tmp_path: Path):
    store, items = Store(tmp_path / "loupe.duckdb"), _items(12)
    run_meta = {**META, "sample_ids": list(range(12)), "content_hash": "c", "target": "predicted"}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        try:
            start.wait()
            for chunk in range(3):  # overlapping chunks, shifted per thread
                part = items[(chunk * 4 + offset) % 12:][:6]
                store.put_items(META, part)
            store.put_items(META, items)
            store.put_run(run_meta, [i.item_key for i in items])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (_count(store.path, "items"), _count(store.path, "runs"), _count(store.path, "run_items")) == (12, 1, 12)
    run = store.get_run(run_key(**{k: run_meta[k] for k in run_meta}))
    assert [float(i.map[0, 0]) for i in run.items] == [float(i) for i in range(12)]


@pytest.mark.parametrize("kind", ["duckdb", "loupe"])
def test_a_long_held_lock_gives_a_clear_busy_error_then_is_waited_for(tmp_path: Path, kind: str):
    path = tmp_path / "loupe.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "1.5", kind], stdout=subprocess.PIPE,
                              text=True, env=_env(), cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(db.StoreBusy, match=f"the Loupe database {path} is busy"):
            with db.connection(path, timeout=0.2):
                pass
        started = time.monotonic()
        with db.connection(path, timeout=20) as con:
            assert con.execute("SELECT 1").fetchall() == [(1,)]
        assert time.monotonic() - started > 0.3
    finally:
        holder.wait(timeout=30)
