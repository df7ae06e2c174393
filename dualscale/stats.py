"""Paired comparisons over seeds: does variant a beat variant b on a metric, and how sure are we?

Runs are paired by seed among runs whose other settings are identical (the same seed gives the
variants the same data order, t and noise, so pairing removes most of the noise). For each
(settings, dataset, metric, a, b): n pairs, the mean difference a - b and its sd, the paired
Student-t 95% interval (primary), a bootstrap interval (check), the paired-t and Wilcoxon
signed-rank p-values, the Holm-adjusted p over all comparisons shown, and a verdict word:
  better / worse  - the difference is significant after Holm (in the metric's direction);
  no difference   - the 95% interval lies inside +- the metric's practical margin (registry);
  inconclusive    - neither; with the seeds needed to resolve the observed effect at 80% power.
Runs without a partner are returned too (Unpaired), never silently dropped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import SELECTION, TrainConfig, fields
from .metrics import METRICS

PAIRS = (("adaptive", "baseline"), ("adaptive", "fixed"), ("fixed", "baseline"))
ALPHA = 0.05   # two-sided level of every test and interval
POWER = 0.80   # for the seeds-needed estimate
MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Comparison:
    dataset: str
    metric: str
    a: str
    b: str
    n: int
    mean_diff: float           # mean of a - b over the paired seeds
    sd: float                  # sd of the paired differences
    ci_low: float              # paired Student-t 95% interval of the mean difference
    ci_high: float
    boot_low: float            # bootstrap (BCa) 95% interval, a check on the t interval
    boot_high: float
    p: float                   # paired t-test
    p_wilcoxon: float          # Wilcoxon signed-rank test
    p_holm: float = math.nan   # p after Holm's correction over all comparisons shown
    verdict: str = ""
    seeds_needed: int | None = None  # inconclusive only: n for 80% power at the observed effect, Holm's level
    seeds: tuple = ()          # the paired seeds
    values_a: tuple = ()       # per-seed values, in the order of `seeds`
    values_b: tuple = ()
    settings: str = ""         # what the runs' other settings are, for labels (run id minus its head)
    variant: str = ""          # comparisons of schedules: the variant both sides share

    def to_json(self) -> dict:
        keys = ("dataset", "metric", "a", "b", "n", "mean_diff", "ci_low", "ci_high", "p", "p_holm", "verdict")
        d = asdict(self)
        return {**{k: d[k] for k in keys}, **{k: d[k] for k in d if k not in keys}}


@dataclass(frozen=True)
class Unpaired:
    dataset: str
    variant: str
    seed: int
    missing: str               # the variant it has no partner in
    run_id: str = ""


@dataclass
class Verdicts:
    comparisons: list[Comparison] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"comparisons": [asdict(c) for c in self.comparisons], "unpaired": [asdict(u) for u in self.unpaired]}

    @classmethod
    def from_json(cls, d: dict) -> "Verdicts":
        comparisons = [Comparison(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                       for c in d["comparisons"]]
        return cls(comparisons, [Unpaired(**u) for u in d["unpaired"]])


def runs_key(runs, metrics) -> str:
    """A fingerprint of the runs and their values of `metrics`: what a stored verdict depends on."""
    import hashlib
    import json

    items = sorted((r.id, [r.metrics.get(m) for m in metrics]) for r in runs)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def paired_t(d: np.ndarray) -> tuple[float, float, float, float, float]:
    """mean, sd, t-interval low, high and the two-sided p of the paired differences d."""
    from scipy import stats

    n, mean = len(d), float(np.mean(d))
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    if n < 2:
        return mean, sd, -math.inf, math.inf, 1.0
    if sd == 0:  # every pair differs by the same amount: no spread to test against
        return mean, sd, mean, mean, 1.0 if mean == 0 else 0.0
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return mean, sd, mean - half, mean + half, p


def bootstrap_ci(d: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap 95% interval of the mean (scipy.stats.bootstrap, 1,999 resamples, seeded)."""
    from scipy import stats

    if len(d) < 3 or np.all(d == d[0]):
        return (float(d.min()), float(d.max())) if len(d) else (math.nan, math.nan)
    res = stats.bootstrap((d,), np.mean, confidence_level=1 - ALPHA, n_resamples=1999,
                          method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_p(d: np.ndarray) -> float:
    from scipy import stats

    if len(d) < 2 or np.all(d == 0):
        return 1.0
    # exact null distribution without ties or zeros; with them scipy would fall back to a slow
    # permutation test (~50 ms each, measured), so use the normal approximation there
    ties = np.any(d == 0) or len(np.unique(np.abs(d))) < len(d)
    return float(stats.wilcoxon(d, method="approx" if ties else "exact").pvalue)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979): the i-th smallest p times (m - i), made monotone."""
    order = np.argsort(ps, kind="stable")
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def seeds_needed(mean: float, sd: float, alpha: float = ALPHA) -> int | None:
    """Smallest n whose paired t-test detects `mean` with POWER at level `alpha` (noncentral t);
    None when the effect is 0 or would need more than MAX_SEEDS seeds."""
    from scipy import stats

    if not math.isfinite(sd) or sd <= 0 or mean == 0:
        return None
    n = 2
    while n <= MAX_SEEDS:
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = abs(mean) / (sd / math.sqrt(n))
        if stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= POWER:
            return n
        n = n + 1 if n < 100 else int(n * 1.1)
    return None


def verdict_word(c: Comparison) -> str:
    metric = METRICS[c.metric]
    if c.p_holm < ALPHA:
        good = (c.mean_diff < 0) == metric.lower_is_better
        return "better" if good else "worse"
    if metric.margin is not None and -metric.margin <= c.ci_low and c.ci_high <= metric.margin:
        return "no difference"
    return "inconclusive"


SCHEDULE_FIELDS = ("beta_schedule", "beta_end", "prediction")  # what makes a noise schedule


def schedule_label(row) -> str:
    """'linear', 'linear, beta_end 0.1', 'cosine', 'zero_snr, v': a run's schedule in words (row: dict or config)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    parts = [get("beta_schedule")]
    if float(get("beta_end")) != 0.02:
        parts.append(f"beta_end {get('beta_end'):g}")
    if get("prediction") != "eps":
        parts.append(get("prediction"))
    return ", ".join(parts)


