"""Train: start a run for the sidebar's selection and watch every run in progress, live.

Training happens in a worker process (dualscale.runner), never in this script, so it goes on when
the user switches page or reloads; this page only starts, polls and cancels.
"""
from __future__ import annotations

import time

import numpy as np
import streamlit as st

from dualscale import METRICS, TrainConfig
from dualscale.events import PHASES
from dualscale.runner import JobStatus
from dualscale.plots import alpha_preview, live_loss, loss_curves, sample_panels
from views import common

ss = st.session_state
ss.setdefault("watched", [])  # runs this session started: their outcome stays on screen
sel = common.selection()
registry = common.registry()
if registry.note:
    st.warning(registry.note, icon=":material/settings:")


def start(cfg, force: bool) -> None:
    run_id = registry.submit(cfg, force=force)
    if run_id not in ss.watched:
        ss.watched.append(run_id)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


TILES = 5  # metric tiles per row


def stored_panel(run) -> None:
    """A stored config: its numbers at once, and training again only on request."""
    m = run.metrics
    st.success(f"Stored: loaded instantly, no training needed ({run.config.variant}, "
               f"{common.describe(run)}, trained on {m.get('device', '?')}).")
    shown = [spec for name, spec in METRICS.items() if name in m]
    for row in range(0, len(shown), TILES):  # rows of TILES: every label fits at 1440 px
        for col, spec in zip(st.columns(TILES), shown[row:row + TILES]):
            unit = f" ({spec.unit})" if spec.unit and spec.unit not in spec.short else ""
            col.metric(spec.short + unit, spec.format(m[spec.name]), help=f"{spec.label}: {spec.help}")
    st.plotly_chart(loss_curves({run.config.variant: common.load(run, "loss_history")}),
                    key="stored_loss")
    if st.button("Retrain", help="Train this configuration again and replace the stored run"):
        start(run.config, force=True)
        st.rerun()


def selection_panel(running: set[str]) -> None:
    if sel.error:
        st.error(f"Cannot train with these settings: {sel.error}")
        return
    cfg = sel.config
    st.markdown(f"**{cfg.dataset} · {cfg.variant} · seed {cfg.seed}** · {cfg.steps:,} steps, "
                f"batch {cfg.batch_size}, {cfg.n_points:,} points · run id `{cfg.run_id}`")
    if cfg.run_id in running:
        st.info("This configuration is training now: watch it above.")  # runs in progress come first then
        return
    if cfg.run_id in registry.queued_ids():
        st.info("This configuration is queued: it starts when a worker is free (see above).")
        return
    try:
        run = common.store().find(cfg)
    except ValueError as e:  # a corrupt stored run: say so, offer to overwrite it
        st.error(common.literal(str(e).splitlines()[0]))
        run = None
    if run is not None:
        stored_panel(run)
        return
    last = registry.status(cfg.run_id)  # how its last attempt ended survives a reload (the store keeps it)
    if last.state in ("cancelled", "failed") and cfg.run_id not in ss.watched:
        outcome(last)
    if st.button("Start training", type="primary"):
        start(cfg, force=False)
        st.rerun()


def live_run(status: JobStatus, info: dict) -> None:
    """One run in progress: progress bar, speed, ETA, the loss so far, alpha(t) if adaptive."""
    c = info.get("config") or {}
    with st.container(border=True):
        run_header(c.get("dataset", "?"), c.get("variant", "?"), c.get("seed", "?"), status.run_id, status.state)
        st.progress(status.fraction, text=(f"step {status.step:,} / {status.total:,}"
                                           + (" · training done" if status.state == "evaluating" else ""))
                    if status.total else f"{status.state}…")
        if status.state == "evaluating":
            evaluation_phases(status)
        eta, basis = eta_of(status, c)
        since = status.launched or status.started
        cols = st.columns(4)
        cols[0].metric("steps/s", f"{status.steps_per_s:.1f}" if status.steps_per_s else "–")
        cols[1].metric("ETA", fmt_seconds(eta),
                       help="To the end of the last phase: the training still to go at the current speed, then "
                            f"each evaluation phase at its own past cost, scaled to this run's size ({basis})")
        cols[2].metric("loss", f"{status.losses[-1]:.4f}" if status.losses else "–")
        cols[3].metric("elapsed", fmt_seconds(time.time() - since if since else None),
                       help="Since the worker started: start-up, training and evaluation")
        if status.malformed:
            st.caption(f":material/warning: {status.malformed} malformed lines in this run's progress file were "
                       "ignored.")
        live_charts(status, c.get("dataset"), c.get("variant", "samples"))


def eta_of(status: JobStatus, config: dict) -> tuple[float | None, str]:
    """Seconds to the end of the run's last phase (estimates.remaining), and what the estimate is based on."""
    from dualscale.estimates import phase_seconds, remaining

    try:
        expected = phase_seconds(common.all_runs(), TrainConfig.from_dict(config))
    except (ValueError, TypeError):
        expected = None
    if expected is None:
        return None, "no stored run to time it by"
    in_phase = time.time() - status.phase_time if status.phase_time else 0.0
    index = status.phase_index if status.state == "evaluating" else 0
    return remaining(expected[0], status.step, status.total, status.steps_per_s, index, in_phase), expected[1]


