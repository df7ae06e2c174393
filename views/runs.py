"""Runs: every stored run in one table (filter, sort, pick rows), the picked runs compared side by
side (loss, samples, alpha(t)), and local runs deleted after a confirmation."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from dualscale import METRICS, StoreError
from dualscale.paper import metrics_frame
from dualscale.plots import DATASET_COLORS, alpha_curves, loss_curves, sample_panels
from views import common

COMPARE = 6  # runs drawn side by side at most: more would be unreadable
FIRST = ["run_id", "origin", "dataset", "variant", "seed"]  # then the metrics, the settings, where it ran
LAST = ["device", "machine", "stacked"]


def ema(values, weight: float) -> np.ndarray:
    """Exponential moving average, debiased like TensorBoard's slider (weight 0: the values as they are)."""
    values = np.asarray(values, dtype=float)
    out, s = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        s = weight * s + (1 - weight) * v
        out[i] = s / (1 - weight ** (i + 1))
    return out


def table(frame):
    """The frame in reading order: who, how good, with which settings, where."""
    metrics = [m for m in METRICS if m in frame.columns]
    middle = [c for c in frame.columns if c not in FIRST + metrics + LAST + ["shipped"]]
    return frame[FIRST + metrics + middle + LAST]


def column_config() -> dict:
    config = {m: st.column_config.NumberColumn(spec.short, help=spec.label + (f" ({spec.unit})" if spec.unit and
                                               f"({spec.unit})" not in spec.label else ""), format="%.4f")
              for m, spec in METRICS.items()}
    config["origin"] = st.column_config.TextColumn(help="local, or the shipped folder it came from "
                                                   "(reference, study, evidence)")
    return config


def chooser(col, name: str, options: list) -> list:
    """A multiselect that starts with every option and lets a new one in (a run on a dataset not
    seen before must not be hidden by a filter nobody set); a deselected one stays out."""
    key, known = f"runs_{name}", f"runs_{name}_known"
    if key not in st.session_state:
        st.session_state[key] = list(options)
    elif st.session_state.get(known) != options:
        before = set(st.session_state.get(known, ()))
        st.session_state[key] = [o for o in options if o in st.session_state[key] or o not in before]
    st.session_state[known] = options
    return col.multiselect(name.capitalize(), options, key=key)


def filtered(frame):
    """The rows the filters let through."""
    cols = st.columns([1, 1, 1, 2])
    keep = np.ones(len(frame), dtype=bool)
    for col, name in zip(cols, ("dataset", "variant", "origin")):
        chosen = chooser(col, name, sorted(frame[name].unique()))
        keep &= frame[name].isin(chosen).to_numpy()
    text = cols[3].text_input("Run id contains", key="runs_id", placeholder="e.g. moons-adaptive")
    if text.strip():
        keep &= frame.run_id.str.contains(text.strip(), case=False, regex=False).to_numpy()
    return frame[keep].reset_index(drop=True)


def label(run, runs) -> str:
    """A short name for a run in a comparison, unique among `runs` (the id's hash where two would match)."""
    c = run.config
    name = f"{c.dataset} {c.variant} s{c.seed}"
    twins = [r for r in runs if (r.config.dataset, r.config.variant, r.config.seed) == (c.dataset, c.variant, c.seed)]
    return name if len(twins) == 1 else f"{name} {c.steps:,} steps #{run.id[-6:]}"


def compare(runs: list) -> None:
    names = {r.id: label(r, runs) for r in runs}
    colors = {r.id: DATASET_COLORS[i % len(DATASET_COLORS)] for i, r in enumerate(runs)}  # one per run, on every figure
    st.caption(" · ".join(f"**{names[r.id]}**: {common.describe(r)}" for r in runs))
    st.markdown("**Training loss**")
    st.plotly_chart(loss_figure(runs, names, colors), key="runs_loss")
    st.markdown("**Samples** over the real data (dark grey)")
    cols = st.columns(min(len(runs), 3))
    for i, r in enumerate(runs):
        with cols[i % 3]:
            samples_figure(r, names[r.id], colors[r.id], key=f"runs_samples_{i}")
    st.markdown("**alpha(t)** of the adaptive runs")
    curves = [{"dataset": names[r.id], "label": names[r.id], "alpha": alpha}
              for r in runs if r.config.variant == "adaptive" if (alpha := common.load(r, "alpha")) is not None]
    if not curves:
        st.caption("None of these runs is adaptive: no alpha(t) to draw.")
        return
    fig = alpha_curves(curves)  # each run its own "dataset": its own curve, never a mean over runs
    by_name = {names[r.id]: colors[r.id] for r in runs}
    for trace in fig.data:
        trace.line.color = by_name.get(trace.name, trace.line.color)
    st.plotly_chart(fig, key="runs_alpha")


