"""The Verdict page's seed panel: add seeds to the undecided comparisons, or settle them (rounds
until decided or the budget is spent), through the dashboard's runner (dualscale.settle.Sweep).
Planned, estimated and confirmed first; the runs queued are exactly the runs shown. Not a page."""
from __future__ import annotations

import shlex

import streamlit as st

from dualscale import PAPER_DATASETS
from dualscale.config import changed_settings
from dualscale.estimates import estimate_seconds
from dualscale.settle import Sweep, plan
from dualscale.stats import UNDECIDED
from views import common

FINISHED = {"done": "Added", "decided": "Settled", "spent": "Budget spent", "cancelled": "Cancelled"}


def _key(settings) -> str:
    return settings.to_json()


def targets(dataset: str) -> tuple[str, ...]:
    """The datasets a round adds seeds to: the paper's four (the primary family), or the sidebar's own
    dataset when it is one of the user's or a Datasaurus shape (its own KL family)."""
    return PAPER_DATASETS if dataset in PAPER_DATASETS else (dataset,)


def _describe(todo) -> str:
    """'dino: adaptive, baseline, fixed × seeds 10–14': what a plan queues."""
    parts = []
    for d in dict.fromkeys(c.dataset for c in todo):
        mine = [c for c in todo if c.dataset == d]
        seeds = sorted({c.seed for c in mine})
        span = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
        parts.append(f"{d}: {', '.join(sorted({c.variant for c in mine}))} × {span}")
    return "; ".join(parts)


def make_plan(kind: str, settings, datasets: tuple) -> None:
    """Button callback: plan with the values in the widgets now (not those of the previous rerun)."""
    n, budget = int(st.session_state["seeds_n"]), int(st.session_state["seeds_budget"])
    runs = common.all_runs()
    rnd = plan(runs, settings, datasets, "kl_divergence", budget, n)
    workers = common.registry().jobs or 1
    seconds, basis = estimate_seconds(runs, rnd.todo, workers)
    st.session_state["seeds_plan"] = {"kind": kind, "todo": rnd.todo, "n": n, "budget": budget, "datasets": datasets,
                                      "seconds": seconds, "basis": basis, "workers": workers,
                                      "outlook": outlook(rnd, budget, runs, settings, workers) if kind == "settle" else ""}


def outlook(rnd, budget: int, runs, settings, workers: int) -> str:
    """What the whole settle should cost, and whether its budget will likely run out first: each open
    comparison until its projected 50% point (a projection: if the observed difference is the true
    one), capped at the budget."""
    from dualscale import TrainConfig

    if not rnd.open:
        return ""
    need: dict[tuple, int] = {}  # (dataset, variant) -> seeds it should reach
    short = []
    for c in rnd.open:
        target = min(c.n50 or budget + 1, budget)
        if (c.n50 or budget + 1) > budget:
            short.append(f"{c.dataset} {c.a} − {c.b} (50% at {f'{c.n50:,}' if c.n50 else 'over 10,000'} seeds)")
        for v in (c.a, c.b):
            need[c.dataset, v] = max(need.get((c.dataset, v), 0), target - c.n)
    configs = [TrainConfig(**{**settings.to_dict(), "dataset": d, "variant": v, "seed": 0})
               for (d, v), k in need.items() for _ in range(max(0, k))]
    seconds, _ = estimate_seconds(runs, configs, workers)
    text = f"In all, about **{len(configs):,} runs** (~{_duration(seconds)}) if the observed differences are the true ones."
    if short:
        text += (f" **The budget of {budget} seeds will likely run out before a decision** for "
                 + "; ".join(short) + ".")
    return text


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "unknown time"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def confirm(settings) -> None:
    p = st.session_state.pop("seeds_plan")
    common.sweeps()[_key(settings)] = Sweep(common.registry(), p["todo"], settings, p["datasets"], "kl_divergence",
                                            p["n"], p["budget"], rounds=1 if p["kind"] == "add" else None)


