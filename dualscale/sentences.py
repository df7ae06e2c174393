"""The verdict in words: the answer in three lines and one sentence per dataset, with the
numbers in them (mean paired difference and the sequence interval that decides)."""
from __future__ import annotations

from .metrics import METRICS
from .stats import BETTER, CONFIRM, CONFIRMATORY, MOST_BETTER, MOST_WORSE, NO_DIFFERENCE, UNDECIDED, Comparison


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


def answer(primary: list[Comparison], confirm: list[Comparison] = ()) -> list[str]:
    """The answer in at most three short lines, with numbers (the primary family at one set of
    settings, and the confirmatory family): what is decided against the baseline where anything
    differs; the paper's own claim (the learned alpha(t) against a fixed 0.5), with the fresh seeds'
    answer; and the datasets where the variants make no practical difference."""
    if not primary:
        return ["No paired seeds on the paper's datasets yet: the paper's claim cannot be judged."]
    quiet = [d for d in dict.fromkeys(c.dataset for c in primary)
             if all(c.decision == NO_DIFFERENCE for c in primary if c.dataset == d)]
    loud = [d for d in dict.fromkeys(c.dataset for c in primary) if d not in quiet]
    lines = []
    against_base = [c for c in primary if c.dataset in loud and c.b == "baseline"]
    if against_base:
        lines.append(" ".join(f"**{d}** ({_seeds(mine)}): " + "; ".join(_phrase(c) for c in mine) + "."
                              + _fresh_against_base(mine, confirm)
                              for d in loud if (mine := [c for c in against_base if c.dataset == d])))
    claim = [c for c in primary if c.dataset in loud and (c.a, c.b) == ("adaptive", "fixed")]
    for c in claim:
        fresh = [f for f in confirm if f.dataset == c.dataset and (f.a, f.b) == (c.a, c.b)]
        lines.append(f"**The paper's own claim**, a learned alpha(t) against a fixed 0.5 on {c.dataset}: "
                     f"{_claim(c)}{_fresh_claim(fresh[0]) if fresh else ''}.")
    if quiet:
        mine = [c for c in primary if c.dataset in quiet]
        each = " each" if len(quiet) > 1 else ""
        lines.append(f"**{_join(quiet)}**: no practical difference ({_seeds(mine)}{each}).")
    return lines[:3]


def _fresh_against_base(mine: list[Comparison], confirm: list[Comparison]) -> str:
    """' On fresh seeds, adaptive beats baseline in 45 of 55 and fixed in 44 of 55: **better in most
    seeds**.' (each its own decision where they differ); '' without confirmatory comparisons."""
    fresh = [f for c in mine for f in confirm if (f.dataset, f.a, f.b) == (c.dataset, c.a, c.b)]
    if not fresh:
        return ""
    if len({f.decision for f in fresh}) == 1:
        counts = " and ".join(f"{f.a}{' beats ' + f.b if i == 0 else ''} in {f.wins} of {f.n}" for i, f in enumerate(fresh))
        return f" On fresh seeds, {counts}: {_fresh_word(fresh[0])}."
    return " On fresh seeds, " + "; ".join(f"{f.a} beats {f.b} in {f.wins} of {f.n}: {_fresh_word(f)}" for f in fresh) + "."


def _fresh_claim(f: Comparison) -> str:
    """The confirmatory answer to the paper's claim, final once the family's budget is spent."""
    return f"; on fresh seeds, {f.a} beats {f.b} in {f.wins} of {f.n}: {_fresh_word(f)}"


def _fresh_word(f: Comparison) -> str:
    if f.decision != UNDECIDED:
        return f"**{f.decision}**"
    if f.n >= CONFIRM.max_seeds:
        return (f"**undecided at the family's full budget of {CONFIRM.max_seeds} seeds** "
                f"(P({f.a} better) {f.p_improve:.2f}, interval {f.pi_low:.2f} to {f.pi_high:.2f})")
    return "not decided yet"


def _phrase(c: Comparison) -> str:
    """'adaptive beats baseline by 0.135 bits', 'adaptive against fixed: not decided (−0.036 bits)'."""
    m = METRICS[c.metric]
    if c.directional:
        return f"{c.a} {'beats' if c.decision.startswith(BETTER) else 'is worse than'} {c.b} ({_fmt(c, c.mean_diff)}{' ' + m.unit if m.unit else ''})"
    if c.decision == NO_DIFFERENCE:
        return f"{c.a} and {c.b}: no practical difference"
    return f"{c.a} against {c.b}: not decided ({_fmt(c, c.mean_diff)}{' ' + m.unit if m.unit else ''})"


def _claim(c: Comparison) -> str:
    m = METRICS[c.metric]
    unit = f" {m.unit}" if m.unit else ""
    if c.decision == UNDECIDED:
        return f"**not decided** after {c.n} seeds ({_fmt(c, c.mean_diff)}{unit})"
    if c.decision == NO_DIFFERENCE:
        return f"**no practical difference** after {c.n} seeds"
    return f"**{c.a} {'is better' if c.decision.startswith(BETTER) else 'is worse'}** by {abs(c.mean_diff):.{m.digits}f}{unit} ({c.n} seeds)"


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
    return f" ({projection_text(c)})" if c.decision == UNDECIDED and c.family != CONFIRMATORY else ""


def _seeds_text(n) -> str:
    return f"{n:,}" if n else "over 10,000"


def projection_text(c: Comparison) -> str:
    """A labelled projection of an undecided comparison: at how many seeds the chance of deciding
    reaches 50% and 80% if the observed difference is the true one, the decision it would be, and
    the 50% point over the t-interval's ends."""
    if c.n50 is None and c.n80 is None:
        return "projection: over 10,000 seeds if the observed difference is the true one"
    then = f", most likely '{c.projected}'" if c.projected else ""
    ends = sorted((c.n50_low_end, c.n50_high_end), key=lambda n: n or 10 ** 9)
    return (f"projection, if the observed difference is the true one: a 50% chance of deciding at "
            f"{_seeds_text(c.n50)} seeds, 80% at {_seeds_text(c.n80)}{then}; 50% at {_seeds_text(ends[0])} to "
            f"{_seeds_text(ends[1])} seeds over the t-interval's ends")


def improve_text(c: Comparison) -> str:
    """'48 of 68 seeds (0.71, interval 0.48 to 0.88)': how often a beats b, with its anytime-valid interval."""
    return f"{c.wins} of {c.n} seeds ({c.p_improve:.2f}, interval {c.pi_low:.2f} to {c.pi_high:.2f})"


def doubt_text(c: Comparison) -> str:
    """Where the Gaussian sequence's assumption is in doubt: the skew, and the distribution-free answer."""
    if not c.gaussian_doubt:
        return ""
    return (f"the differences are skewed (skewness {c.skew:+.1f} over {c.n} seeds), so the sequence's guarantee is "
            f"in doubt; distribution-free, {c.a} beats {c.b} in {improve_text(c)}")


def confirm_text(c: Comparison) -> str:
    """The confirmatory family's answer for one pair, in words."""
    word = {MOST_BETTER: f"{c.a} beats {c.b} in most seeds", MOST_WORSE: f"{c.b} beats {c.a} in most seeds"}
    return f"{c.a} beats {c.b} in {improve_text(c)}: {word.get(c.decision, 'undecided')}"


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


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
