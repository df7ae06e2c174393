"""The verdict: paired comparisons over seeds, in declared families, decided by confidence sequences.

Runs are paired by seed among runs whose other settings are identical (the same seed gives the
variants the same data order, t and noise: pairing removes the noise they share, 91-100% of the
variance on circle, line and moons but 39% or less on dino; `pairing_gain` measures it). Every
comparison (settings, dataset, metric, a, b) belongs to one declared family (`family_of`):
  primary   - the paper's claim: KL divergence, the three pairs, the four paper datasets (12);
  secondary - every other judged metric on the paper's datasets, a family of 12 each; a dataset
              of the user's or the Datasaurus is a family of 3 per metric.
The decision uses a confidence sequence for the mean paired difference (sequential.py), at
level ALPHA / family size (Bonferroni), valid however often seeds are added; the fixed-n
Student-t interval, a bootstrap interval and the p-values (Holm within the family) are kept as
description. The decision word respects the metric's practical margin (registry; equivalence
logic as in Lakens 2018):
  better / worse                     - the sequence lies entirely beyond the margin;
  better / worse, size unclear       - it excludes 0 but reaches inside the margin;
  no practical difference            - it lies inside +- the margin (if it also excludes 0, the
                                       difference is real but negligible: `negligible`);
  undecided                          - otherwise.
Runs without a partner are returned too (Unpaired), never silently dropped.

The primary family is exploratory: its seeds (0-67 of dino, 0-9 elsewhere) were looked at while
the question was being asked. The CONFIRMATORY family was declared before its data existed: dino,
KL, the three pairs, the reference settings, seeds CONFIRM.first_seed and up only; it judges the
probability that a run of a has a lower KL than the same seed's run of b, by an anytime-valid,
distribution-free interval for a proportion (sequential.proportion_sequence) at ALPHA / 3:
  better in most seeds / worse in most seeds - the interval lies above / below 0.5;
  undecided                                  - otherwise.
Every other comparison shows the same probability of improvement, as description beside its mean,
and says where the Gaussian sequence's assumption (roughly symmetric differences) is in doubt.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import fields, settings_tag
from .data import PAPER_DATASETS
from .metrics import METRICS
from .sequential import confidence_sequence, project, proportion_sequence

PAIRS = (("adaptive", "baseline"), ("adaptive", "fixed"), ("fixed", "baseline"))
JUDGED = tuple(sorted((m for m, spec in METRICS.items() if spec.margin is not None), key=lambda m: m != "kl_divergence"))
ALPHA = 0.05   # two-sided level of each family
PRIMARY_METRIC = "kl_divergence"
BETTER, WORSE, NO_DIFFERENCE, UNDECIDED = "better", "worse", "no practical difference", "undecided"
UNCLEAR = ", size unclear"
MOST_BETTER, MOST_WORSE = "better in most seeds", "worse in most seeds"  # the confirmatory family's words
DECISIONS = (BETTER, BETTER + UNCLEAR, NO_DIFFERENCE, WORSE + UNCLEAR, WORSE, UNDECIDED,
             MOST_BETTER, MOST_WORSE)  # one word per idea
SKEW_DOUBT, SKEW_DOUBT_N = 1.0, 200  # beyond this |skewness| with fewer seeds, the Gaussian sequence is in doubt
CONFIRMATORY = "confirmatory"


@dataclass(frozen=True)
class Declared:
    """The confirmatory family, fixed before any of its seeds was trained (this commit's date:
    2026-12-04, when the store held dino seeds 0-67): the paper's central claim on the dataset where
    it was open, judged on fresh seeds only, distribution-free."""
    dataset: str = "dino"
    metric: str = "kl_divergence"
    first_seed: int = 68        # seeds below were exploratory
    max_seeds: int = 100        # fresh paired seeds at most (settle's budget)
    size: int = 3               # the three pairs: each interval at ALPHA / 3


CONFIRM = Declared()


def family_of(metric: str, dataset: str) -> tuple[str, int]:
    """(name, declared size) of the family a variant comparison belongs to."""
    if dataset in PAPER_DATASETS:
        name = "primary" if metric == PRIMARY_METRIC else f"secondary: {metric}"
        return name, len(PAIRS) * len(PAPER_DATASETS)
    return f"secondary: {metric} on {dataset}", len(PAIRS)


@dataclass(frozen=True)
class Comparison:
    dataset: str
    metric: str
    a: str
    b: str
    n: int
    mean_diff: float           # mean of a - b over the paired seeds
    sd: float                  # sd of the paired differences
    ci_low: float              # paired Student-t 95% interval at this n: descriptive (not valid after peeking)
    ci_high: float
    boot_low: float            # bootstrap (BCa) 95% interval, a check on the t interval
    boot_high: float
    p: float                   # paired t-test (descriptive)
    p_wilcoxon: float          # Wilcoxon signed-rank test (descriptive)
    p_holm: float = math.nan   # p after Holm within the family (descriptive)
    verdict: str = ""          # the decision word (one of DECISIONS); the same as `decision`
    seeds: tuple = ()          # the paired seeds
    values_a: tuple = ()       # per-seed values, in the order of `seeds`
    values_b: tuple = ()
    settings: str = ""         # what the runs' other settings are, for labels (run id minus its head)
    variant: str = ""          # comparisons of schedules: the variant both sides share
    family: str = ""           # "primary", "secondary: eval_loss", ...
    family_size: int = 0       # comparisons in the family (declared): the sequence runs at ALPHA / family_size
    cs_low: float = -math.inf  # the confidence sequence at n: what decides
    cs_high: float = math.inf
    decision: str = ""
    wins: int = 0              # seeds where a is better than b (lower, for a lower-is-better metric)
    p_improve: float = math.nan  # wins / n: the probability of improvement, distribution-free
    pi_low: float = 0.0        # its anytime-valid interval (proportion_sequence at the family's level)
    pi_high: float = 1.0
    skew: float = math.nan     # sample skewness of the paired differences
    gaussian_doubt: bool = False  # |skew| > SKEW_DOUBT with n < SKEW_DOUBT_N: read pi_low..pi_high instead
    pairing_gain: float = math.nan  # share of the variance of a - b that pairing by seed removes
    n50: int | None = None     # projection (undecided only): seeds at which the chance of deciding reaches 50%
    n80: int | None = None     # ... and 80%, if the observed difference is the true one, the spread as observed
    n50_low_end: int | None = None   # n50 if the true difference were the t-interval's low end
    n50_high_end: int | None = None  # ... its high end (None: beyond 10,000 seeds)
    projected: str = ""        # the decision it would then most likely reach

    def to_json(self) -> dict:
        keys = ("dataset", "metric", "a", "b", "n", "mean_diff", "ci_low", "ci_high", "p", "p_holm", "verdict",
                "family", "cs_low", "cs_high", "decision", "wins", "p_improve", "pi_low", "pi_high")
        d = asdict(self)
        return {**{k: d[k] for k in keys}, **{k: d[k] for k in d if k not in keys}}

    @property
    def level(self) -> float:
        return ALPHA / max(1, self.family_size)

    @property
    def negligible(self) -> bool:
        """Inside the margin and excluding 0: a real but negligible difference."""
        return self.decision == NO_DIFFERENCE and (self.cs_low > 0 or self.cs_high < 0)

    @property
    def directional(self) -> bool:
        """better or worse, sized or not: the sequence excludes 0 and leaves the margin."""
        return self.decision.startswith((BETTER, WORSE)) and self.family != CONFIRMATORY


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
        """Back from to_json(); anything of another shape is a ValueError (a stale or edited cache)."""
        try:
            comparisons = [Comparison(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                           for c in d["comparisons"]]
            unpaired = [Unpaired(**u) for u in d["unpaired"]]
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a verdict ({e})")
        for c in comparisons:
            if c.decision not in DECISIONS or not c.family or not isinstance(c.n, int) or c.n != len(c.seeds):
                raise ValueError(f"not a verdict: {c.dataset}/{c.metric} {c.a} - {c.b} has decision {c.decision!r}")
        return cls(comparisons, unpaired)

    def family(self, name: str = "primary") -> list[Comparison]:
        return [c for c in self.comparisons if c.family == name]


def verdict_of(runs, store=None) -> "Verdicts":
    """THE verdict: every variant comparison of the JUDGED metrics over `runs`, one object that the
    command line, the Verdict and Results pages and the CSV all read (each filters what it shows).
    With a store, kept in its cache keyed by a fingerprint of the runs and their values."""
    from .paper import metrics_frame

    compute = lambda: compare(metrics_frame(runs), JUDGED).to_json() if runs else Verdicts().to_json()  # noqa: E731
    if store is None:
        return Verdicts.from_json(compute())
    check = lambda value: witnessed(Verdicts.from_json(value), runs)  # noqa: E731
    return Verdicts.from_json(store.cached(CACHE_NAME, runs_key(runs, JUDGED), compute, check=check))


def witnessed(verdicts: "Verdicts", runs) -> "Verdicts":
    """A kept verdict is never the only witness of a decision: every value it holds must be the
    value of the run it names, and every interval, count and word must be what those values give
    (recomputed here: the sequences and proportions, not the bootstrap). A ValueError otherwise."""
    values = {(settings_tag(r.config), r.config.dataset, r.config.variant, r.config.seed): r.metrics for r in runs}
    for c in verdicts.comparisons:
        where = f"{c.dataset}/{c.metric} {c.a} - {c.b}"
        for variant, kept in ((c.a, c.values_a), (c.b, c.values_b)):
            for seed, value in zip(c.seeds, kept, strict=True):
                if values.get((c.settings, c.dataset, variant, seed), {}).get(c.metric) != value:
                    raise ValueError(f"{where}: seed {seed} of {variant} is not the stored run's value")
        if c.family == CONFIRMATORY and (min(c.seeds) < CONFIRM.first_seed or c.family_size != CONFIRM.size):
            raise ValueError(f"{where}: not the declared confirmatory family")
        again = _judged(_one_from(c), c.p_holm, c.family, c.family_size, projections=False)
        for name in ("n", "wins", "cs_low", "cs_high", "pi_low", "pi_high", "decision", "mean_diff"):
            if not _same(getattr(again, name), getattr(c, name)):
                raise ValueError(f"{where}: its {name} is not what its values give")
    return verdicts


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _one_from(c: Comparison) -> Comparison:
    """A comparison rebuilt from its own per-seed values (what _one would give; no bootstrap)."""
    from dataclasses import replace

    va, vb = np.array(c.values_a), np.array(c.values_b)
    d = va - vb
    mean = float(np.mean(d))  # as paired_t has it, without importing scipy
    wins = int(np.sum(d < 0 if METRICS[c.metric].lower_is_better else d > 0))
    return replace(c, n=len(d), mean_diff=mean, wins=wins, p_improve=wins / len(d) if len(d) else math.nan)


CACHE_NAME = "verdict3"  # the cache of verdict_of (3: + the confirmatory family, proportions, skew, projections)


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


def decide(cs_low: float, cs_high: float, mean: float, metric: str) -> str:
    """The decision word for a sequence interval [cs_low, cs_high] of a - b (see the module's table)."""
    spec = METRICS[metric]
    margin = spec.margin if spec.margin is not None else 0.0
    if not (math.isfinite(cs_low) and math.isfinite(cs_high)):
        return UNDECIDED
    good = (mean < 0) == spec.lower_is_better
    if cs_high < -margin or cs_low > margin:
        return BETTER if good else WORSE
    if -margin <= cs_low and cs_high <= margin and spec.margin is not None:
        return NO_DIFFERENCE
    if cs_low > 0 or cs_high < 0:
        return (BETTER if good else WORSE) + UNCLEAR
    return UNDECIDED


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
    schedule moves each metric (a family per metric). Eval loss is left out by default: under v-prediction
    it measures another target."""
    frame = frame.assign(schedule=[schedule_label(r) for r in frame.to_dict("records")])
    others = [s for s in dict.fromkeys(frame.schedule) if s != against]
    metrics = metrics or [m for m, spec in METRICS.items() if spec.margin is not None and m != "eval_loss"]
    return compare(frame, metrics, [(s, against) for s in others], by="schedule", by_fields=SCHEDULE_FIELDS)


def compare(frame, metrics=None, pairs=PAIRS, by: str = "variant", by_fields: tuple = ()) -> Verdicts:
    """Every paired comparison the runs in `frame` (paper.metrics_frame) allow, judged within its family
    (family_of; families never span two sets of training settings, i.e. two experiments).

    by: the column whose values are compared in `pairs` (variants, or schedules); runs pair by seed
    among runs whose other settings (all but `by`, `by_fields` and the seed) are identical."""
    metrics = list(metrics) if metrics else [m for m, spec in METRICS.items() if spec.margin is not None]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    frame = frame.drop_duplicates("run_id")  # a config stored locally and shipped counts once
    names = {f.name for f in fields()}
    others = [c for c in frame.columns if c in names and c not in (by, *by_fields, "seed")]
    out, confirm, paired = Verdicts(), [], set()
    for key, group in frame.groupby(others, sort=False, dropna=False):
        settings = dict(zip(others, key if isinstance(key, tuple) else (key,)))
        for a, b in pairs:
            runs_a = group[group[by] == a].set_index("seed")
            runs_b = group[group[by] == b].set_index("seed")
            if runs_a.empty or runs_b.empty:
                continue
            seeds = sorted(set(runs_a.index) & set(runs_b.index))
            out.unpaired += _unpaired(settings["dataset"], runs_a, runs_b, a, b)
            paired |= {str(r.loc[s, "run_id"]) for r in (runs_a, runs_b) for s in seeds}
            if len(seeds) < 2:
                continue
            for m in metrics:
                if m not in group.columns:
                    continue
                have = [s for s in seeds if np.isfinite(float(runs_a.loc[s, m])) and np.isfinite(float(runs_b.loc[s, m]))]
                if len(have) >= 2:  # a run scored before this metric existed has NaN: `rescore` fills it
                    out.comparisons.append(_one(settings, m, a, b, have, runs_a, runs_b, by))
                fresh = [s for s in have if s >= CONFIRM.first_seed]
                if by == "variant" and _confirmatory(settings, m) and len(fresh) >= 1:
                    confirm.append(_one(settings, m, a, b, fresh, runs_a, runs_b, by))
    # Each comparison's family within its settings (one experiment): declared for variant
    # comparisons; for other comparisons (schedules), a metric's comparisons together.
    members: dict[tuple, list[int]] = {}
    for i, c in enumerate(out.comparisons):
        name, size = family_of(c.metric, c.dataset) if by == "variant" else (f"{by}s: {c.metric}", 0)
        members.setdefault((c.settings, name, size), []).append(i)
    judged = list(out.comparisons)
    for (_, name, size), idx in members.items():
        size = size or len(idx)
        for i, p in zip(idx, holm([out.comparisons[i].p for i in idx])):
            judged[i] = _judged(out.comparisons[i], p, name, size)
    out.comparisons = judged + [_judged(c, p, CONFIRMATORY, CONFIRM.size) for c, p in zip(confirm, holm([c.p for c in confirm]))]
    # a run is without a partner only if no pair uses it (a dino fixed seed with no baseline run still
    # pairs with adaptive), and is named once, for the first variant it lacks
    lone = [u for u in out.unpaired if u.run_id not in paired]
    out.unpaired = list({u.run_id: u for u in reversed(lone)}.values())[::-1]
    return out


def _confirmatory(settings: dict, metric: str) -> bool:
    """Whether runs with these settings, on this metric, can belong to the confirmatory family."""
    return settings.get("dataset") == CONFIRM.dataset and metric == CONFIRM.metric and settings_tag(settings) == ""


def _unpaired(dataset, runs_a, runs_b, a, b) -> list[Unpaired]:
    lone_a = [Unpaired(dataset, a, int(s), b, str(runs_a.loc[s, "run_id"])) for s in runs_a.index if s not in runs_b.index]
    lone_b = [Unpaired(dataset, b, int(s), a, str(runs_b.loc[s, "run_id"])) for s in runs_b.index if s not in runs_a.index]
    return lone_a + lone_b


def _one(settings, metric, a, b, seeds, runs_a, runs_b, by="variant") -> Comparison:
    va = np.array([float(runs_a.loc[s, metric]) for s in seeds])
    vb = np.array([float(runs_b.loc[s, metric]) for s in seeds])
    d = va - vb
    mean, sd, lo, hi, p = paired_t(d)
    blo, bhi = (math.nan, math.nan) if len(d) < 2 else bootstrap_ci(d)
    label = settings_tag(settings)  # what differs from the reference settings
    wins = int(np.sum(d < 0 if METRICS[metric].lower_is_better else d > 0))
    return Comparison(settings["dataset"], metric, a, b, len(seeds), mean, sd, lo, hi, blo, bhi, p,
                      wilcoxon_p(d), seeds=tuple(int(s) for s in seeds), values_a=tuple(va.tolist()),
                      values_b=tuple(vb.tolist()), settings=label,
                      variant="" if by == "variant" else str(settings.get("variant", "")),
                      wins=wins, p_improve=wins / len(d), skew=skewness(d), pairing_gain=pairing_gain(va, vb))


def skewness(d: np.ndarray) -> float:
    """The sample skewness of d (adjusted Fisher-Pearson, scipy's bias=False); NaN below 3 values or without spread."""
    from scipy import stats

    if len(d) < 3 or np.ptp(d) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):
        return math.nan  # no spread to measure a shape by
    return float(stats.skew(d, bias=False))


def pairing_gain(va: np.ndarray, vb: np.ndarray) -> float:
    """1 - var(a - b) / (var(a) + var(b)): the share of the unpaired difference's variance that pairing
    by seed removes (0: pairing buys nothing; negative: the seeds pull a and b apart)."""
    if len(va) < 2:
        return math.nan
    unpaired = np.var(va, ddof=1) + np.var(vb, ddof=1)
    return float(1 - np.var(va - vb, ddof=1) / unpaired) if unpaired > 0 else math.nan


def decide_proportion(pi_low: float, pi_high: float) -> str:
    """The confirmatory family's word for an interval of P(a beats b)."""
    return MOST_BETTER if pi_low > 0.5 else MOST_WORSE if pi_high < 0.5 else UNDECIDED


def _judged(c: Comparison, p_holm: float, family: str, size: int, projections: bool = True) -> Comparison:
    """The family, Holm's p within it, the confidence sequence at ALPHA / size over the seeds in the
    order they were added (ascending), the interval of the probability of improvement at the same
    level, the decision (by the sequence; in the confirmatory family by the proportion), whether the
    Gaussian assumption is in doubt, and the projections."""
    from dataclasses import replace

    level = ALPHA / size
    d = np.array(c.values_a) - np.array(c.values_b)
    low, high = confidence_sequence(d, level)
    lo, hi = float(low[-1]), float(high[-1])
    pi_low, pi_high = proportion_sequence(c.wins, c.n, level)
    word = decide_proportion(pi_low, pi_high) if family == CONFIRMATORY else decide(lo, hi, c.mean_diff, c.metric)
    doubt = bool(abs(c.skew) > SKEW_DOUBT and c.n < SKEW_DOUBT_N) if math.isfinite(c.skew) else False
    out = replace(c, p_holm=p_holm, family=family, family_size=size, cs_low=lo, cs_high=hi, decision=word,
                  verdict=word, pi_low=pi_low, pi_high=pi_high, gaussian_doubt=doubt)
    if projections and word == UNDECIDED and family != CONFIRMATORY:
        pr = project(c.mean_diff, c.sd, METRICS[c.metric].margin, level, (c.ci_low, c.ci_high))
        if pr is not None:
            out = replace(out, n50=pr.n50, n80=pr.n80, n50_low_end=pr.n50_range[0], n50_high_end=pr.n50_range[1],
                          projected=decide(*pr.decision_at, c.mean_diff, c.metric) if pr.decision_at else "")
    return out


def winners(comparisons: list[Comparison], present: dict[str, set] | None = None) -> dict[tuple[str, str], str]:
    """(dataset, metric) -> the variant that is better than every other variant there (its sequence
    excludes 0 in its favour: better, sized or not); absent where no variant is. present: dataset ->
    the variants with runs there; a variant with runs but no pairs (one seed) is a rival nobody has beaten."""
    beats: dict[tuple[str, str, str], set] = {}
    rivals: dict[tuple[str, str, str], set] = {}
    for c in comparisons:
        for v, w in ((c.a, c.b), (c.b, c.a)):
            rivals.setdefault((c.dataset, c.metric, v), set()).add(w)
            rivals[c.dataset, c.metric, v] |= (present or {}).get(c.dataset, set()) - {v}
        if c.directional:
            win, lose = (c.a, c.b) if c.decision.startswith(BETTER) else (c.b, c.a)
            beats.setdefault((c.dataset, c.metric, win), set()).add(lose)
    return {(d, m): v for (d, m, v), others in rivals.items() if beats.get((d, m, v), set()) >= others}
