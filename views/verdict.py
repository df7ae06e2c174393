"""Verdict: does the adaptive weighting help, and where? Runs paired by seed, declared families,
decisions by confidence sequences (dualscale.stats); add seeds or settle (dualscale.settle)."""
from __future__ import annotations

import streamlit as st

from dualscale import METRICS
from dualscale.forest import forest, sequence_path
from dualscale.metrics import floor
from dualscale.paper import for_csv
from dualscale.sentences import answer, confirm_text, dataset_sentence, diff_text, unpaired_lines, word
from dualscale.stats import ALPHA, CONFIRM, CONFIRMATORY, JUDGED, PAIRS, UNDECIDED
from views import common, seeds


def table(shown) -> list[dict]:
    """Every comparison of the chosen pair, a row each; the decision third, so a phone sees it without
    scrolling; the share of seeds where a beats b beside the mean."""
    def span(c, lo, hi):
        return f"[{diff_text(c.metric, lo)}, {diff_text(c.metric, hi)}]"

    return [{
        "dataset": c.dataset, "metric": METRICS[c.metric].short,
        "decision": word(c) + (" (skewed: read P(a better))" if c.gaussian_doubt else ""), "n": c.n,
        "mean diff": diff_text(c.metric, c.mean_diff),
        "P(a better)": f"{c.p_improve:.2f} [{c.pi_low:.2f}, {c.pi_high:.2f}]",
        "sequence interval": span(c, c.cs_low, c.cs_high), "t-interval (descriptive)": span(c, c.ci_low, c.ci_high),
        "skew": "" if c.skew != c.skew else f"{c.skew:+.1f}",
        "pairing removes": "" if c.pairing_gain != c.pairing_gain else f"{max(c.pairing_gain, 0):.0%}",
        "family": f"{c.family} ({c.family_size})",
        "projection: 50% / 80% chance of deciding": (f"{c.n50 or '>10000'} / {c.n80 or '>10000'} seeds"
                                                     if c.decision == UNDECIDED else "")} for c in shown]


def verdict_csv(comparisons) -> str:
    """The comparisons as CSV. pandas is imported here, not at the top: the answer and the forest plot
    reach the browser before its import (0.4 s on a fresh server)."""
    import pandas as pd

    frame = pd.DataFrame([c.to_json() for c in comparisons]).drop(columns=["values_a", "values_b", "seeds"])
    return for_csv(frame).to_csv(index=False)


def confirmatory(confirm) -> None:
    """The family declared before its data: fresh dino seeds, decided by the share of wins."""
    st.subheader("Confirmatory: fresh seeds only", anchor=False)
    if not confirm:
        st.caption(f"Declared before its data (dino, KL, the three pairs, seeds {CONFIRM.first_seed} and up, "
                   "the share of seeds where a beats b at level 0.05/3): no fresh seeds yet. "
                   "`python -m dualscale settle --family confirmatory --light` adds them.")
        return
    for c in confirm:
        st.markdown(f"- {c.dataset}, {confirm_text(c)}")
    st.caption(f"Declared before any of its seeds was trained: dino, KL, the three pairs, seeds {CONFIRM.first_seed} "
               "and up only (the earlier seeds were looked at while asking the question). Each interval is "
               "anytime-valid for the probability that a run of a has a lower KL than the same seed's run of b, "
               "at level 0.05/3, and assumes nothing but independent seeds.")


def how_to_read(n_families: int) -> None:
    with st.expander("How to read this"):
        st.markdown(f"""
- **Pairs.** Each comparison is the paired difference *a − b* over the seeds both variants have (the same
  seed gives both the same data order, t and noise), never two separate means.
- **Families.** The **primary** family is the paper's claim: KL divergence, the three pairs, the four paper
  datasets (12 comparisons). Every other metric is **secondary**, a family of its own (12 on the paper's datasets;
  3 per metric on any other dataset). A comparison's family never depends on what a page shows, so Results' ★
  and this page read the same decisions ({n_families} families here).
- **The interval that decides** is a *confidence sequence* (the Gaussian-mixture sequence for the scale-invariant
  statistic, Wang & Ramdas 2023): it covers the
  true mean difference at every number of seeds at once, so adding seeds and looking again after each batch
  keeps its guarantee. Within a family each sequence runs at level {ALPHA:g} / family size (Bonferroni).
  It assumes roughly symmetric differences (measured: valid for Gaussian and Student-t(3) differences, not for
  strongly skewed ones: 25.6% false decisions for a centred lognormal). Where a comparison's differences are
  skewed (|skewness| > 1 with fewer than 200 seeds) its decision says so: read **P(a better)** instead, the share
  of seeds where a beats b with an anytime-valid interval that assumes only independent seeds. The fixed-n **t-interval** is shown for description only: looked at after every seed,
  a 95% t-interval declares a difference that is not there in about 39% of sequences (measured).
- **Margins** (the grey band), one per metric in the metric registry (`dualscale/metrics.py`), each with its
  reason there. KL 0.02 bits: about 2% of dino's KL (0.9 bits) and 6 times the estimator's own spread on fresh
  draws of the data (sd 0.003 bits); it began as a reproduction tolerance (the reference's reruns matched its
  tables within 0.02 bits everywhere but dino). Eval loss 0.002, sliced W2 0.005, precision and recall 0.01.
- **Pairing** removes the noise the two variants share through their seed: the table's "pairing removes"
  column says how much, per comparison (91-100% on circle, line and moons; far less on dino).
- **Words:** *better / worse*: the whole interval is beyond the margin; *…, size unclear*: it excludes 0 but
  reaches inside the margin; *no practical difference*: it lies inside ± the margin (*a real but negligible
  difference* if it also excludes 0); *undecided*: otherwise.
- **Projections** are not promises: the seeds at which the chance that the sequence decides reaches 50% and
  80% *if* the true difference is the one observed and the spread stays as observed; the 50% point moves a
  lot across the t-interval (the CLI's `verdict` prints that range).
- **The confirmatory family** was declared before its data: fresh dino seeds only, decided by P(a better).
""")