def _status(key: str) -> None:
    """The running sweep's one panel (polled): runs done, training, waiting; cancel; how it ended."""
    sweep = common.sweeps().get(key)
    if sweep is None:
        return
    before = sweep.state, len(sweep.ids)
    sweep.advance(common.store().runs())
    counts = sweep.counts()
    total, done = len(sweep.ids), counts["done"]
    what = "Settle" if sweep.rounds is None else "Adding seeds"
    text = (f"{what}: {done} of {common.count(total, 'run')} done, {counts['training']} training, {counts['waiting']} waiting"
            + (f", {counts['failed']} failed" if counts["failed"] else "")
            + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
            + (f" (round {sweep.rounds_done + 1})" if sweep.rounds is None and sweep.state == "running" else ""))
    if sweep.state == "running":
        st.progress(done / max(1, total), text=text)
        if st.button("Cancel", key="seeds_cancel", icon=":material/cancel:"):
            sweep.cancel()
            st.rerun()
    else:
        ended = {"done": f"Added: {done} of {total} runs finished; the verdict above includes them.",
                 "decided": f"Settled: every comparison it worked on is decided ({done} runs added).",
                 "spent": f"Budget spent: the open comparisons reached {sweep.budget} seeds ({done} runs added).",
                 "cancelled": f"Cancelled: {done} of {total} runs had finished and count in the verdict above; "
                              "the rest were stopped or never started."}[sweep.state]
        (st.warning if sweep.state == "cancelled" else st.success)(ended)
        if counts["failed"]:
            st.caption(f"{common.count(counts['failed'], 'run')} failed: see Train's recent runs.")
        if st.button("Dismiss", key="seeds_dismiss"):
            del common.sweeps()[key]
            st.rerun()
    if (sweep.state, len(sweep.ids)) != before or st.session_state.get("seeds_done") != done:
        st.session_state["seeds_done"] = done
        st.rerun()  # a run finished or a round began: the verdict above is judged again


def _confirmation(settings) -> None:
    p = st.session_state["seeds_plan"]
    if not p["todo"]:
        st.info("Nothing to add: every primary comparison is decided, or has reached the budget.")
        if st.button("OK", key="seeds_ok"):
            del st.session_state["seeds_plan"]
            st.rerun()
        return
    how = "one round" if p["kind"] == "add" else "round 1 of a settle (rounds until decided or the budget is spent)"
    st.warning(f"This queues **{common.count(len(p['todo']), 'run')}** ({_describe(p['todo'])}), "
               f"{how}: about **{_duration(p['seconds'])}** for this round, {p['workers']} at a time (estimated from "
               f"{p['basis']}). {p.get('outlook', '')}", icon=":material/schedule:")
    left, right = st.columns(2)
    left.button(f"Confirm: queue {common.count(len(p['todo']), 'run')}", key="seeds_confirm", type="primary", on_click=confirm,
                args=(settings,))
    if right.button("Back", key="seeds_back"):
        del st.session_state["seeds_plan"]
        st.rerun()


def panel(sel, family) -> None:
    """family: the KL comparisons of the datasets it works on (targets(sel.dataset))."""
    st.subheader("Add seeds")
    datasets = targets(sel.dataset)
    which = "primary" if datasets == PAPER_DATASETS else f"{sel.dataset}'s KL"
    open_ = [c for c in family if c.decision == UNDECIDED]
    status = (f"{len(open_)} of {len(family)} {which} comparisons are undecided"
              + (f" ({', '.join(f'{c.dataset} {c.a} − {c.b}' for c in open_)})" if open_ else "")
              if family else f"No {which} comparison can be judged yet (each needs 2 paired seeds): a plan starts "
              "every variant at seeds 0 and up")
    st.caption(status + ". New seeds go only to the datasets and variants they need; Settle repeats until every "
               "one is decided or the budget is reached, judging validly after each round.")
    key = _key(sel.settings)
    if sel.config is None:
        st.caption("Fix the sidebar's settings first.")
    elif key in common.sweeps():
        st.fragment(run_every=2.0)(_status)(key)
    elif "seeds_plan" in st.session_state:
        _confirmation(sel.settings)
    else:
        left, right = st.columns(2)
        left.number_input("Seeds per round", min_value=1, max_value=50, value=5, step=1, key="seeds_n",
                          help="Seeds added to each undecided comparison in one round")
        right.number_input("Budget (seeds)", min_value=2, max_value=10_000, value=100, step=10, key="seeds_budget",
                           help="Settle stops when the open comparisons have this many seeds")
        b1, b2 = st.columns(2)
        b1.button("Plan one round", key="seeds_add", on_click=make_plan, args=("add", sel.settings, datasets),
                  icon=":material/add:")
        b2.button("Plan a settle", key="seeds_settle", on_click=make_plan, args=("settle", sel.settings, datasets),
                  icon=":material/gavel:")
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in changed_settings(sel.settings).items())
    flags += "" if datasets == PAPER_DATASETS else f" --datasets {sel.dataset}"
    flags += "" if common.store_root() == "checkpoints" else f" --store {shlex.quote(common.store_root())}"
    st.markdown("Or on the command line (stored runs are never retrained; a GPU stacks them):")
    st.code(f"python -m dualscale settle --batch {st.session_state.get('seeds_n', 5)}{flags}", language="bash")