def compare_schedules(frame, metrics=None, against: str = "linear") -> Verdicts:
    """Each schedule in `frame` against `against`, paired by (dataset, variant, seed): how much the
    schedule moves each metric (Holm over all). Eval loss is left out by default: under v-prediction
    it measures another target."""
    frame = frame.assign(schedule=[schedule_label(r) for r in frame.to_dict("records")])
    others = [s for s in dict.fromkeys(frame.schedule) if s != against]
    metrics = metrics or [m for m, spec in METRICS.items() if spec.margin is not None and m != "eval_loss"]
    return compare(frame, metrics, [(s, against) for s in others], by="schedule", by_fields=SCHEDULE_FIELDS)


def compare(frame, metrics=None, pairs=PAIRS, by: str = "variant", by_fields: tuple = ()) -> Verdicts:
    """Every paired comparison the runs in `frame` (paper.metrics_frame) allow, with Holm over each
    family: the comparisons among runs of one set of training settings (one experiment).

    by: the column whose values are compared in `pairs` (variants, or schedules); runs pair by seed
    among runs whose other settings (all but `by`, `by_fields` and the seed) are identical."""
    metrics = list(metrics) if metrics else [m for m, spec in METRICS.items() if spec.margin is not None]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    frame = frame.drop_duplicates("run_id")  # a config stored locally and shipped counts once
    names = {f.name for f in fields()}
    others = [c for c in frame.columns if c in names and c not in (by, *by_fields, "seed")]
    out = Verdicts()
    for key, group in frame.groupby(others, sort=False, dropna=False):
        settings = dict(zip(others, key if isinstance(key, tuple) else (key,)))
        for a, b in pairs:
            runs_a = group[group[by] == a].set_index("seed")
            runs_b = group[group[by] == b].set_index("seed")
            if runs_a.empty or runs_b.empty:
                continue
            seeds = sorted(set(runs_a.index) & set(runs_b.index))
            out.unpaired += _unpaired(settings["dataset"], runs_a, runs_b, a, b)
            if len(seeds) < 2:
                continue
            for m in metrics:
                if m not in group.columns:
                    continue
                have = [s for s in seeds if np.isfinite(float(runs_a.loc[s, m])) and np.isfinite(float(runs_b.loc[s, m]))]
                if len(have) >= 2:  # a run scored before this metric existed has NaN: `rescore` fills it
                    out.comparisons.append(_one(settings, m, a, b, have, runs_a, runs_b, by))
    # Holm within each family: the comparisons of one group of settings (one experiment) together
    families: dict[str, list[int]] = {}
    for i, c in enumerate(out.comparisons):
        families.setdefault(c.settings, []).append(i)
    judged = list(out.comparisons)
    for members in families.values():
        adjusted = holm([out.comparisons[i].p for i in members])
        for i, p in zip(members, adjusted):
            judged[i] = _judged(out.comparisons[i], p, len(members))
    out.comparisons = judged
    out.unpaired = list(dict.fromkeys(out.unpaired))
    return out


