"""Sweeps through joblib: local reusable worker processes (loky), or a Dask cluster.

Each task trains and evaluates one config where it runs and sends the whole run back (metrics,
arrays, weights, how it was made) as plain numpy; the client alone writes the store, so workers
need no shared filesystem and a lost worker leaves nothing half-written (Dask reschedules its
task on another worker; the client writes a run only once it has all of it).

    sweep(configs, store, cluster=None)         # loky: one process per job, reused across runs
    sweep(configs, store, cluster="tcp://h:8786")  # a running Dask scheduler
    sweep(configs, store, cluster="local")      # a distributed.LocalCluster started here
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings

from .config import TrainConfig
from .events import done_event


class SweepLost(RuntimeError):
    """The cluster went away mid-sweep; the message says what was stored and how to resume."""


def die_with_parent(parent: int) -> None:
    """A loky worker's initializer: exit as soon as the client that started it is gone (the worker's
    parent changes), instead of running on for minutes as an orphan holding hundreds of MB."""
    import threading

    if os.getppid() != parent:  # not started by that client (the parent is already gone)
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="dualscale-parent-watch").start()


def run_remote(config_json: str, device: str = "auto", half: bool = False, threads: int = 1,
               light: bool = False, data=None) -> dict:
    """Train and evaluate one config in this process; return what the store keeps, as numpy.
    data: a user dataset's points (a Dask worker may not see the store's data folder)."""
    import torch

    from .events import drain
    from .runs import evaluated, single_record
    from .system import resolve_device
    from .train import fit

    torch.set_num_threads(threads)
    config = TrainConfig.from_json(config_json)
    if data is not None:
        from .userdata import register

        register(config.dataset, data)
    dev = resolve_device(device)
    runs = fit(config, dev)
    ev = drain(evaluated(runs, half, light))
    rec = single_record(runs, ev, dev, half, light)
    weights = None if rec.weights is None else {
        which: {k: v.detach().cpu().numpy() for k, v in sd.items()} for which, sd in rec.weights.items()}
    return {"config": config_json, "metrics": rec.metrics, "arrays": rec.arrays, "weights": weights, "made": rec.made}


def connect(cluster: str, timeout: float = 10):
    """A distributed.Client of the scheduler at `cluster`, or a one-line ValueError."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--cluster needs Dask's distributed package: pip install -r requirements.txt")
    try:
        return Client(cluster, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ValueError(f"no Dask scheduler answers at {cluster} ({str(e).splitlines()[0]}); "
                         "start one with `dask scheduler`")
    except Exception as e:  # noqa: BLE001 - an address of another protocol (ucx://) or a malformed one
        why = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ValueError(f"cannot connect to a Dask scheduler at {cluster!r} ({why}); use tcp://HOST:PORT")


@contextlib.contextmanager
def _backend(cluster: str | None, jobs: int):
    """joblib's backend: loky here, or Dask on the cluster at `cluster` ('local' starts one)."""
    import joblib

    if cluster is None:
        try:  # each worker watches this process from its start: it exits when the client dies
            with joblib.parallel_config(backend="loky", n_jobs=jobs, initializer=die_with_parent,
                                        initargs=(os.getpid(),)):
                yield
        finally:  # the reusable workers would idle on for minutes after the command returns
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
        return
    import logging

    with contextlib.ExitStack() as stack:
        # distributed logs every failed reconnection with a traceback; a lost scheduler is one line
        # of ours (SweepLost) instead
        logging.disable(logging.CRITICAL)
        stack.callback(logging.disable, logging.NOTSET)
        if cluster == "local":
            from distributed import Client, LocalCluster

            local = stack.enter_context(LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                     dashboard_address=None))
            client = stack.enter_context(Client(local))
        else:
            client = stack.enter_context(connect(cluster))
        with joblib.parallel_config(backend="dask", n_jobs=-1, wait_for_workers_timeout=60):
            yield client


