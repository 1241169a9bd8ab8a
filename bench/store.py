"""Store benchmarks (issue #3), each printed with its goal.

* ``lookup``: latency of looking up one stored run (100 samples, 64×64 maps), warm (read before in
  this process) and cold (first read of that run in this process); goal < 10 ms.
* ``export``: CSV export of 10,000 stored sample results (top-5 units per map); goal < 5 s.
* ``writers``: one writer process alone vs two writer processes on the same file (16-item runs
  plus reads between writes): throughput, per-operation latency, lock retries, rows lost.
* ``cluster``: the embedded Dask cluster's time on a 64-image batch divided by calling the
  explainer in-process on the same work; goal ≤ 1.1.

Run from the repository root: ``python -m bench.store [section ...]`` (all sections by default).
More sections are added by writing ``def bench_<name>(ctx: Context) -> None`` and listing it in
:data:`SECTIONS`. Everything is written to a temporary ``LOUPE_HOME`` that is deleted afterwards.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
# Run as ``python bench/store.py`` this file's folder would come first on sys.path and shadow the
# ``store`` package with this module: put the repository root there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402

from store import db  # noqa: E402
from store.export import export  # noqa: E402
from store.keys import item_key  # noqa: E402
from store.runs import ItemRecord, Store  # noqa: E402

N_RESULTS = 10_000
RUN_SIZE = 100
MAP_SHAPE = (64, 64)
WRITER_RUNS = 30
WRITER_RUN_SIZE = 16
META = {"model_id": "shapes_cnn", "weights_hash": "w" * 64, "dataset_id": "shapes",
        "explainer_id": "integrated_gradients", "explainer_version": "1", "params": {"n_steps": 32}}


@dataclass
class Context:
    """Shared state: a temporary LOUPE_HOME and, once :meth:`populated` is called, a store with
    N_RESULTS results in runs of RUN_SIZE."""

    home: Path
    run_keys: list[str] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return Store(self.home / "loupe.duckdb")

    def populated(self) -> Store:
        if not self.run_keys:
            started = time.perf_counter()
            self.run_keys = [
                store_run(self.store, META, range(start, start + RUN_SIZE), seed=start)
                for start in range(0, N_RESULTS, RUN_SIZE)
            ]
            print(f"  (stored {N_RESULTS} results in {len(self.run_keys)} runs: {time.perf_counter() - started:.1f} s)")
        return self.store


def make_items(meta: dict[str, Any], sample_ids: Any, seed: int) -> list[ItemRecord]:
    """Items like an attribution run's: a 64×64 float32 map, two 17-point curves, four metrics."""
    rng = np.random.default_rng(seed)
    return [
        ItemRecord(
            item_key=item_key(**meta, sample_id=sid, sample_hash=f"h{sid}", target="predicted"),
            sample_id=sid, label=sid % 4, target=sid % 4, prediction=sid % 4, confidence=float(rng.random()),
            metrics={"deletion_auc": float(rng.random()), "insertion_auc": float(rng.random()),
                     "pointing_hit": bool(sid % 2), "gini": float(rng.random())},
            map=rng.standard_normal(MAP_SHAPE).astype(np.float32),
            arrays={"deletion_curve": rng.random(17), "insertion_curve": rng.random(17)},
            seconds=0.01,
        )
        for sid in sample_ids
    ]


def store_run(store: Store, meta: dict[str, Any], sample_ids: Any, seed: int) -> str:
    """put_items + put_run for one run; returns its key."""
    items = make_items(meta, sample_ids, seed)
    store.put_items(meta, items)
    run_meta = {**meta, "sample_ids": [i.sample_id for i in items], "content_hash": f"c{seed}", "target": "predicted"}
    return store.put_run(run_meta, [i.item_key for i in items])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


# -- sections ----------------------------------------------------------------------------------
def bench_lookup(ctx: Context) -> None:
    """Cold: the first get_run of each of 20 runs this process never read; warm: repeats."""
    store = ctx.populated()
    cold = []
    for key in ctx.run_keys[:20]:
        started = time.perf_counter()
        store.get_run(key)
        cold.append(time.perf_counter() - started)
    warm = []
    for _ in range(200):
        started = time.perf_counter()
        store.get_run(ctx.run_keys[0])
        warm.append(time.perf_counter() - started)
    print(f"cached lookup of one run ({RUN_SIZE} samples, {MAP_SHAPE[0]}x{MAP_SHAPE[1]} maps): "
          f"warm {_ms(statistics.median(warm))} median (goal < 10 ms); "
          f"cold {_ms(statistics.median(cold))} median, {_ms(max(cold))} max (first read in this process)")


def bench_export(ctx: Context) -> None:
    """CSV export of every stored result with the default top-5 units."""
    store = ctx.populated()
    out = ctx.home / "export.csv"
    started = time.perf_counter()
    frame = export(store, csv=out)
    seconds = time.perf_counter() - started
    assert len(frame) == N_RESULTS, len(frame)
    print(f"CSV export of {len(frame)} stored sample results: {seconds:.2f} s (goal < 5 s); "
          f"{out.stat().st_size / 2**20:.1f} MB, {frame.shape[1]} columns")


