"""METRICS: every number a run reports, in one ordered registry, and the functions behind them.

A spec says how to print the metric (label, unit, digits), which way is better, what it means,
and how it is computed: `measured` ones are timed or averaged while a run is evaluated
(evaluate.py); `from_samples` ones are a function of (real points, generated samples), so they
can be recomputed from any stored run. Every table, CSV column, page and CLI line reads this.
Adding a metric = one entry here (+ its function).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str                 # the key in run.json and in every frame
    label: str                # column title in the paper's tables and CSVs
    short: str                # narrow column title on the dashboard
    unit: str                 # "s", "bits", "" (for help and axis titles)
    digits: int               # decimals wherever the value is printed
    lower_is_better: bool
    help: str                 # one sentence: what it measures
    from_samples: Callable[[np.ndarray, np.ndarray], float] | None = None  # (real, samples) -> value

    def format(self, value: float, signed: bool = False) -> str:
        return f"{value:{'+' if signed else ''}.{self.digits}f}"


def kl_divergence(real: np.ndarray, samples: np.ndarray, k: int = 5) -> float:
    """kNN estimate of KL(real || samples) in bits (Wang, Kulkarni & Verdu 2009).

    The NPEET `kldiv(real, samples, k)` estimator: with n real and m sampled points in d dims,
    rho_i = max-norm distance from real point i to its k-th nearest other real point,
    nu_i = max-norm distance to its k-th nearest sample,
    KL = (ln m - ln(n - 1) + d * mean(ln nu_i - ln rho_i)) / ln 2.
    """
    from scipy.spatial import cKDTree  # lazy: scipy is slow to import and only this needs it

    real = _points("real", real)
    samples = _points("samples", samples)
    n, d = real.shape
    m = len(samples)
    if real.shape[1] != samples.shape[1]:
        raise ValueError(f"real and samples differ in dimension: {d} vs {samples.shape[1]}")
    if not 1 <= k < min(n, m + 1):
        raise ValueError(f"k must be in 1..{min(n - 1, m)} for {n} real and {m} sampled points, got {k}")
    # k as a list asks the tree for that neighbour alone; k + 1 skips the point itself.
    rho = cKDTree(real).query(real, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]
    nu = cKDTree(samples).query(real, k=[k], p=np.inf, workers=-1)[0][:, 0]
    if np.any(rho == 0):
        raise ValueError("real points contain more than k duplicates of one point; the estimator needs distinct points")
    with np.errstate(divide="ignore"):  # a sample exactly on a real point gives ln 0 = -inf: KL -> -inf
        diff = np.log(nu) - np.log(rho)
    return float((math.log(m) - math.log(n - 1) + d * diff.mean()) / math.log(2))


def _points(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("training_time", "Training Time (s)", "train s", "s", 2, True,
           "Wall-clock seconds of the optimizer steps (previews excluded); depends on the machine."),
    Metric("eval_loss", "Eval Loss", "loss", "", 3, True,
           "MSE of the predicted noise over one pass of all training points with fresh t and noise "
           "(the online model, mean of per-batch means)."),
    Metric("inference_time", "Inference Time (s)", "infer s", "s", 3, True,
           "Wall-clock seconds to draw the evaluation samples through all T reverse steps (EMA model)."),
    Metric("kl_divergence", "KL Divergence", "KL", "bits", 3, True,
           "kNN estimate (k = 5) of KL(data || samples) in bits; a fresh draw of the data itself scores "
           "about -0.07 to +0.02, the estimator's floor.", kl_divergence),
)}


def sample_metrics(real: np.ndarray, samples: np.ndarray) -> dict[str, float]:
    """Every registry metric that is a function of the generated samples, computed on these."""
    return {name: m.from_samples(real, samples) for name, m in METRICS.items() if m.from_samples}