def _unpaired(dataset, runs_a, runs_b, a, b) -> list[Unpaired]:
    lone_a = [Unpaired(dataset, a, int(s), b, str(runs_a.loc[s, "run_id"])) for s in runs_a.index if s not in runs_b.index]
    lone_b = [Unpaired(dataset, b, int(s), a, str(runs_b.loc[s, "run_id"])) for s in runs_b.index if s not in runs_a.index]
    return lone_a + lone_b


def _one(settings, metric, a, b, seeds, runs_a, runs_b, by="variant") -> Comparison:
    va = np.array([float(runs_a.loc[s, metric]) for s in seeds])
    vb = np.array([float(runs_b.loc[s, metric]) for s in seeds])
    d = va - vb
    mean, sd, lo, hi, p = paired_t(d)
    blo, bhi = bootstrap_ci(d)
    label = ", ".join(f"{k}={v}" for k, v in settings.items()  # what differs from the reference settings
                      if k not in SELECTION and v != getattr(TrainConfig, k, v))
    return Comparison(settings["dataset"], metric, a, b, len(seeds), mean, sd, lo, hi, blo, bhi, p,
                      wilcoxon_p(d), seeds=tuple(int(s) for s in seeds), values_a=tuple(va.tolist()),
                      values_b=tuple(vb.tolist()), settings=label,
                      variant="" if by == "variant" else str(settings.get("variant", "")))


def _judged(c: Comparison, p_holm: float, m: int) -> Comparison:
    """Holm's p, the verdict word, and for an inconclusive comparison the seeds that would make
    it significant at 80% power even at Holm's strictest level (ALPHA / m comparisons)."""
    from dataclasses import replace

    c = replace(c, p_holm=p_holm)
    word = verdict_word(c)
    need = seeds_needed(c.mean_diff, c.sd, ALPHA / m) if word == "inconclusive" else None
    return replace(c, verdict=word, seeds_needed=need)


def winners(comparisons: list[Comparison], present: dict[str, set] | None = None) -> dict[tuple[str, str], str]:
    """(dataset, metric) -> the variant significantly better than every other variant (after Holm);
    absent where no variant is. present: dataset -> the variants with runs there; a variant with
    runs but no pairs (one seed) is a rival nobody has beaten."""
    beats: dict[tuple[str, str, str], set] = {}
    rivals: dict[tuple[str, str, str], set] = {}
    for c in comparisons:
        for v, w in ((c.a, c.b), (c.b, c.a)):
            rivals.setdefault((c.dataset, c.metric, v), set()).add(w)
            rivals[c.dataset, c.metric, v] |= (present or {}).get(c.dataset, set()) - {v}
        if c.verdict in ("better", "worse"):
            win, lose = (c.a, c.b) if c.verdict == "better" else (c.b, c.a)
            beats.setdefault((c.dataset, c.metric, win), set()).add(lose)
    return {(d, m): v for (d, m, v), others in rivals.items() if beats.get((d, m, v), set()) >= others}
