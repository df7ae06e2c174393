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

from .config import TrainConfig


def run_remote(config_json: str, device: str = "auto", half: bool = False, threads: int = 1,
               light: bool = False) -> dict:
    """Train and evaluate one config in this process; return what the store keeps, as numpy."""
    import torch

    from .runs import evaluated, single_record
    from .system import resolve_device
    from .train import fit

    torch.set_num_threads(threads)
    config = TrainConfig.from_json(config_json)
    dev = resolve_device(device)
    trained = fit(config, dev)
    phases = evaluated(trained, config, half, light)
    while True:
        try:
            next(phases)
        except StopIteration as end:
            ev = end.value
            break
    rec = single_record(config, trained, ev, dev, half, light)
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


@contextlib.contextmanager
def _backend(cluster: str | None, jobs: int):
    """joblib's backend: loky here, or Dask on the cluster at `cluster` ('local' starts one)."""
    import joblib

    if cluster is None:
        try:
            with joblib.parallel_config(backend="loky", n_jobs=jobs):
                yield
        finally:  # the reusable workers would idle on for minutes after the command returns
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
        return
    with contextlib.ExitStack() as stack:
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
    """Run configs through joblib; yield (config, run, cached) as each is stored (stored configs first).

    Every config is locked in the store for the whole sweep (a second sweep of the same config
    waits its turn with an error, as a second `train` does)."""
    from joblib import Parallel, delayed

    todo = []
    for c in configs:
        found = None if force else store.find(c)
        if found is not None:
            yield c, found.verify(), True
        else:
            todo.append(c)
    if not todo:
        return
    store.check_writable()
    with contextlib.ExitStack() as locks:
        for c in todo:
            locks.enter_context(store.lock(c))
        with _backend(cluster, jobs):
            tasks = (delayed(run_remote)(c.to_json(), device, half, threads, light) for c in todo)
            for result in Parallel(return_as="generator_unordered")(tasks):
                config = TrainConfig.from_json(result["config"])
                run = store.save(config, result["weights"], result["metrics"], result["arrays"], half=half,
                                 made=result["made"])
                yield config, run, False
