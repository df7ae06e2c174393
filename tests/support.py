"""Helpers the tests (and tests/app/screenshots.py) import: the project root, the small test
runs and how to build, copy and clean a store of them. The fixtures built on them live in
conftest.py.

Real runs through the engine (train -> evaluate -> store), with settings small enough to take
seconds: the dashboard is tested against the same files a user's store holds.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from dualscale import Store, TrainConfig  # first: it sets torch's OpenMP wait policy before torch loads
from dualscale.runs import run_config

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The settings of every test run: a few seconds each on 2 CPU cores.
SMALL = dict(steps=150, n_points=2000, batch_size=128, n_samples=500)
RUNS = [("moons", "baseline", 0), ("moons", "baseline", 1), ("moons", "fixed", 0), ("moons", "adaptive", 0),
        ("moons", "adaptive", 1), ("circle", "adaptive", 0)]


def small_config(dataset: str, variant: str, seed: int, **over) -> TrainConfig:
    return TrainConfig(dataset=dataset, variant=variant, seed=seed, **{**SMALL, **over})


def build_store(root: Path) -> Path:
    """Train RUNS into root (in this process: no interpreter start-up per run).

    One torch thread: these models are tiny, and two threads spin-waiting on a 2-core machine
    that is also running something else made this 20x slower (measured).
    """
    store, threads = Store(root), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for dataset, variant, seed in RUNS:
            for _ in run_config(small_config(dataset, variant, seed), store, device="cpu"):
                pass
    finally:
        torch.set_num_threads(threads)
    return root


def copy_store(src: Path, dst: Path) -> Path:
    """A private, writable copy (tests that train must not change the shared store)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("locks", "progress"))
    return dst


def stop_workers(root: Path, timeout: float = 10.0) -> None:
    """SIGTERM every worker still training into root (a failed test must not leave one)."""
    pids = [a["pid"] for a in Store(root).active()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while Store(root).active() and time.time() < deadline:
        time.sleep(0.2)