def evidence(shown, a: str, b: str) -> None:
    """The forest plot, the table and the path of an interval as seeds were added."""
    if not shown:
        st.info(f"No paired seeds of {a} and {b} with these settings yet.")
        return
    st.plotly_chart(forest(shown, list(JUDGED)), key="verdict_forest", config={"displaylogo": False})
    st.caption("Thick bar: the sequence interval that decides, coloured by the decision; the tick is the mean; "
               "thin dark bar below: the fixed-n t-interval (descriptive). Grey band: ± the practical margin. "
               "Hover for n, the family and every seed.")
    rows = table(shown)
    st.dataframe(rows, hide_index=True, key="verdict_table", height=36 * (len(rows) + 1) + 3)
    open_ = sorted([c for c in shown if c.decision == UNDECIDED] or shown, key=lambda c: c.family != "primary")
    pick = st.selectbox("How an interval narrowed as seeds were added",
                        [f"{c.dataset}, {METRICS[c.metric].short}" for c in open_], key="verdict_path")
    c = open_[[f"{c.dataset}, {METRICS[c.metric].short}" for c in open_].index(pick)]
    st.plotly_chart(sequence_path(c), key="verdict_path_chart", config={"displaylogo": False})


sel = common.selection("Variant and seed")
st.title("Does adaptive dual-scale denoising help?")
verdicts = common.verdict()
mine = common.settings_comparisons(verdicts, sel.settings)
primary = [c for c in mine if c.family == "primary"]
confirm = [c for c in mine if c.family == CONFIRMATORY]
if primary:
    st.markdown("  \n".join(answer(primary, confirm)),
                help="Paired by seed. The first two lines: the primary family (KL, three pairs, four datasets), "
                     "exploratory; fresh seeds: the confirmatory family. Details below.")
st.markdown(
    "This app reproduces *Adaptive Dual-Scale Denoising for Dynamic Feature Balancing in Low-Dimensional "
    "Diffusion Models*: a 100-step DDPM on 2D point clouds with a baseline MLP, a fixed 0.5 mix of a global and "
    "a local branch, and the paper's adaptive mix alpha(t). Below, the stored runs answer the paper's claim, "
    "**paired by seed**. Then see **Results**, **Samples**, **alpha(t)**, **Inside** (where in t and what each "
    "branch does), **Schedules**, train on **Train**, or bring **Your data**.")
st.caption(f"Runs with {common.settings_label(sel.settings)} (the sidebar's Advanced settings; every dataset "
           "and seed is used).")
for problem in common.store().problems():
    st.warning(common.literal(f"Unreadable: {problem}"))
if not mine:
    st.info("Not enough paired runs with these settings yet: a verdict needs at least 2 seeds of two variants.")
    seeds.panel(sel, [])
    st.stop()

labels = {f"{a} − {b}": (a, b) for a, b in PAIRS}
choice = st.segmented_control("Comparison", list(labels), default=list(labels)[0], key="verdict_pair") or list(labels)[0]
a, b = labels[choice]
shown = [c for c in mine if (c.a, c.b) == (a, b) and c.family != CONFIRMATORY]
for d in dict.fromkeys(c.dataset for c in mine):
    st.markdown(dataset_sentence(d, [c for c in mine if c.family != CONFIRMATORY], a, b))

evidence(shown, a, b)
if sel.settings == type(sel.settings)():
    confirmatory([c for c in confirm if c.metric == CONFIRM.metric])
if verdicts.unpaired:
    runs_now, problems = common.store().scan()
    with st.expander(f"{common.count(len(verdicts.unpaired), 'run')} without a partner (not in any comparison)"):
        st.markdown("\n".join(f"- {line}" for line in unpaired_lines(verdicts.unpaired, runs_now, problems)))
st.download_button("Download the verdict as CSV (one row per comparison)", verdict_csv(mine),
                   file_name="dualscale-verdict.csv", mime="text/csv", icon=":material/download:")
how_to_read(len({c.family for c in mine}))

seeds.panel(sel, [c for c in mine if c.metric == "kl_divergence" and c.dataset in seeds.targets(sel.dataset)])

with st.expander("What the metrics measure"):
    datasets = list(dict.fromkeys(c.dataset for c in mine))
    help_rows = [{"metric": f"{m.label} ({m.short})", "unit": m.unit or "–",
                  "better": "lower" if m.lower_is_better else "higher",
                  "practical margin": m.format(m.margin) if m.margin is not None else "not judged",
                  **{f"floor {d}": (m.format(f) if (f := floor(d, m.name)) is not None else "–") for d in datasets},
                  "what it measures": m.help} for m in METRICS.values()]
    st.dataframe(help_rows, hide_index=True)
    st.caption("Floor: what a perfect model scores, a second draw of the data against the first "
               "(benchmarks/floors.py); a model cannot be judged below it.")
