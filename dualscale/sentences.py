"""The verdict in words: a headline for the primary family and one sentence per dataset, with the
numbers in them (mean paired difference and the sequence interval that decides)."""
from __future__ import annotations

from .metrics import METRICS
from .stats import NO_DIFFERENCE, UNDECIDED, Comparison


def span(c: Comparison) -> str:
    """'−0.211 bits, interval −0.508 to +0.085': the mean a − b and its sequence interval."""
    m = METRICS[c.metric]
    unit = f" {m.unit}" if m.unit else ""
    return (f"{_fmt(c, c.mean_diff)}{unit}, interval {_fmt(c, c.cs_low)} to {_fmt(c, c.cs_high)}")


def diff_text(metric: str, value: float) -> str:
    """A signed difference with enough decimals to read against the metric's margin ('−0.211',
    '+0.0026'); infinite ends as ±∞."""
    import math

    m = METRICS[metric]
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    decimals = max(m.digits, 1 - math.floor(math.log10(m.margin))) if m.margin else m.digits
    return f"{value:+.{decimals}f}".replace("-", "−")


def _fmt(c: Comparison, value: float) -> str:
    return diff_text(c.metric, value)


def pair(c: Comparison) -> str:
    return f"{c.a} − {c.b}"


def word(c: Comparison) -> str:
    """The decision, with 'real but negligible' where the interval is inside the margin and excludes 0."""
    if c.negligible:
        return f"a real but negligible difference of {_fmt(c, c.mean_diff)}"
    return c.decision


def headline(primary: list[Comparison]) -> str:
    """One sentence with numbers on the paper's claim (the primary family at one set of settings)."""
    if not primary:
        return "No paired seeds on the paper's datasets yet: the paper's claim cannot be judged."
    quiet = sorted({c.dataset for c in primary} - {c.dataset for c in primary if c.decision != NO_DIFFERENCE})
    parts = []
    for dataset in dict.fromkeys(c.dataset for c in primary):
        if dataset in quiet:
            continue
        mine = [c for c in primary if c.dataset == dataset]
        parts.append(f"on {dataset} ({_seeds(mine)}), " + "; ".join(f"{pair(c)} {span(c)}: **{word(c)}**" for c in mine))
    if quiet:
        margin = METRICS[primary[0].metric]
        mine = [c for c in primary if c.dataset in quiet]
        parts.append(f"on {_join(quiet)} ({_seeds(mine)}{' each' if len(quiet) > 1 else ''}) the three variants "
                     f"make **no practical difference** to {margin.short} (every interval within "
                     f"±{margin.margin:g} {margin.unit})")
    return "In KL divergence: " + "; ".join(parts) + "."


def _seeds(comparisons: list[Comparison]) -> str:
    """How many paired seeds are behind these comparisons: "10 seeds", or "37-38 seeds"."""
    low, high = min(c.n for c in comparisons), max(c.n for c in comparisons)
    return f"{low} seed{'s' if low > 1 else ''}" if low == high else f"{low}-{high} seeds"


def dataset_sentence(dataset: str, comparisons: list[Comparison], a: str, b: str) -> str:
    """What the seeds say about a − b on this dataset, metric by metric, with numbers."""
    mine = [c for c in comparisons if c.dataset == dataset and (c.a, c.b) == (a, b)]
    if not mine:
        return f"**{dataset}**: no paired seeds of {a} and {b} yet."
    quiet = [c for c in mine if c.decision == NO_DIFFERENCE and not c.negligible]
    bits = [f"{METRICS[c.metric].short} {span(c)}: {word(c)}" + _projection(c) for c in mine if c not in quiet]
    if quiet:
        bits.append("no practical difference in " + ", ".join(METRICS[c.metric].short for c in quiet))
    return f"**{dataset}**, {a} − {b} ({max(c.n for c in mine)} seeds): " + "; ".join(bits) + "."


def _projection(c: Comparison) -> str:
    if c.decision != UNDECIDED:
        return ""
    need = c.seeds_needed or "over 10,000"
    half = c.seeds_needed_half or "over 10,000"
    return f" (projected: decided at about {need} seeds if the true difference is the one observed, {half} if half)"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def unpaired_lines(unpaired, runs, problems: dict[str, str]) -> list[str]:
    """One line per run without a partner; where the partner's run exists but cannot be read,
    name it as unreadable and say why (not as missing)."""
    from .config import TrainConfig

    configs = {r.id: r.config for r in runs}
    out = []
    for u in unpaired:
        config = configs.get(u.run_id)
        partner = TrainConfig(**{**config.to_dict(), "variant": u.missing}).run_id if config else None
        if partner in problems:
            out.append(f"{u.dataset}/{u.variant} seed {u.seed}: its {u.missing} run {partner} is unreadable: "
                       f"{problems[partner]}")
        else:
            out.append(f"{u.dataset}/{u.variant} seed {u.seed} has no {u.missing} run with the same settings")
    return out
