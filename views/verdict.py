"""Verdict: does the adaptive weighting help, and where? Runs paired by seed, 95% intervals,
Holm-adjusted tests, one verdict word per dataset and metric (dualscale.stats)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dualscale import METRICS
from dualscale.metrics import floor
from dualscale.paper import metrics_frame
from dualscale.plots import forest, sentence
from dualscale.stats import PAIRS, Verdicts, compare, runs_key
from views import common

JUDGED = sorted((m for m, spec in METRICS.items() if spec.margin is not None), key=lambda m: m != "kl_divergence")  # KL first


@st.cache_data(max_entries=16, show_spinner=False)
def verdicts(root: str, key: tuple, settings_json: str):
    """compare() over the stored runs with these settings; recomputed when a run changes. Kept in the
    store too (Store.cached), so a fresh server answers without pandas and scipy (~0.9 s on 2 cores)."""
    from dualscale import TrainConfig

    settings = TrainConfig.from_json(settings_json)
    runs = [r for r in common.all_runs() if common.same_config_settings(r.config, settings)]
    if not runs:
        return None
    value = common.store().cached("verdict", runs_key(runs, JUDGED),
                                  lambda: compare(metrics_frame(runs), JUDGED).to_json())
    return Verdicts.from_json(value)


def queue_seeds(n: int, settings) -> None:
    """Queue the paper's 12 runs for the next n seeds (with the sidebar's settings) on the dashboard's
    runner: its queue runs them a few at a time, in background workers that survive a reload."""
    from dualscale import PAPER_DATASETS, VARIANTS, TrainConfig

    first = max((r.config.seed for r in common.all_runs() if common.same_config_settings(r.config, settings)),
                default=-1) + 1
    configs = [TrainConfig(**{**settings.to_dict(), "dataset": d, "variant": v, "seed": s})
               for s in range(first, first + n) for d in PAPER_DATASETS for v in VARIANTS]
    registry = common.registry()
    st.session_state["verdict_sweep"] = [registry.submit(c) for c in configs]


def sweep_panel() -> None:
    """One progress panel for the whole queued sweep: runs done, training, waiting; cancel all."""
    ids = st.session_state.get("verdict_sweep") or []
    if not ids:
        return
    registry = common.registry()
    states = [registry.status(rid).state for rid in ids]
    done, failed = states.count("done"), sum(s in ("failed", "cancelled") for s in states)
    running = len(set(ids) & registry.running_ids())
    waiting = len(set(ids) & set(registry.queued_ids()))
    st.progress(done / len(ids), text=f"Sweep: {done} of {len(ids)} runs done, {running} training, {waiting} waiting"
                + (f", {failed} failed or cancelled (see Train)" if failed else ""))
    if running or waiting:
        if st.button("Cancel the sweep", key="verdict_cancel"):
            for rid in ids:
                registry.cancel(rid)
            st.rerun()
    elif done + failed == len(ids):
        st.success("The sweep is done: the verdict above includes its seeds.")
        st.session_state["verdict_sweep"] = []


def add_seeds() -> None:
    st.subheader("Add seeds")
    if sel.config is not None:
        left, right = st.columns([1, 3])
        n_new = left.number_input("Seeds to add", min_value=1, max_value=50, value=5, step=1, key="verdict_n_seeds")
        right.button(f"Queue {int(n_new)} more seeds ({12 * int(n_new)} runs)", key="verdict_add",
                     on_click=queue_seeds, args=(int(n_new), sel.settings),
                     help="The paper's 12 runs for each new seed, with the sidebar's settings; they train in the "
                          "background (see Train) and join the verdict as they finish.")
        queued = st.session_state.get("verdict_sweep") or []
        st.fragment(run_every=2.0 if queued else None)(sweep_panel)()
    st.markdown("Or on the command line (stored seeds are skipped; a GPU stacks them):")
    st.code("python -m dualscale reproduce --seeds 10-19", language="bash")



sel = common.selection("Dataset, variant and seed")
st.title("Does adaptive dual-scale denoising help?")
st.markdown(
    "This app reproduces *Adaptive Dual-Scale Denoising for Dynamic Feature Balancing in Low-Dimensional "
    "Diffusion Models*: a 100-step DDPM on 2D point clouds with three denoisers (a baseline MLP, a fixed 0.5 mix "
    "of a global and a local branch, and the paper's adaptive mix alpha(t)). Below, the stored runs answer the "
    "paper's claim, **paired by seed** (the same seed gives every variant the same data order, t and noise). "
    "Then look at **Results** (the paper's tables), **Samples** and **alpha(t)**, **Schedules** (what the noise "
    "schedule changes), or start runs on **Train**.")
runs = common.all_runs()
key = tuple(sorted((r.id, common.stamp(r)) for r in runs))
result = verdicts(common.store_root(), key, sel.settings.to_json())
st.caption(f"Runs with {common.settings_label(sel.settings)} (the sidebar's Advanced settings; every dataset "
           "and seed is used).")
if result is None or not result.comparisons:
    st.info("Not enough paired runs with these settings yet: a verdict needs at least 2 seeds of two variants.")
    add_seeds()
    st.stop()

labels = {f"{a} − {b}": (a, b) for a, b in PAIRS}
choice = st.segmented_control("Comparison", list(labels), default=list(labels)[0], key="verdict_pair") or list(labels)[0]
a, b = labels[choice]
shown = [c for c in result.comparisons if (c.a, c.b) == (a, b)]
datasets = list(dict.fromkeys(c.dataset for c in result.comparisons))
for d in datasets:
    st.markdown(sentence(d, result.comparisons, a, b))


def evidence() -> None:
    """The forest plot and the table of the chosen comparison."""
    if not shown:
        st.info(f"No paired seeds of {a} and {b} with these settings yet.")
        return
    st.plotly_chart(forest(shown, [m for m in JUDGED if any(c.metric == m for c in shown)]), key="verdict_forest")
    st.caption(f"Each point: the mean over seeds of {a} minus {b}, with its paired Student-t 95% interval; left of "
               "the dotted zero line = lower for the first variant. Hover for n, p (Holm over all "
               f"{len(result.comparisons)} comparisons) and every seed's values. better / worse: significant after "
               "Holm; no difference: the interval lies inside ± the metric's practical margin; inconclusive: neither.")
    rows = [{"dataset": c.dataset, "metric": METRICS[c.metric].short, "n": c.n,
             "mean diff": METRICS[c.metric].format(c.mean_diff, signed=True),
             "95% CI": f"[{METRICS[c.metric].format(c.ci_low, signed=True)}, {METRICS[c.metric].format(c.ci_high, signed=True)}]",
             "bootstrap CI": f"[{METRICS[c.metric].format(c.boot_low, signed=True)}, {METRICS[c.metric].format(c.boot_high, signed=True)}]",
             "p (Holm)": f"{c.p_holm:.3g}", "Wilcoxon p": f"{c.p_wilcoxon:.3g}",
             "verdict": c.verdict + (f" (~{c.seeds_needed} seeds)" if c.seeds_needed else "")} for c in shown]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="verdict_table")


evidence()
if result.unpaired:
    with st.expander(f"{len(result.unpaired)} runs without a partner (not in any comparison)"):
        st.dataframe(pd.DataFrame([u.__dict__ for u in result.unpaired]), hide_index=True)

add_seeds()

with st.expander("What the metrics measure"):
    help_rows = [{"metric": f"{m.label} ({m.short})", "unit": m.unit or "–",
                  "better": "lower" if m.lower_is_better else "higher",
                  "practical margin": m.format(m.margin) if m.margin is not None else "not judged",
                  **{f"floor {d}": (m.format(f) if (f := floor(d, m.name)) is not None else "–") for d in datasets},
                  "what it measures": m.help} for m in METRICS.values()]
    st.dataframe(pd.DataFrame(help_rows), hide_index=True)
    st.caption("Floor: what a perfect model scores, a second draw of the data against the first "
               "(benchmarks/floors.py); a model cannot be judged below it.")
