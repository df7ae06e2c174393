"""A run on a busy machine: wall seconds of one short `train` with each thread setting, on a quiet
machine and beside competing busy processes, measured in one run.

    python benchmarks/under_load.py [--repeats 3] [--load 2] [--steps 300]

Each measurement is a whole `python -m dualscale train` process (start-up included), in a fresh
store. "load" starts `--load` processes that spin on the CPU for the whole measurement (what a
sweep or another user's job does to a 2-core machine). Prints the median (min-max) of the training
ms per step per setting and the ratio to one thread in the same condition. The settings:
  threads 1                 one torch thread
  threads 2, OMP active     two threads, libgomp's default wait policy (threads spin while waiting)
  threads 2, OMP passive    two threads, OMP_WAIT_POLICY=PASSIVE (threads sleep at once while waiting)
  threads 2, spin N         two threads, no wait policy, GOMP_SPINCOUNT=N (spin N times, then sleep)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"threads 1": (1, "PASSIVE", None), "threads 2, OMP active": (2, "ACTIVE", None),
            "threads 2, OMP passive": (2, "PASSIVE", None),
            # libgomp without a wait policy spins GOMP_SPINCOUNT times, then sleeps: between the two
            "threads 2, spin 10k": (2, "", "10000"), "threads 2, spin 100k": (2, "", "100000"),
            "threads 2, spin 1M": (2, "", "1000000")}


def spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def one_run(threads: int, policy: str, spincount: str | None, steps: int) -> tuple[float, float]:
    """(wall seconds of the whole process, ms per training step it reports)."""
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "OMP_WAIT_POLICY": policy, "TQDM_DISABLE": "1"}  # "" : no policy (dualscale keeps it)
        env.pop("GOMP_SPINCOUNT", None)
        if spincount is not None:
            env["GOMP_SPINCOUNT"] = spincount
        cmd = [sys.executable, "-m", "dualscale", "train", "--dataset", "dino", "--variant", "adaptive",
               "--steps", str(steps), "--n-points", "2000", "--n-samples", "500", "--threads", str(threads),
               "--store", store]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
        return wall, json.loads(out.strip().splitlines()[-1])["training_time"] / steps * 1000


def measure(load: int, repeats: int, steps: int) -> dict[str, list[float]]:
    stop = mp.Event()
    spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(load)]
    for p in spinners:
        p.start()
    try:
        out = {name: [] for name in SETTINGS}
        for _ in range(repeats):  # interleaved, so a drift in the machine hits every setting alike
            for name, (threads, policy, spincount) in SETTINGS.items():
                out[name].append(one_run(threads, policy, spincount, steps))
        return out
    finally:
        stop.set()
        for p in spinners:
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=2, help="competing busy processes (default: 2)")
    ap.add_argument("--steps", type=int, default=600)
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores; one `train` of {a.steps} steps (dino, adaptive, batch 256), median of "
          f"{a.repeats} (min-max) of the training ms per step each process reports")
    for load in (0, a.load):
        times = measure(load, a.repeats, a.steps)
        base = statistics.median(ms for _, ms in times["threads 1"])
        print(f"\n{'quiet' if load == 0 else f'{load} busy processes beside it'}:")
        for name, xs in times.items():
            ms = [m for _, m in xs]
            wall = statistics.median(w for w, _ in xs)
            m = statistics.median(ms)
            print(f"  {name:24s} {m:7.2f} ms/step ({min(ms):.2f}-{max(ms):.2f})  x{m / base:.2f} of one thread"
                  f"   (process {wall:.1f} s)")


if __name__ == "__main__":
    main()