def _writer(path: str, worker: int, n_runs: int) -> dict[str, Any]:
    """One writer process: n_runs runs (put_items + put_run), a lookup after each, list_runs every
    5th; latencies per operation kind."""
    store = Store(Path(path))
    latencies: dict[str, list[float]] = {"put_items": [], "put_run": [], "lookup": [], "list_runs": []}
    started = time.perf_counter()
    for i in range(n_runs):
        first = (worker * n_runs + i) * WRITER_RUN_SIZE
        items = make_items(META, range(first, first + WRITER_RUN_SIZE), seed=i)
        run_meta = {**META, "sample_ids": [x.sample_id for x in items], "content_hash": f"w{worker}-{i}",
                    "target": "predicted"}
        ops: dict[str, Callable[[], Any]] = {
            "put_items": lambda: store.put_items(META, items),
            "put_run": lambda: store.put_run(run_meta, [x.item_key for x in items]),
            "lookup": lambda: store.lookup([x.item_key for x in items[:4]]),
            "list_runs": lambda: store.list_runs(limit=10),
        }
        for kind, op in ops.items():
            if kind != "list_runs" or i % 5 == 0:
                t = time.perf_counter()
                op()
                latencies[kind].append(time.perf_counter() - t)
    return {"seconds": time.perf_counter() - started, "latencies": latencies,
            "turn_waits": db.STATS.turn_waits, "lock_retries": db.STATS.lock_retries,
            "max_lock_wait_s": db.STATS.max_lock_wait_s}


def _run_writers(home: Path, workers: int) -> list[dict[str, Any]]:
    path = home / f"writers{workers}.duckdb"
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm_up, range(workers)))  # start and import before timing
        futures = [pool.submit(_writer, str(path), w, WRITER_RUNS) for w in range(workers)]
        reports = [f.result() for f in futures]
    runs = Store(path).list_runs(limit=10 * WRITER_RUNS * workers)
    assert len(runs) == WRITER_RUNS * workers, f"{len(runs)} runs stored, expected {WRITER_RUNS * workers}"
    return reports


def _warm_up(_: int) -> None:
    """Import pyarrow (first put_items) outside the timed loop."""
    import pyarrow  # noqa: F401


def bench_writers(ctx: Context) -> None:
    """One writer alone vs two writers sharing the file (each asserts no run is lost)."""
    for workers in (1, 2):
        reports = _run_writers(ctx.home, workers)
        wall = max(r["seconds"] for r in reports)
        n_ops = sum(len(v) for r in reports for v in r["latencies"].values())
        per_kind = ", ".join(
            f"{kind} {_ms(statistics.median(xs))} (max {_ms(max(xs))})"
            for kind in reports[0]["latencies"]
            for xs in [[x for r in reports for x in r["latencies"][kind]]]
        )
        print(f"{workers} writer process(es) x {WRITER_RUNS} runs of {WRITER_RUN_SIZE} items: {n_ops} ops in "
              f"{wall:.1f} s = {n_ops / wall:.0f} ops/s; median per op: {per_kind}; turn polls "
              f"{[r['turn_waits'] for r in reports]}, refused DuckDB connects {[r['lock_retries'] for r in reports]}, "
              f"longest wait for the database "
              f"{max(r['max_lock_wait_s'] for r in reports):.2f} s; every run stored once")


def bench_connect(ctx: Context) -> None:
    """Fixed cost of a connection: open + close, and one query on an open connection."""
    path = ctx.home / "connect.duckdb"
    Store(path).list_runs()
    opens, closes, queries = [], [], []
    for _ in range(30):
        t0 = time.perf_counter()
        con = db.connect(path)
        t1 = time.perf_counter()
        con.execute("SELECT count(*) FROM runs").fetchall()
        t2 = time.perf_counter()
        con.close()
        opens.append(t1 - t0)
        queries.append(t2 - t1)
        closes.append(time.perf_counter() - t2)
    print(f"connection: open {_ms(statistics.median(opens))}, close {_ms(statistics.median(closes))}, "
          f"one query {_ms(statistics.median(queries))} (medians of 30)")


def bench_cluster(ctx: Context) -> None:
    """The embedded Dask cluster on a 64-image batch (explain → jobs → store → result) divided by
    calling the explainer in-process on the same work (explain_samples: same model, images, params,
    metrics). Both are warmed up first; the cluster's side uses fresh sample ids each repeat so it
    computes instead of hitting the cache; best of 3 each."""
    from data.registry import get_dataset
    from explainers.runner import explain_samples
    from model_registry.registry import get_model
    from worker.batch import explain_cached, make_request
    from worker.cluster import shutdown

    model, ds = get_model("shapes_cnn"), get_dataset("shapes")
    params = {"n_steps": 32}
    explain_samples(model, ds, range(0, 16), "integrated_gradients", params)
    explain_cached(make_request(model, ds, range(0, 16), "integrated_gradients", params))
    local, remote = [], []
    for rep in range(3):
        ids = range(64 + 64 * rep, 128 + 64 * rep)
        started = time.perf_counter()
        explain_samples(model, ds, ids, "integrated_gradients", params)
        local.append(time.perf_counter() - started)
        started = time.perf_counter()
        res = explain_cached(make_request(model, ds, ids, "integrated_gradients", params))
        remote.append(time.perf_counter() - started)
        assert res.provenance["computed"] == 64, res.provenance
    shutdown()
    print(f"64-image batch (integrated_gradients, n_steps 32, shapes_cnn, metrics included): embedded cluster "
          f"{min(remote):.2f} s vs in-process {min(local):.2f} s -> ratio {min(remote) / min(local):.3f} "
          f"(goal <= 1.1; best of 3 each)")


SECTIONS: dict[str, Callable[[Context], None]] = {
    "connect": bench_connect,
    "lookup": bench_lookup,
    "export": bench_export,
    "writers": bench_writers,
    "cluster": bench_cluster,
}


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; known: {list(SECTIONS)}")
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as home:
        os.environ["LOUPE_HOME"] = home
        ctx = Context(Path(home))
        for name in names:
            print(f"[{name}]")
            SECTIONS[name](ctx)


if __name__ == "__main__":
    main()
