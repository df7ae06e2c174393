"""What scoring one run costs: the sample metrics, kl_oracle_start and start_mismatch of 10,000
samples against the 100,000 training points, from the plain points (every metric redoes the
data's side) and from a DataCloud that keeps the data's side (a sweep's worker scoring its second
and later runs of a dataset). Medians over `--repeats`, and their ratio, in one run.

    python benchmarks/scoring.py [--repeats 5] [--dataset dino]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualscale.data import make_dataset  # noqa: E402
from dualscale.metrics import DataCloud, run_scores, sliced_w2  # noqa: E402


def sliced_w2_quantile(real, samples, directions: int = 64) -> float:
    """sliced_w2 as first written: np.quantile of the data's projections for every run."""
    angles = np.pi * np.arange(directions) / directions
    dirs = np.stack([np.cos(angles), np.sin(angles)])
    proj_s = np.sort(samples @ dirs, axis=0)
    levels = (np.arange(len(samples)) + 0.5) / len(samples)
    proj_r = np.quantile(real.astype(np.float64) @ dirs, levels, axis=0, method="inverted_cdf")
    return float(np.sqrt(np.mean((proj_r - proj_s) ** 2)))


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dataset", default="dino")
    a = p.parse_args()
    real = make_dataset(a.dataset, 100_000)
    rng = np.random.default_rng(0)
    samples = real[rng.choice(len(real), 10_000)] + 0.02 * rng.standard_normal((10_000, 2))
    oracle = real[rng.choice(len(real), 10_000)] + 0.02 * rng.standard_normal((10_000, 2))
    cloud = DataCloud(real)
    assert run_scores(cloud, samples, oracle, 0.364) == run_scores(real, samples, oracle, 0.364)  # same numbers
    plain = seconds(lambda: run_scores(real, samples, oracle, 0.364), a.repeats)
    first = seconds(lambda: run_scores(DataCloud(real), samples, oracle, 0.364), a.repeats)
    kept = seconds(lambda: run_scores(cloud, samples, oracle, 0.364), a.repeats)
    assert sliced_w2_quantile(real, samples) == sliced_w2(real, samples)
    quantile = seconds(lambda: sliced_w2_quantile(real, samples), a.repeats)
    sorted_once = seconds(lambda: sliced_w2(real, samples), a.repeats)
    print(f"{a.dataset}: sliced W2, median of {a.repeats}: np.quantile {quantile:.3f} s, "
          f"sorted projections {sorted_once:.3f} s ({quantile / sorted_once:.2f}x)")
    print(f"{a.dataset}: one run's scores, median of {a.repeats}")
    print(f"  plain points        {plain:.3f} s")
    print(f"  a new DataCloud     {first:.3f} s  ({plain / first:.2f}x)")
    print(f"  a kept DataCloud    {kept:.3f} s  ({plain / kept:.2f}x)")


if __name__ == "__main__":
    main()
