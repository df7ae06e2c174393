"""METRICS: every number a run reports, in one ordered registry, and the functions behind them.

A spec says how to print the metric (label, unit, digits), which way is better, what it means,
and how it is computed: `measured` ones are timed or averaged while a run is evaluated
(evaluate.py); `from_samples` ones are a function of (real points, generated samples), so they
can be recomputed from any stored run. Every table, CSV column, page and CLI line reads this.
Adding a metric = one entry here (+ its function).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
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
    margin: float | None = None  # practical margin: a paired difference inside +-margin is "no difference"; None: not judged

    def format(self, value: float, signed: bool = False) -> str:
        return f"{value:{'+' if signed else ''}.{self.digits}f}"


def kl_divergence(real, samples: np.ndarray, k: int = 5) -> float:
    """kNN estimate of KL(real || samples) in bits (Wang, Kulkarni & Verdu 2009).

    The NPEET `kldiv(real, samples, k)` estimator: with n real and m sampled points in d dims,
    rho_i = max-norm distance from real point i to its k-th nearest other real point,
    nu_i = max-norm distance to its k-th nearest sample,
    KL = (ln m - ln(n - 1) + d * mean(ln nu_i - ln rho_i)) / ln 2.
    real: points, or a DataCloud of them (rho is then computed once for every call).
    """
    from scipy.spatial import cKDTree  # lazy: scipy is slow to import and only this needs it

    data = DataCloud.of(real)
    real = data.points
    samples = _points("samples", samples)
    n, d = real.shape
    m = len(samples)
    if real.shape[1] != samples.shape[1]:
        raise ValueError(f"real and samples differ in dimension: {d} vs {samples.shape[1]}")
    if not 1 <= k < min(n, m + 1):
        raise ValueError(f"k must be in 1..{min(n - 1, m)} for {n} real and {m} sampled points, got {k}")
    # k as a list asks the tree for that neighbour alone; k + 1 skips the point itself.
    rho = data.memo(("rho", k), lambda: cKDTree(real).query(real, k=[k + 1], p=np.inf, workers=-1)[0][:, 0])
    nu = cKDTree(samples).query(real, k=[k], p=np.inf, workers=-1)[0][:, 0]
    if np.any(rho == 0):
        raise ValueError("real points contain more than k duplicates of one point; the estimator needs distinct points")
    with np.errstate(divide="ignore"):  # a sample exactly on a real point gives ln 0 = -inf: KL -> -inf
        diff = np.log(nu) - np.log(rho)
    return float((math.log(m) - math.log(n - 1) + d * diff.mean()) / math.log(2))


class DataCloud:
    """The data's side of the sample metrics, computed once and kept: the KL estimator's rho, the
    sorted projections of sliced W2, the equal-size subset of precision and recall and its balls.
    Pass one in place of the real points to score many runs of one dataset: the values are those
    of the plain array, bit for bit (tests/lib/test_math.py); most of the work is on the data's
    side (100k points against 10k samples), so a run's metrics cost ~5x less."""

    def __init__(self, real):
        self.points = _points("real", real)
        self._memo: dict = {}

    @classmethod
    def of(cls, real) -> "DataCloud":
        return real if isinstance(real, DataCloud) else cls(real)

    def memo(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def _points(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def sliced_w2(real, samples: np.ndarray, directions: int = 64) -> float:
    """Sliced Wasserstein-2 distance (Rabin et al. 2011; Bonneel et al. 2015) over `directions`
    evenly spaced directions of the plane: per direction, the L2 distance between the two 1D
    quantile functions (the real cloud's read at the samples' m mid-quantiles), then the root of
    the mean over directions. Deterministic; low variance (it uses every point)."""
    data, samples = DataCloud.of(real), _points("samples", samples)
    real = data.points
    if real.shape[1] != 2 or samples.shape[1] != 2:
        raise ValueError("sliced_w2 takes 2D points")
    angles = np.pi * np.arange(directions) / directions
    dirs = np.stack([np.cos(angles), np.sin(angles)])  # (2, L)
    proj_s = np.sort(samples @ dirs, axis=0)  # (m, L)
    levels = (np.arange(len(samples)) + 0.5) / len(samples)
    sorted_r = data.memo(("projections", directions), lambda: np.sort(real @ dirs, axis=0))  # (n, L)
    proj_r = sorted_r[inverted_cdf_index(len(real), levels)]  # (m, L): order statistics
    return float(np.sqrt(np.mean((proj_r - proj_s) ** 2)))


def inverted_cdf_index(n: int, q: np.ndarray) -> np.ndarray:
    """The order statistic np.quantile(x, q, method="inverted_cdf") reads from n sorted values:
    the smallest i with (i + 1) / n >= q, from the same float n * q - 1 (equal to it; tested)."""
    return np.clip(np.ceil(n * q - 1), 0, n - 1).astype(np.intp)


def _equal_size(real: np.ndarray, m: int) -> np.ndarray:
    """A fixed random subset of m real points (all of them if there are fewer): precision and
    recall compare clouds of the same size (Kynkaanniemi et al. 2019)."""
    if len(real) <= m:
        return real
    return real[np.random.default_rng(0).choice(len(real), m, replace=False)]


def _balls(cloud: np.ndarray, k: int):
    """A k-d tree of the cloud and each point's radius: the distance to its k-th nearest neighbour."""
    from scipy.spatial import cKDTree

    tree = cKDTree(cloud)
    return tree, tree.query(cloud, k=[k + 1], workers=-1)[0][:, 0]


def _coverage(cloud: np.ndarray, queries: np.ndarray, k: int, balls=None) -> float:
    """Fraction of `queries` inside the union of balls around `cloud`'s points, each ball's radius
    the distance to that point's k-th nearest neighbour in `cloud` (Euclidean). Exact: the 32
    nearest centres decide most queries; the rest are checked against every ball that can reach."""
    tree, radii = balls or _balls(cloud, k)
    near = min(32, len(cloud))
    dist, idx = tree.query(queries, k=near, workers=-1)
    dist, idx = dist.reshape(len(queries), -1), idx.reshape(len(queries), -1)
    inside = (dist <= radii[idx]).any(1)
    unsure = np.flatnonzero(~inside & (dist[:, -1] <= radii.max()))  # a farther, larger ball may reach
    for i, cands in zip(unsure, tree.query_ball_point(queries[unsure], radii.max(), workers=-1)):
        cands = np.asarray(cands, dtype=int)
        inside[i] = bool(np.any(np.linalg.norm(cloud[cands] - queries[i], axis=1) <= radii[cands]))
    return float(inside.mean())


def precision(real, samples: np.ndarray, k: int = 5) -> float:
    """kNN precision (Kynkaanniemi et al. 2019): the share of samples that lie on the data's manifold
    (the union of k-NN balls around real points). Local detail: noise between the modes lowers it."""
    data, samples = DataCloud.of(real), _points("samples", samples)
    m = len(samples)
    ref = data.memo(("equal_size", m), lambda: _equal_size(data.points, m))
    return _coverage(ref, samples, k, balls=data.memo(("balls", m, k), lambda: _balls(ref, k)))


def recall(real, samples: np.ndarray, k: int = 5) -> float:
    """kNN recall (Kynkaanniemi et al. 2019): the share of real points that lie on the samples'
    manifold. Global structure: a missed or thinned-out part of the data lowers it."""
    data, samples = DataCloud.of(real), _points("samples", samples)
    m = len(samples)
    return _coverage(samples, data.memo(("equal_size", m), lambda: _equal_size(data.points, m)), k)


def start_mismatch(real, abar_last: float, n: int = 10_000, seed: int = 0) -> float:
    """KL(q(x_T) || N(0, I)) in bits: how far the true marginal at the last step, q(x_T) =
    N(sqrt(abar_T) x0, (1 - abar_T) I) with x0 from the data, lies from the N(0, I) that sampling
    starts from (Lin et al. 2024, section 3.1). The same kNN estimator as kl_divergence on n draws
    of each (fixed seed); at abar_T = 0 it reads the estimator's floor."""
    data = DataCloud.of(real)
    return data.memo(("start_mismatch", abar_last, n, seed), lambda: _start_mismatch(data.points, abar_last, n, seed))


def _start_mismatch(real: np.ndarray, abar_last: float, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    x0 = real[rng.choice(len(real), n, replace=len(real) < n)]
    x_t = math.sqrt(abar_last) * x0 + math.sqrt(1 - abar_last) * rng.standard_normal(x0.shape)
    return kl_divergence(x_t, rng.standard_normal(x0.shape))


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("training_time", "Training Time (s)", "train s", "s", 2, True,
           "Wall-clock seconds of the optimizer steps (previews excluded); depends on the machine."),
    Metric("eval_loss", "Eval Loss", "loss", "", 3, True,
           "MSE of the predicted noise over one pass of all training points with fresh t and noise "
           "(the online model, mean of per-batch means).", margin=0.002),
    Metric("inference_time", "Inference Time (s)", "infer s", "s", 3, True,
           "Wall-clock seconds to draw the evaluation samples through all T reverse steps (EMA model)."),
    Metric("kl_divergence", "KL Divergence", "KL", "bits", 3, True,
           "kNN estimate (k = 5) of KL(data || samples) in bits; a fresh draw of the data itself scores "
           "about -0.07 to +0.02, the estimator's floor.", kl_divergence, margin=0.02),
    Metric("sliced_w2", "Sliced W2", "SW2", "", 4, True,
           "Sliced Wasserstein-2 distance between samples and data over 64 directions (same units as "
           "the points); low variance.", sliced_w2, margin=0.005),
    Metric("precision", "Precision", "prec", "", 3, False,
           "Share of samples inside the data's k-NN manifold (k = 5, Kynkaanniemi et al. 2019): local "
           "detail.", precision, margin=0.01),
    Metric("recall", "Recall", "recall", "", 3, False,
           "Share of data points inside the samples' k-NN manifold (k = 5): global structure, "
           "coverage of the data.", recall, margin=0.01),
    Metric("kl_oracle_start", "KL, oracle start", "KL oracle", "bits", 3, True,
           "The KL of samples from the same model when the reverse process starts from the true q(x_T) "
           "(data noised to the last step) instead of N(0, I): what the model would score without the "
           "schedule's start mismatch. A diagnostic (it needs the data), not a sampler."),
    Metric("start_mismatch", "Start mismatch KL", "start KL", "bits", 3, True,
           "KL(q(x_T) || N(0, I)) estimated from the data: how much signal the schedule leaves at the "
           "last step (the reference's linear betas leave sqrt(abar_T) = 0.60). Depends on the data "
           "and the schedule, not on the model; 0 up to the estimator's floor at zero terminal SNR."),
)}


def sample_metrics(real, samples: np.ndarray) -> dict[str, float]:
    """Every registry metric that is a function of the generated samples, computed on these."""
    data = DataCloud.of(real)
    return {name: m.from_samples(data, samples) for name, m in METRICS.items() if m.from_samples}


def run_scores(real, samples: np.ndarray, oracle: np.ndarray | None, abar_last: float) -> dict[str, float]:
    """What a run is scored on from its samples: the sample metrics, kl_oracle_start (from the
    oracle-start samples; None: not sampled) and start_mismatch (from the data and the schedule)."""
    data = DataCloud.of(real)
    out = {**sample_metrics(data, samples), "start_mismatch": start_mismatch(data, abar_last)}
    if oracle is not None:
        out["kl_oracle_start"] = kl_divergence(data, oracle)
    return out


@lru_cache(maxsize=4)
def data_cloud(dataset: str, n_points: int) -> DataCloud:
    """The DataCloud of a dataset's training points, kept per process (a sweep's scoring workers
    score many runs of the same few datasets)."""
    from .data import make_dataset

    return DataCloud(make_dataset(dataset, n_points))


def score_runs(dataset: str, n_points: int, abar_last: float, runs: list) -> list[dict[str, float]]:
    """run_scores for each (samples, oracle) of runs on one dataset (a task of a CPU worker)."""
    data = data_cloud(dataset, n_points)
    return [run_scores(data, samples, oracle, abar_last) for samples, oracle in runs]


# The floors (benchmarks/floors.py): each sample metric of a second draw of the data (a perfect
# model) against the training points, at the reference's sizes.
FLOOR_SETTINGS = {"n_points": 100_000, "n_samples": 10_000, "second_seed": 43}


@lru_cache(maxsize=1)
def _floors() -> dict:
    return json.loads(Path(__file__).with_name("floors.json").read_text())["floors"]


def floor(dataset: str, metric: str) -> float | None:
    """What a perfect model scores on `metric` for `dataset` (None: not measured, or not a sample metric)."""
    return _floors().get(dataset, {}).get(metric)
