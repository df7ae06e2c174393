"""Verdict: does the adaptive weighting help, and where? Runs paired by seed, declared families,
decisions by confidence sequences (dualscale.stats); add seeds or settle (dualscale.settle)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dualscale import METRICS
from dualscale.forest import forest, sequence_path
from dualscale.metrics import floor
from dualscale.paper import for_csv
from dualscale.sentences import dataset_sentence, diff_text, headline, unpaired_lines, word
from dualscale.stats import ALPHA, JUDGED, PAIRS, UNDECIDED
from views import common, seeds


def table(shown) -> pd.DataFrame:
    """Every comparison of the chosen pair; the decision third, so a phone sees it without scrolling."""
    def span(c, lo, hi):
        return f"[{diff_text(c.metric, lo)}, {diff_text(c.metric, hi)}]"

    return pd.DataFrame([{
        "dataset": c.dataset, "metric": METRICS[c.metric].short, "decision": word(c), "n": c.n,
        "mean diff": diff_text(c.metric, c.mean_diff),
        "sequence interval": span(c, c.cs_low, c.cs_high), "t-interval (descriptive)": span(c, c.ci_low, c.ci_high),
        "family": f"{c.family} ({c.family_size})",
        "projected seeds (observed / half)": (f"{c.seeds_needed or '>10000'} / {c.seeds_needed_half or '>10000'}"
                                             if c.decision == UNDECIDED else "")} for c in shown])


def how_to_read(n_families: int) -> None:
    with st.expander("How to read this"):
        st.markdown(f"""
- **Pairs.** Each comparison is the paired difference *a − b* over the seeds both variants have (the same
  seed gives both the same data order, t and noise), never two separate means.
- **Families.** The **primary** family is the paper's claim: KL divergence, the three pairs, the four paper
  datasets (12 comparisons). Every other metric is **secondary**, a family of its own (12 on the paper's datasets;
  3 per metric on any other dataset). A comparison's family never depends on what a page shows, so Results' ★
  and this page read the same decisions ({n_families} families here).
- **The interval that decides** is a *confidence sequence* (Lai's t-mixture; Wang & Ramdas 2023): it covers the
  true mean difference at every number of seeds at once, so adding seeds and looking again after each batch
  keeps its guarantee. Within a family each sequence runs at level {ALPHA:g} / family size (Bonferroni).
  It assumes roughly symmetric differences (measured: valid for Gaussian and Student-t(3) differences, not for
  strongly skewed ones). The fixed-n **t-interval** is shown for description only: looked at after every seed,
  a 95% t-interval declares a difference that is not there in about 39% of sequences (measured).
- **Margins** (the grey band): the smallest difference that matters, one per metric, set in the metric
  registry (`dualscale/metrics.py`): KL 0.02 bits (the reference's own reruns matched its tables within
  0.02 bits everywhere but dino), eval loss 0.002, sliced W2 0.005, precision and recall 0.01.
- **Words:** *better / worse*: the whole interval is beyond the margin; *…, size unclear*: it excludes 0 but
  reaches inside the margin; *no practical difference*: it lies inside ± the margin (*a real but negligible
  difference* if it also excludes 0); *undecided*: otherwise.
- **Projected seeds** are a projection, not a promise: the n at which the sequence would decide *if* the true
  difference were the one observed (or half of it) and the spread stayed as observed.
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


sel = common.selection("Dataset, variant and seed")
st.title("Does adaptive dual-scale denoising help?")
st.markdown(
    "This app reproduces *Adaptive Dual-Scale Denoising for Dynamic Feature Balancing in Low-Dimensional "
    "Diffusion Models*: a 100-step DDPM on 2D point clouds with a baseline MLP, a fixed 0.5 mix of a global and "
    "a local branch, and the paper's adaptive mix alpha(t). Below, the stored runs answer the paper's claim, "
    "**paired by seed**. Then see **Results**, **Samples**, **alpha(t)**, **Inside** (where in t and what each "
    "branch does), **Schedules**, train on **Train**, or bring **Your data**.")
verdicts = common.verdict()
mine = common.settings_comparisons(verdicts, sel.settings)
st.caption(f"Runs with {common.settings_label(sel.settings)} (the sidebar's Advanced settings; every dataset "
           "and seed is used).")
for problem in common.store().problems():
    st.warning(f"Unreadable: {problem}")
if not mine:
    st.info("Not enough paired runs with these settings yet: a verdict needs at least 2 seeds of two variants.")
    seeds.panel(sel, [])
    st.stop()

primary = [c for c in mine if c.family == "primary"]
st.markdown(headline(primary), help="The primary family: KL divergence, three pairs, four paper datasets.")

labels = {f"{a} − {b}": (a, b) for a, b in PAIRS}
choice = st.segmented_control("Comparison", list(labels), default=list(labels)[0], key="verdict_pair") or list(labels)[0]
a, b = labels[choice]
shown = [c for c in mine if (c.a, c.b) == (a, b)]
for d in dict.fromkeys(c.dataset for c in mine):
    st.markdown(dataset_sentence(d, mine, a, b))

evidence(shown, a, b)
if verdicts.unpaired:
    runs_now, problems = common.store().scan()
    with st.expander(f"{len(verdicts.unpaired)} runs without a partner (not in any comparison)"):
        st.markdown("\n".join(f"- {line}" for line in unpaired_lines(verdicts.unpaired, runs_now, problems)))
st.download_button("Download the verdict as CSV (one row per comparison)",
                   for_csv(pd.DataFrame([c.to_json() for c in mine]).drop(columns=["values_a", "values_b", "seeds"]))
                   .to_csv(index=False),
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
    st.dataframe(pd.DataFrame(help_rows), hide_index=True)
    st.caption("Floor: what a perfect model scores, a second draw of the data against the first "
               "(benchmarks/floors.py); a model cannot be judged below it.")
