"""Distances between point clouds. Pure functions on numpy arrays."""
from __future__ import annotations

import math

import numpy as np


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
