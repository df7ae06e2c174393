"""Confidence sequences for the mean of paired differences: intervals that stay valid however
often seeds are added and the verdict is looked at (optional stopping).

The sequence is Lai's (1976) t-mixture, as analysed by Wang & Ramdas (2023, "Anytime-valid
t-tests and confidence sequences for Gaussian means with unknown variance", Sequential
Analysis 44(1)). For differences x_1..x_n ~ N(mu, sigma^2), sigma unknown, and a candidate mean
m, let y_i = x_i - m. The likelihood ratio of the scale-invariant statistic y / |y| with the
standardised effect delta = mu / sigma mixed over N(0, TAU^2), against delta = 0, is

    L_n(m) = (1 + n TAU^2)^(-1/2) * (V / (V - S^2 / (n + TAU^-2)))^(n / 2),   S = sum y_i, V = sum y_i^2

(the scale integrates out against the right-Haar measure ds / s). Under mu = m it is a
nonnegative martingale with L_1 = 1 for the scale-invariant filtration, so by Ville's inequality
P(exists n: L_n(mu) >= 1 / alpha) <= alpha. The set {m : L_n(m) < 1 / alpha} is an interval in
closed form (`halfwidth`): with d = mean - m and SS the sum of squared deviations,

    d^2 < SS c / (a - n c),   c = 1 - K^-1,  K = ((1 + n TAU^2)^(1/2) / alpha)^(2/n),  a = n / (1 + 1 / (n TAU^2))

and the whole line while a <= n c. TAU = 1 (a prior sd of one sd on the effect) keeps it finite
from n = 5 at alpha = 0.05 and about 1.7x the fixed-n t-interval's width at n = 10 to 100.

Measured here (tests/lib/test_sequential.py, 4,000 sequences, looking after every n from 5 to
200, alpha 0.05): no true difference is declared in 3.4% of Gaussian and 1.9% of Student-t(3)
sequences; the fixed-n t-interval declares one in 39%. The guarantee assumes roughly symmetric
differences: for strongly skewed ones (a centred lognormal) it failed in 25%.
"""
from __future__ import annotations

import numpy as np

TAU = 1.0        # prior sd of the standardised effect mu / sigma in the mixture
MAX_SEEDS = 10_000  # projections beyond this are "more than MAX_SEEDS"


def halfwidth(n, ss, alpha: float, tau: float = TAU) -> np.ndarray:
    """The sequence's half-width after n differences with sum of squared deviations ss (arrays
    broadcast); inf where it is still the whole line (always for n < 2)."""
    n = np.asarray(n, dtype=float)
    ss = np.asarray(ss, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = (2.0 / n) * (0.5 * np.log1p(n * tau ** 2) - np.log(alpha))
        c = -np.expm1(-log_k)                 # 1 - 1/K, without cancellation
        a = n / (1.0 + 1.0 / (n * tau ** 2))  # n^2 / (n + tau^-2)
        den = a - n * c
        h = np.where(den > 0, np.sqrt(np.maximum(ss, 0.0) * c / den), np.inf)
    return np.where(n >= 2, h, np.inf)


def confidence_sequence(diffs, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): entry i is the two-sided interval for the mean after the first i + 1 differences,
    valid at level alpha simultaneously over all i. Infinite (the whole line) for i + 1 < 2 and
    where the data do not yet pin the mean; finite for every n >= 5 at alpha = 0.05."""
    x = np.asarray(diffs, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"diffs must be one-dimensional, got shape {x.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = np.arange(1, len(x) + 1)
    centre = x.mean() if len(x) else 0.0  # centring changes neither the deviations nor the mean
    s1, s2 = np.cumsum(x - centre), np.cumsum((x - centre) ** 2)
    mean = s1 / n + centre
    h = halfwidth(n, s2 - s1 ** 2 / n, alpha)
    return mean - h, mean + h


def seeds_to_decide(mean: float, sd: float, margin: float | None, alpha: float) -> int | None:
    """A projection, not a promise: the smallest n at which the sequence (at level alpha) would reach
    a decision if the true difference were `mean` and the spread stayed `sd`: either exclude 0
    (half-width < |mean|) or sit inside +- margin (half-width < margin - |mean|). None: beyond
    MAX_SEEDS, or no spread to project from."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or sd <= 0:
        return None
    target = max(abs(mean), (margin - abs(mean)) if margin is not None else 0.0)
    if target <= 0:
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    ok = np.nonzero(halfwidth(n, (n - 1) * sd ** 2, alpha) < target)[0]
    return int(n[ok[0]]) if len(ok) else None
