"""The estimator floor of every sample metric: what a perfect model would score.

A perfect model's samples are a fresh draw of the data itself, so the floor of a metric on a
dataset is the metric of the reference's training points (seed 42, 100,000) against a second,
independent draw (seed 43, 10,000 points: the evaluation's sample count). Writes
dualscale/floors.json, which the dashboard and `verdict` show beside each metric.

    python benchmarks/floors.py [--datasets circle dino ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dualscale.data import DATASETS, make_dataset  # noqa: E402
from dualscale.metrics import FLOOR_SETTINGS, METRICS  # noqa: E402


def floors(dataset: str) -> dict[str, float]:
    real = make_dataset(dataset, FLOOR_SETTINGS["n_points"], seed=42)
    fresh = make_dataset(dataset, FLOOR_SETTINGS["n_samples"], seed=FLOOR_SETTINGS["second_seed"])
    return {name: m.from_samples(real, fresh) for name, m in METRICS.items() if m.from_samples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    a = p.parse_args()
    out = {"settings": FLOOR_SETTINGS, "floors": {}}
    for d in a.datasets:
        t0 = time.perf_counter()
        out["floors"][d] = floors(d)
        print(d, {k: round(v, 4) for k, v in out["floors"][d].items()}, f"{time.perf_counter() - t0:.1f} s")
    path = ROOT / "dualscale" / "floors.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
