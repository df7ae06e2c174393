"""Remake the numbers the README and docs/verdict.md quote from the shipped runs, between their
markers (<!-- answer --> in README.md, <!-- verdict --> in docs/verdict.md), so that the front door
cannot drift from the evidence.

    python docs/refresh.py           # rewrite the blocks
    python docs/refresh.py --check   # exit 1, naming the block, if a block is not what the runs give

tests/lib/test_reference.py runs the check, so a shipped run added, removed or edited without its
blocks fails the suite.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dualscale import Store  # noqa: E402
from dualscale.metrics import METRICS  # noqa: E402
from dualscale.sentences import diff_text, word  # noqa: E402
from dualscale.stats import CONFIRM, MOST_BETTER, MOST_WORSE, NO_DIFFERENCE, verdict_of  # noqa: E402

SECONDARY = ("eval_loss", "sliced_w2", "precision", "recall")
PAIRS = (("adaptive", "baseline"), ("adaptive", "fixed"), ("fixed", "baseline"))


def _p(c) -> str:
    return f"{c.p_improve:.2f} [{c.pi_low:.2f}, {c.pi_high:.2f}]"


def _d(c, v: float) -> str:
    return diff_text(c.metric, v)


def blocks(checkpoints: Path = ROOT / "checkpoints") -> dict[tuple[str, str], str]:
    """{(file, marker): text} for every generated block."""
    store = Store(checkpoints)
    shipped = [r for r in store.runs() if r.shipped]
    verdict = verdict_of(shipped, Store(checkpoints / "reference"))
    ref = [c for c in verdict.comparisons if c.settings == ""]
    primary = [c for c in ref if c.family == "primary"]
    confirm = [c for c in ref if c.family == "confirmatory"]
    evidence = [r for r in shipped if r.path.parent.name == "evidence"]
    return {("README.md", "answer"): _answer(primary, confirm),
            ("docs/verdict.md", "verdict"): _verdict(ref, primary, confirm, len(evidence))}


def _answer(primary, confirm) -> str:
    """Two sentences (the fresh seeds' answer against the baseline and on the paper's own claim; the
    datasets where nothing differs), then the dino table."""
    fresh = {(c.a, c.b): c for c in confirm}
    base = [fresh[p] for p in (("adaptive", "baseline"), ("fixed", "baseline")) if p in fresh]
    claim = fresh.get(("adaptive", "fixed"))
    first = [f"On {CONFIRM.dataset}, on fresh seeds declared before they were trained,"]
    if base and all(c.decision == MOST_BETTER for c in base):
        first.append("**both dual-scale models beat the baseline in most seeds** ("
                     + ", ".join(f"{c.a}{' has the lower KL' if i == 0 else ''} in {c.wins} of {c.n}" for i, c in enumerate(base))
                     + ", each anytime interval above 0.5),")
    else:
        first.append("; ".join(f"{c.a} against {c.b}: {c.decision} ({c.wins} of {c.n})" for c in base) + ",")
    if claim is None:
        first.append("and the paper's own claim has no fresh seeds yet.")
    else:
        said = {MOST_BETTER: "is confirmed", MOST_WORSE: "is reversed"}.get(
            claim.decision, "is not confirmed" if claim.n >= CONFIRM.max_seeds else "is not decided yet")
        budget = f"after the family's full budget of {claim.n} seeds" if claim.n >= CONFIRM.max_seeds else f"after {claim.n} seeds"
        first.append(f"**but the paper's own claim, that the learned alpha(t) beats a fixed 0.5 mix, {said}**: "
                     f"{budget} adaptive is lower in {claim.wins} (interval {claim.pi_low:.2f} to {claim.pi_high:.2f}, "
                     f"mean {_d(claim, claim.mean_diff)} bits).")
    quiet = sorted({c.dataset for c in primary} - {c.dataset for c in primary if c.decision != NO_DIFFERENCE})
    mine = [c for c in primary if c.dataset in quiet]
    second = ""
    if mine:
        margin = METRICS[mine[0].metric].margin
        seeds = sorted({c.n for c in mine})
        second = (f" On {', '.join(quiet[:-1]) + ' and ' + quiet[-1] if len(quiet) > 1 else quiet[0]} the three "
                  f"variants make no practical difference ({'-'.join(map(str, seeds[::max(len(seeds) - 1, 1)]))} seeds each, "
                  f"every sequence interval within ±{margin} bits).")
    rows = ["| family | a − b | seeds | P(a better) [anytime interval] | mean KL diff (bits) | decision |",
            "|---|---|---|---|---|---|"]
    for c in confirm + [c for c in primary if c.dataset == CONFIRM.dataset]:
        fam = f"confirmatory (fresh seeds {CONFIRM.first_seed}+)" if c.family == "confirmatory" else "primary (exploratory)"
        doubt = " (skewed: read P)" if c.gaussian_doubt and c.family != "confirmatory" else ""
        rows.append(f"| {fam} | {c.a} − {c.b} | {c.n} | {c.wins}/{c.n} = {_p(c)} | {_d(c, c.mean_diff)} "
                    f"| {c.decision}{doubt} |")
    return " ".join(first) + second + "\n\n" + "\n".join(rows)


def _verdict(ref, primary, confirm, n_evidence: int) -> str:
    out = [f"**The verdict on the shipped runs** (`python -m dualscale verdict`, the reference settings; "
           f"{n_evidence} evidence runs beside seeds 0-9 of the paper's 12).", "",
           f"The confirmatory family (fresh {CONFIRM.dataset} seeds {CONFIRM.first_seed} and up, at most "
           f"{CONFIRM.max_seeds}, each interval at 0.05/{CONFIRM.size}, decided by P(a better)):", "",
           "| a − b | n | wins | P(a better) [anytime interval] | mean (bits) | sequence interval (descriptive) | decision |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {c.a} − {c.b} | {c.n} | {c.wins} | {_p(c)} | {_d(c, c.mean_diff)} | "
            f"[{_d(c, c.cs_low)}, {_d(c, c.cs_high)}] | **{c.decision}** |" for c in confirm]
    out += ["", "The primary family (exploratory: every seed at the reference settings, the fresh ones too), each "
            "sequence at level 0.05/12 (\"!\": skewed differences, the Gaussian sequence in doubt; read P(a better)):", "",
            "| dataset | a − b | n | mean (bits) | sequence interval (decides) | t-interval (descriptive) | P(a better) "
            "| skew | pairing removes | decision | projection: 50% / 80% chance of deciding |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in primary:
        proj = f"{c.n50} / {c.n80} seeds" if c.n50 is not None else ""
        out.append(f"| {c.dataset} | {c.a} − {c.b} | {c.n} | {_d(c, c.mean_diff)} | [{_d(c, c.cs_low)}, {_d(c, c.cs_high)}] "
                   f"| [{_d(c, c.ci_low)}, {_d(c, c.ci_high)}] | {_p(c)} | {c.skew:+.1f} | {c.pairing_gain:.0%} "
                   f"| **{c.decision}**{' !' if c.gaussian_doubt else ''} | {proj} |")
    out += ["", f"{CONFIRM.dataset.capitalize()}, the secondary families (each at 0.05/12):", "",
            "| metric | a − b | n | mean | sequence interval | P(a better) | decision |", "|---|---|---|---|---|---|---|"]
    for a, b in PAIRS:
        for m in SECONDARY:
            for c in ref:
                if (c.family, c.dataset, c.a, c.b) == (f"secondary: {m}", CONFIRM.dataset, a, b):
                    out.append(f"| {m} | {a} − {b} | {c.n} | {_d(c, c.mean_diff)} | [{_d(c, c.cs_low)}, {_d(c, c.cs_high)}] "
                               f"| {_p(c)} | {word(c)}{' !' if c.gaussian_doubt else ''} |")
    return "\n".join(out)


def _splice(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker} -->\n).*?(\n<!-- /{marker} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- {marker} --> ... <!-- /{marker} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text, count=1)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for (name, marker), body in blocks().items():
        path = ROOT / name
        text = path.read_text()
        new = _splice(text, marker, body)
        if new != text:
            stale.append(f"{name} <!-- {marker} -->")
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"not what the shipped runs give: {', '.join(stale)}; run python docs/refresh.py", file=sys.stderr)
        return 1
    print(("stale, rewritten: " + ", ".join(stale)) if stale else "every block is what the shipped runs give")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
