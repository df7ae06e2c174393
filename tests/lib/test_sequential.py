"""The confidence sequence that decides the verdict (dualscale/sequential.py): valid under
optional stopping, where the fixed-n t-interval is not; exact values of the closed form."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from dualscale.sequential import halfwidth, seeds_to_decide
from dualscale.stats import confidence_sequence

SEQUENCES, LONGEST, FIRST_LOOK = 4000, 200, 5
# Monte Carlo error: a true 5% over 4,000 sequences has an sd of 0.34%; 5.7% is two of them above.
ALLOWED = 0.05 + 2 * math.sqrt(0.05 * 0.95 / SEQUENCES)


def ever_excludes(draw, interval, alpha=0.05, shift=0.0) -> float:
    """Share of sequences whose interval, looked at after every n from FIRST_LOOK to LONGEST, ever
    leaves out `shift` (the true mean)."""
    hits = 0
    for x in draw():
        low, high = interval(x, alpha)
        hits += bool(np.any(((low > shift) | (high < shift))[FIRST_LOOK - 1:]))
    return hits / SEQUENCES


def fixed_n_t(x, alpha):
    n = np.arange(1, len(x) + 1)
    mean = np.cumsum(x) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((np.cumsum(x ** 2) - n * mean ** 2) / (n - 1))
    h = sps.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    h[0] = np.inf
    return mean - h, mean + h


@pytest.mark.parametrize("name", ["gaussian", "student-t 3 df"])
def test_no_difference_is_declared_in_at_most_5_percent_of_sequences_however_often_we_look(name):
    rng = np.random.default_rng(2018)
    draw = {"gaussian": lambda: rng.standard_normal((SEQUENCES, LONGEST)),
            "student-t 3 df": lambda: rng.standard_t(3, (SEQUENCES, LONGEST))}[name]
    assert ever_excludes(draw, confidence_sequence) <= ALLOWED


def test_the_fixed_n_t_interval_fails_the_same_test():
    """Why the decision does not use it: looked at after every seed, its 95% is not 95%."""
    rng = np.random.default_rng(2018)
    assert ever_excludes(lambda: rng.standard_normal((SEQUENCES, LONGEST)), fixed_n_t) > 0.25


def test_a_half_sd_difference_is_detected_by_100_seeds_in_at_least_80_percent():
    rng = np.random.default_rng(7)
    found = 0
    for x in rng.standard_normal((2000, 100)) + 0.5:
        low, _ = confidence_sequence(x)
        found += bool(np.any(low[FIRST_LOOK - 1:] > 0))
    assert found / 2000 >= 0.80


def test_shape_finiteness_and_a_value_worked_by_hand():
    x = np.array([0.3, -0.1, 0.4, 0.2, 0.0, 0.5])
    low, high = confidence_sequence(x)
    assert low.shape == high.shape == (6,) and np.all(np.isinf(low[:1]))
    assert np.all(np.isfinite(low[4:])) and np.all(np.isfinite(high[4:]))  # finite from n = 5
    # n = 6: mean 0.21667, SS = sum of squared deviations = 0.268333; tau = 1, alpha = 0.05:
    # K = (sqrt(7) / 0.05)^(1/3), c = 1 - 1/K, a = 6 / (1 + 1/6), h^2 = SS c / (a - 6 c)
    k = (math.sqrt(7) / 0.05) ** (1 / 3)
    c, a = 1 - 1 / k, 6 / (1 + 1 / 6)
    h = math.sqrt(0.2683333333 * c / (a - 6 * c))
    assert (low[-1], high[-1]) == (pytest.approx(0.2166667 - h, abs=1e-6), pytest.approx(0.2166667 + h, abs=1e-6))
    assert h == pytest.approx(0.5154, abs=1e-4)  # about 2.1x the t-interval's 0.2431 at this n


def test_the_sequence_narrows_like_one_over_root_n_and_contains_the_t_interval():
    n = np.array([10, 30, 100, 1000])
    h = halfwidth(n, (n - 1) * 1.0, 0.05)  # sd 1
    assert np.all(np.diff(h) < 0)
    t = sps.t.ppf(0.975, n - 1) / np.sqrt(n)
    assert np.all(h > t) and np.all(h < 2.2 * t)


def test_projection_is_where_the_halfwidth_first_falls_below_the_difference():
    n = seeds_to_decide(0.5, 1.0, None, 0.05)
    assert halfwidth(n, (n - 1), 0.05) < 0.5 <= halfwidth(n - 1, (n - 2), 0.05)
    assert seeds_to_decide(0.0, 1.0, 0.5, 0.05) == seeds_to_decide(0.5, 1.0, None, 0.05)  # inside the margin
    assert seeds_to_decide(1e-6, 1.0, None, 0.05) is None  # beyond 10,000 seeds
    assert seeds_to_decide(0.5, 0.0, None, 0.05) is None