def loss_figure(runs: list, names: dict, colors: dict):
    """plots.loss_curves of the runs, one colour each, smoothed and scaled as the user asks."""
    left, right = st.columns([3, 1])
    weight = left.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key="runs_smoothing",
                         help="Exponential moving average over the drawn points (block means of the steps); 0 = none")
    log = right.toggle("Log scale", value=True, key="runs_log")
    histories = {r.id: common.load(r, "loss_history") for r in runs}
    drawn = [r for r in runs if histories[r.id] is not None and len(histories[r.id])]
    fig = loss_curves({names[r.id]: histories[r.id] for r in drawn})
    for trace, r in zip(fig.data, drawn):
        trace.line.color, trace.line.dash = colors[r.id], "solid"
        if weight > 0:
            trace.y = np.round(ema(trace.y, weight), 5)
    fig.update_yaxes(type="log" if log else "linear",
                     title_text=f"training loss (MSE, block mean{', smoothed' if weight > 0 else ''})")
    return fig


def samples_figure(run, name: str, color: str, key: str) -> None:
    """One small plots.sample_panels: the run's samples over its own dataset's real points."""
    try:
        real = common.real_points(run.config.dataset)
    except (ValueError, OSError) as e:  # a user's dataset whose points are gone
        st.warning(common.literal(f"{name}: no real data ({str(e).splitlines()[0]})"))
        return
    fig = sample_panels(real, {name: common.load(run, "samples")}, n_real=1000, n_samples=3000)
    for trace in fig.data:
        if trace.name.endswith(" samples"):
            trace.marker.color = color
    fig.update_layout(height=320, showlegend=False)
    st.plotly_chart(fig, key=key)


# --------------------------------------------------------------------------- delete

def ask(ids: tuple) -> None:
    st.session_state["runs_pending"] = ids


def cancel() -> None:
    st.session_state.pop("runs_pending", None)


def confirm(ids: tuple) -> None:
    """Delete each run (a callback: it runs before the page redraws, so the table is read afresh)."""
    store, done, failed = common.store(), [], []
    for rid in ids:
        try:
            store.delete(rid)
            done.append(rid)
        except StoreError as e:
            failed.append(str(e).splitlines()[0])
    common.forget_arrays()
    st.session_state.pop("runs_pending", None)
    st.session_state["runs_deleted"] = (done, failed)


def deletion(picked: list) -> None:
    local = tuple(r.id for r in picked if not r.shipped)
    shipped = [r.id for r in picked if r.shipped]
    if shipped:
        more = f" and {len(shipped) - 10} more" if len(shipped) > 10 else ""
        st.caption(f"Not deletable, shipped with the project: {common.literal(', '.join(shipped[:10]) + more)}")
    if not local:
        return
    if st.session_state.get("runs_pending") != local:  # asked for other runs, or never: ask again
        st.button(f"Delete {common.count(len(local), 'local run')}", key="runs_delete", on_click=ask, args=(local,),
                  icon=":material/delete:")
        return
    st.warning(f"Delete {common.count(len(local), 'local run')} for good: {common.literal(', '.join(local))}")
    left, right = st.columns(2)
    left.button(f"Confirm: delete {common.count(len(local), 'run')}", key="runs_confirm", type="primary",
                on_click=confirm, args=(local,))
    right.button("Cancel", key="runs_cancel", on_click=cancel)


# --------------------------------------------------------------------------- the page

common.selection("Dataset, variant, seed and settings (this page lists every run, with its own filters)")
st.title("Runs")
if "runs_deleted" in st.session_state:
    done, failed = st.session_state.pop("runs_deleted")
    if done:
        st.success(f"Deleted {common.count(len(done), 'run')}: {common.literal(', '.join(done))}")
    for line in failed:
        st.error(common.literal(line))
for problem in common.store().problems():  # unreadable run folders are skipped, not hidden
    st.warning(common.literal(f"Unreadable: {problem.splitlines()[0]}"))
runs = {r.id: r for r in common.all_runs()}
frame = metrics_frame(runs.values())
if frame.empty:
    st.info("No runs in the store yet: start one on the Train page (or run `python -m dualscale reproduce`).")
    st.stop()

shown = table(filtered(frame))
st.caption(f"{common.count(len(shown), 'run')} of {len(frame):,} match the filters. Click a column to sort; "
           "tick rows to compare them (two or more) or delete them (local runs only). The selection clears "
           "when the list changes (a filter, a new or deleted run).")
# Rows are picked by position: the key follows the rows shown, so a pick never lands on another run.
key = "runs_table_" + hashlib.sha1(",".join(shown.run_id).encode()).hexdigest()[:12]
event = st.dataframe(shown, key=key, on_select="rerun", selection_mode="multi-row", hide_index=True,
                     column_config=column_config())
picked = [runs[shown.run_id.iloc[i]] for i in event.selection.rows if i < len(shown)]

if len(picked) >= 2:
    st.subheader("Compare")
    if len(picked) > COMPARE:
        st.caption(f"{len(picked)} runs selected: the first {COMPARE} are compared.")
    compare(picked[:COMPARE])
elif picked:
    st.caption("Select one more run to compare.")
if picked:
    st.subheader("Delete")
    deletion(picked)
