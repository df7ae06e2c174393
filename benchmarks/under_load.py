"""A run on a busy machine: wall seconds of one short `train` with each thread setting, on a quiet
machine and beside competing busy processes, measured in one run.

    python benchmarks/under_load.py [--repeats 3] [--load 2] [--steps 300]

Each measurement is a whole `python -m dualscale train` process (start-up included), in a fresh
store. "load" starts `--load` processes that spin on the CPU for the whole measurement (what a
sweep or another user's job does to a 2-core machine). Prints the median (min-max) per setting
and the ratio to one thread in the same condition. The settings:
  threads 1                 one torch thread
  threads 2, OMP active     two threads, libgomp's default wait policy (threads spin while waiting)
  threads 2, OMP passive    two threads, OMP_WAIT_POLICY=PASSIVE (what dualscale sets by default)
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"threads 1": (1, "PASSIVE"), "threads 2, OMP active": (2, "ACTIVE"),
            "threads 2, OMP passive": (2, "PASSIVE")}


def spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def one_run(threads: int, policy: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "OMP_WAIT_POLICY": policy, "TQDM_DISABLE": "1"}
        cmd = [sys.executable, "-m", "dualscale", "train", "--dataset", "moons", "--variant", "adaptive",
               "--steps", str(steps), "--n-points", "2000", "--n-samples", "500", "--threads", str(threads),
               "--store", store]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def measure(load: int, repeats: int, steps: int) -> dict[str, list[float]]:
    stop = mp.Event()
    spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(load)]
    for p in spinners:
        p.start()
    try:
        out = {name: [] for name in SETTINGS}
        for _ in range(repeats):  # interleaved, so a drift in the machine hits every setting alike
            for name, (threads, policy) in SETTINGS.items():
                out[name].append(one_run(threads, policy, steps))
        return out
    finally:
        stop.set()
        for p in spinners:
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=2, help="competing busy processes (default: 2)")
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores; one `train` of {a.steps} steps (moons, adaptive, 2,000 points), "
          f"median of {a.repeats} (min-max), wall seconds of the whole process")
    for load in (0, a.load):
        times = measure(load, a.repeats, a.steps)
        base = statistics.median(times["threads 1"])
        print(f"\n{'quiet' if load == 0 else f'{load} busy processes beside it'}:")
        for name, xs in times.items():
            m = statistics.median(xs)
            print(f"  {name:24s} {m:7.2f} s ({min(xs):.2f}-{max(xs):.2f})  x{m / base:.2f} of one thread")


if __name__ == "__main__":
    main()
