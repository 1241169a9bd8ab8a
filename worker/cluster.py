"""The Dask client Loupe submits jobs through.

* ``LOUPE_SCHEDULER=tcp://host:8786``: connect to that cluster (GPU machines run
  ``dask worker tcp://host:8786 --resources GPU=1 --preload worker.preload`` from a Loupe checkout).
  If it cannot be reached, :class:`ClusterError` says so; falling back to the embedded cluster only
  happens when ``LOUPE_ALLOW_EMBEDDED_FALLBACK=1``.
* otherwise an embedded ``LocalCluster`` is started on first use and reused for the life of the
  process: one worker process per GPU (each with resource ``GPU=1``), or one CPU worker.

``distributed.scheduler.allowed-failures`` is 0 so a job that kills its worker (e.g. out of memory)
fails once with a clear message instead of killing four workers in a row (notes/stack.md §4).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

_LOCK = threading.Lock()
_STATE: dict = {}


class ClusterError(RuntimeError):
    """The cluster cannot be reached or started; the message says which and how to fix it."""


def gpu_count() -> int:
    """CUDA devices visible to this process."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _configure_dask() -> None:
    import dask

    dask.config.set({
        # Dask's default worker environment sets MALLOC_TRIM_THRESHOLD_, which also freezes glibc's
        # mmap threshold, so every tensor above 128 KB is mmapped and page-faulted afresh, and pins
        # OpenMP/MKL to one thread, which made jobs far slower than in-process
        # (bench/results/design_measurements.md). None unsets a variable: workers get the defaults.
        **{f"distributed.nanny.pre-spawn-environ.{name}": None
           for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "distributed.scheduler.allowed-failures": 0,
        "distributed.worker.daemon": False,
        "distributed.logging.distributed": "error",
    })


async def _identify(address: str, seconds: float) -> dict:
    """What the Dask server at ``address`` says it is (its ``identity`` reply)."""
    from distributed.comm import connect

    comm = await connect(address, timeout=seconds)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _probe(address: str, seconds: float) -> None:
    """Raise OSError unless a Dask *scheduler* answers at ``address`` within ``seconds``.

    ``Client(address, timeout=…)`` bounds only the TCP connect: a peer that accepts and never answers
    (another service on that port, a frozen process) leaves it waiting forever (distributed 2026.8's
    handshake read has no timeout). The probe runs on its own event loop in its own thread, so it
    works from inside a running loop too. The connect gets ``seconds`` (its own error names the
    cause); the exchange after it, milliseconds with a real scheduler, gets two more."""
    def run() -> dict:
        return asyncio.run(asyncio.wait_for(_identify(address, seconds), seconds + 2))

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="loupe-probe") as pool:
        try:
            reply = pool.submit(run).result()
        except TimeoutError:  # asyncio's too, since Python 3.11
            raise OSError(f"it accepted the connection but nothing answered as a Dask scheduler within "
                          f"{seconds + 2:g} s") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise OSError(f"the server there is a {kind or 'non-Dask service'}, not a Dask scheduler")


def _connect(address: str) -> Client | None:
    """A client of the scheduler at ``address``; None when it cannot be reached and the user allows
    the embedded fallback (with a warning saying so). A malformed address is always an error."""
    from distributed import Client

    seconds = float(os.environ.get("LOUPE_SCHEDULER_TIMEOUT", "10"))
    try:
        _probe(address, seconds)
        return Client(address, timeout=f"{seconds}s", set_as_default=False)
    except ValueError as err:  # distributed's address parser: no port, unknown scheme
        raise ClusterError(f"LOUPE_SCHEDULER={address!r} is not a Dask scheduler address ({err}); "
                           "write it as tcp://HOST:8786") from None
    except (OSError, TimeoutError) as err:
        if os.environ.get("LOUPE_ALLOW_EMBEDDED_FALLBACK") == "1":
            warnings.warn(f"cannot reach the Dask scheduler at {address} ({err}); using the embedded cluster "
                          "because LOUPE_ALLOW_EMBEDDED_FALLBACK=1", RuntimeWarning, stacklevel=2)
            return None
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} (LOUPE_SCHEDULER): {err}. Start it with "
            f"`dask scheduler`, fix the address, or unset LOUPE_SCHEDULER to use the embedded cluster."
        ) from err


def _spawn_without_page_scripts() -> None:
    """Keep spawned Dask workers from re-running a Streamlit page.

    multiprocessing's spawn re-executes the parent's ``__main__`` file in every child. Streamlit
    installs each script it runs as ``sys.modules["__main__"]`` (a bare module whose ``__file__`` is
    the app or page script), so a worker started or restarted from the app ran that script in bare
    mode: wasted imports at best, and a Nanny that fails to start when the page cannot run bare
    (seen with the Rules page under AppTest). Such a module has no loader, unlike a real ``python
    script.py`` main; for it, the main path is dropped from spawn's preparation data. Tasks never
    need it: cloudpickle ships objects defined in ``__main__`` by value."""
    from multiprocessing import spawn

    if getattr(spawn.get_preparation_data, "loupe_wrapped", False):
        return
    original = spawn.get_preparation_data

    def preparation_data(name: str) -> dict:
        data = original(name)
        if getattr(sys.modules["__main__"], "__loader__", None) is None:
            data.pop("init_main_from_path", None)
        return data

    preparation_data.loupe_wrapped = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = preparation_data


def _start_embedded() -> tuple[LocalCluster, Client]:
    from distributed import Client, LocalCluster

    _spawn_without_page_scripts()
    gpus = gpu_count()
    with warnings.catch_warnings():
        # the scheduler's HTTP endpoint falls back to a free port when 8787 is taken (e.g. by a
        # second Loupe process); that is expected here, not a problem to report
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(
            n_workers=max(gpus, 1),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            resources={"GPU": 1} if gpus else None,
            preload=["worker.preload"],
            silence_logs=40,
        )
    return cluster, Client(cluster, set_as_default=False)


def get_client() -> Client:
    """The process-wide Dask client (started or connected on first call)."""
    with _LOCK:
        if "client" in _STATE:
            return _STATE["client"]
        _configure_dask()
        address = os.environ.get("LOUPE_SCHEDULER")
        client = _connect(address) if address else None
        if client is None:
            try:
                _STATE["cluster"], client = _start_embedded()
            except Exception as err:  # any start failure becomes one clear message
                raise ClusterError(f"could not start the embedded Dask cluster: {err}") from err
        _STATE["client"] = client
        atexit.register(shutdown)
        return client


def uses_gpu_resources(client: Client) -> bool:
    """Whether the cluster's workers advertise a GPU resource (then each job asks for one)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any("GPU" in (w.get("resources") or {}) for w in workers.values())


def shutdown() -> None:
    """Close the client and, if embedded, the cluster (also runs at interpreter exit)."""
    with _LOCK:
        client = _STATE.pop("client", None)
        cluster = _STATE.pop("cluster", None)
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