def sweep(configs: list[TrainConfig], store, device: str = "auto", jobs: int = 1, cluster: str | None = None,
          half: bool = False, force: bool = False, threads: int = 1, light: bool = False):
    """Run configs through joblib; yield a DONE event (events.py) as each is stored (stored configs first).

    Every config is locked in the store for the whole sweep (a second sweep of the same config
    waits its turn with an error, as a second `train` does). A local worker process that dies
    (killed, out of memory) loses only its run, which is run again (RETRIES times); a lost Dask
    scheduler ends the sweep with SweepLost, its stored runs kept."""

    todo = []
    for c in configs:
        found = None if force else store.find(c)
        if found is not None:
            yield done_event(found.verify(), cached=True)
        else:
            todo.append(c)
    if not todo:
        return
    store.check_writable()
    with contextlib.ExitStack() as locks:
        for c in todo:
            locks.enter_context(store.lock(c))
        for attempt in range(RETRIES + 1):
            left = [c for c in todo if store.find(c) is None]
            if not left:
                return
            try:
                yield from _run_batch(left, store, device, jobs, cluster, half, threads, light)
                return
            except Exception as e:  # noqa: BLE001 - sorted below: a lost loky worker is retried
                lost = _lost(e, cluster)
                if lost is None and cluster not in (None, "local") and not _answers(cluster):
                    lost = f"{e.__class__.__name__}, and the scheduler no longer answers"  # whatever the error said
                if lost is None:
                    raise
                if cluster is not None:
                    stored = sum(store.find(c) is not None for c in todo)
                    raise SweepLost(f"lost the Dask scheduler at {cluster} ({lost}) after {stored} of {len(todo)} "
                                    "runs were stored; run the same command again to resume (stored runs are "
                                    "skipped)") from None
                if attempt == RETRIES:
                    raise SweepLost(f"a worker process died {RETRIES + 1} times ({lost}); "
                                    f"{len(todo) - len(left)} of {len(todo)} runs are stored") from None


RETRIES = 2  # times a sweep re-runs the runs of a worker process that died (killed, out of memory)


def _run_batch(configs, store, device, jobs, cluster, half, threads, light):
    from joblib import Parallel, delayed

    from .record import Record
    from .userdata import is_user_dataset, points_of

    data = {c.dataset: points_of(c.dataset) for c in configs if is_user_dataset(c.dataset)}
    with _backend(cluster, min(jobs, len(configs))), warnings.catch_warnings():
        # a sweep stopped by an error (a full disk) says so in one line of ours; joblib's note that
        # it cancelled the tasks still in flight is not for the user
        warnings.filterwarnings("ignore", message=r".*tasks which were still being processed", category=UserWarning)
        tasks = (delayed(run_remote)(c.to_json(), device, half, threads, light, data.get(c.dataset)) for c in configs)
        for result in Parallel(return_as="generator_unordered")(tasks):
            config = TrainConfig.from_json(result["config"])
            rec = Record(result["metrics"], result["arrays"], result["weights"], result["made"])
            run = store.save(config, rec, half=half)
            yield done_event(run, cached=False)


def _answers(cluster: str) -> bool:
    """Whether a Dask scheduler answers at `cluster` now (a short, fresh connection)."""
    try:
        connect(cluster, timeout=5).close()
        return True
    except ValueError:
        return False


def _lost(e: BaseException, cluster: str | None) -> str | None:
    """Why the sweep lost its workers (one line), or None if `e` is a run's own error."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    if isinstance(e, TerminatedWorkerError):
        return "a worker process was killed or ran out of memory"
    if cluster is not None:
        from asyncio import CancelledError
        from concurrent.futures import CancelledError as FutureCancelled

        try:
            from distributed.comm.core import CommClosedError
        except ImportError:
            CommClosedError = OSError
        if isinstance(e, (CommClosedError, OSError, TimeoutError, CancelledError, FutureCancelled)):
            return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else 'connection closed'}"
    return None