def evaluation_phases(status: JobStatus) -> None:
    """After training: eval loss, sampling, metrics, saving, each marked done, current or to come."""
    marks = []
    for i, name in enumerate(PHASES, start=1):
        mark = "✓" if i < status.phase_index else ("…" if i == status.phase_index else "·")
        marks.append(f"{mark} {name}")
    st.progress(max(status.phase_index - 1, 0) / len(PHASES),
                text=f"evaluating {status.phase_index}/{len(PHASES)}: {status.phase or 'starting'}")
    st.caption("   ".join(marks))


def live_charts(status: JobStatus, dataset: str | None, variant: str) -> None:
    charts = [("loss", live_loss(status.steps, status.losses))] if status.losses else []
    if status.alpha is not None:
        charts.append(("alpha", alpha_preview(status.alpha)))
    if status.preview is not None and dataset:
        panel = sample_panels(common.real_points(dataset), {variant: np.array(status.preview)},
                              n_real=1500)
        charts.append(("preview", panel.update_layout(height=300, showlegend=False)))
    if not charts:
        return
    for col, (name, fig) in zip(st.columns(len(charts)), charts):
        col.plotly_chart(fig, key=f"live_{name}_{status.run_id}")


def outcome(status: JobStatus) -> None:
    """How a run this session started ended: one line each."""
    if status.state == "done":
        m = status.metrics or {}
        kl, loss = METRICS["kl_divergence"], METRICS["eval_loss"]
        st.success(f"`{status.run_id}` done: KL {kl.format(m.get('kl_divergence', float('nan')))} bits, "
                   f"eval loss {loss.format(m.get('eval_loss', float('nan')))}, trained in "
                   f"{fmt_seconds(m.get('training_time'))} on {m.get('device', '?')}.")
    elif status.state == "cancelled":
        st.warning(f"`{status.run_id}` was cancelled; nothing was stored.")
    elif status.state == "failed":
        st.error(f"`{status.run_id}` failed: {common.literal(status.error)}")


def run_header(dataset, variant, seed, run_id: str, state: str) -> None:
    """A run's title line and its Cancel button (running: SIGTERM to its worker; queued: dropped)."""
    head, button = st.columns([5, 1])
    head.markdown(f"**{dataset} · {variant} · seed {seed}** `{run_id}` — {state}")
    # a callback: it runs before the next script run, whichever run (the page's or the poll's) takes the click
    button.button("Cancel", key=f"cancel_{run_id}", on_click=cancel, args=(run_id,))


def cancel(run_id: str) -> None:
    registry.cancel(run_id)
    st.toast(f"Cancelling {run_id}…")


def queued_run(cfg) -> None:
    with st.container(border=True):
        run_header(cfg.dataset, cfg.variant, cfg.seed, cfg.run_id, f"queued (at most {registry.jobs} at once)")


def live_panel(active: list[dict], queued: list) -> None:
    ids = {a["run_id"] for a in active} | {c.run_id for c in queued}
    if not active and not queued:
        st.caption("Nothing is training right now.")
    for info in active:
        live_run(registry.status(info["run_id"]), info)
    for cfg in queued:
        queued_run(cfg)
    for run_id in [r for r in ss.watched if r not in ids]:
        outcome(registry.status(run_id))


def recent_section() -> None:
    st.subheader("Recent runs")
    recent_runs()


def recent_runs() -> None:
    """The latest attempts in this store, from any session, newest first, with their outcome."""
    recent = registry.recent(10)
    if not recent:
        st.caption("No runs were started in this store yet.")
        return
    kl = METRICS["kl_divergence"]
    icons = {"done": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:",
             "stopped": ":material/warning:"}  # Streamlit's own icon font: no emoji font needed
    lines = []
    for s in recent:
        when = time.strftime("%H:%M:%S", time.localtime(s.started)) if s.started else "–"
        extra = (f" · KL {kl.format(s.metrics['kl_divergence'])}" if s.metrics and "kl_divergence" in s.metrics
                 else f" · {common.literal(s.error)}" if s.error else f" · step {s.step:,} / {s.total:,}" if s.total else "")
        lines.append(f"- {icons.get(s.state, ':material/hourglass_top:')} `{s.run_id}` **{s.state}** · started {when}{extra}")
    st.markdown("\n".join(lines))


def body(running: frozenset) -> None:
    """The whole page below the title, drawn in one pass from one reading of what runs, so that no
    part of it can contradict another (the selection "training now" beside "Nothing is training").
    While something runs it is redrawn every second; when what runs changes, the page reruns whole
    (the polling starts or stops)."""
    active = registry.running()  # also starts queued runs when a worker is free
    queued = registry.queued()
    if frozenset(a["run_id"] for a in active) | frozenset(c.run_id for c in queued) != running:
        st.rerun()
    if running:  # the live cards first: below a stored run's panel they were two screens down on a phone
        st.subheader("Runs in progress")
        live_panel(active, queued)
        st.subheader("The sidebar's selection")
        selection_panel(running)
    else:
        selection_panel(running)
        st.subheader("Runs in progress")
        live_panel(active, queued)
    recent_section()


st.title("Train")
running = frozenset(registry.running_ids()) | frozenset(registry.queued_ids())
# Poll only while something trains: an idle page costs nothing.
st.fragment(run_every=1.0 if running else None)(body)(running)
if ss.watched and not running and st.button("Clear finished runs"):
    ss.watched = []
    st.rerun()
