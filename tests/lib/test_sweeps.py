"""Sweeps through joblib (issue 12): local loky workers, and a real Dask scheduler with two
workers started as processes on this machine, one of them killed half-way."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dualscale import Store
from support import ROOT, wait_until

ARGS = ["reproduce", "--datasets", "moons", "--variants", "baseline", "adaptive", "--steps", "400",
        "--n-points", "2000", "--batch-size", "128", "--n-samples", "500"]


def start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **kw)


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker`s (one process each, no nanny: a killed worker stays dead)."""
    pytest.importorskip("distributed")
    info = tmp_path / "scheduler.json"
    procs = [start(["dask", "scheduler", "--scheduler-file", str(info), "--port", "0", "--no-dashboard"])]
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        workers = [start(["dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                          "--name", f"w{i}"]) for i in range(2)]
        procs += workers
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def metrics_of(store_dir):
    out = {}
    for run in Store(store_dir).runs():
        out[run.id] = ({k: v for k, v in run.metrics.items() if not k.endswith("_time") and k != "threads"},
                       run.samples())
    return out


def assert_same_runs(a, b):
    assert sorted(a) == sorted(b) and len(a) == 2
    for rid in a:
        assert a[rid][0] == b[rid][0], rid
        assert np.array_equal(a[rid][1], b[rid][1]), rid


def test_a_dask_cluster_gives_the_numbers_of_a_local_sweep_even_when_a_worker_dies(cli, tmp_path, dask_cluster):
    address, workers = dask_cluster
    local = cli(*ARGS, "--jobs", "2", store=tmp_path / "local")
    assert local.returncode == 0, local.stderr
    assert "2/2" in local.stderr  # one bar over the runs
    on_cluster = subprocess.Popen([sys.executable, "-m", "dualscale", *ARGS, "--cluster", address, "--store",
                                   str(tmp_path / "cluster")], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    from distributed import Client

    with Client(address, timeout=30) as client:  # kill the first worker once it is training a run
        deadline = time.time() + 60
        while time.time() < deadline and not any(client.processing().values()):
            time.sleep(0.1)
        time.sleep(1.0)
        busy = [w for w, tasks in client.processing().items() if tasks]
        names = {w: info["name"] for w, info in client.scheduler_info()["workers"].items()}
    assert busy, "no worker took a task"
    victim = workers[int(names[busy[0]][1:])]
    os.killpg(victim.pid, signal.SIGKILL)
    out, err = on_cluster.communicate(timeout=240)
    assert on_cluster.returncode == 0, err
    assert_same_runs(metrics_of(tmp_path / "local"), metrics_of(tmp_path / "cluster"))
    assert not [p for p in (tmp_path / "cluster").iterdir() if p.name.startswith(".tmp")]  # nothing half-written


def test_an_unreachable_cluster_is_one_line(cli, tmp_path):
    pytest.importorskip("distributed")
    r = cli(*ARGS, "--cluster", "tcp://127.0.0.1:9", store=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no Dask scheduler answers at tcp://127.0.0.1:9")
    assert not any(tmp_path.glob("moons-*"))


def children(pid: int) -> list[int]:
    """Every process below pid (from /proc), deepest included."""
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry))
                    frontier.append(int(entry))
    return out


def loky_workers(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        try:
            cmd = open(f"/proc/{child}/cmdline").read()
        except OSError:
            continue
        if "loky" in cmd and "resource_tracker" not in cmd:
            found.append(child)
    return found


def test_a_killed_loky_worker_loses_only_its_run_which_is_run_again(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "dualscale", *ARGS, "--jobs", "2", "--store", str(tmp_path)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers = wait_until(lambda: len(loky_workers(p.pid)) >= 2 and loky_workers(p.pid), 60, "two loky workers")
    time.sleep(2)  # both are training now
    os.kill(workers[0], signal.SIGKILL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert len(Store(tmp_path).runs()) == 2  # the killed worker's run was trained again


def test_workers_die_with_their_client(tmp_path):
    p = start(["dualscale", *ARGS, "--steps", "20000", "--jobs", "2", "--store", str(tmp_path)])
    workers = wait_until(lambda: len(loky_workers(p.pid)) >= 2 and loky_workers(p.pid), 60, "two loky workers")
    time.sleep(1)
    os.kill(p.pid, signal.SIGKILL)  # the client alone
    p.wait()
    wait_until(lambda: not any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"
                             for w in workers), 15, "the orphaned workers to exit")


def test_losing_the_dask_scheduler_is_one_line_that_says_how_to_resume(tmp_path, dask_cluster):
    address, workers = dask_cluster
    p = subprocess.Popen([sys.executable, "-m", "dualscale", *ARGS, "--steps", "20000", "--cluster", address,
                          "--store", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    from distributed import Client

    with Client(address, timeout=30) as client:
        wait_until(lambda: any(client.processing().values()), 60, "a worker to take a run")
    scheduler = next(q for q in psutil_free_procs() if "dask scheduler" in q[1] and address.rsplit(":", 1)[1] in q[1]
                     or "dask scheduler" in q[1])
    os.kill(scheduler[0], signal.SIGKILL)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the Dask scheduler at {address}") and "run the same command again" in last
    assert "Traceback" not in err, err


def psutil_free_procs():
    """(pid, command line) of every process, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out.append((int(entry), open(f"/proc/{entry}/cmdline").read().replace("\0", " ")))
            except OSError:
                continue
    return out
