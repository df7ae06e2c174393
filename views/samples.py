"""Samples: generated points over the real data, the three variants side by side, and the
reverse process from noise to data (Plotly slider + Play, no server round trip per frame).

Fresh samples on request: a run with weights is sampled again from another start noise x_T and/or
in fewer steps (a strided subset of the trained timesteps), cached per (run, seed, steps).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dualscale import VARIANTS
from dualscale.inside import WEIGHT_ERRORS
from dualscale.plots import sample_panels, trajectory_animation
from views import common

RESAMPLE_POINTS = 2_000  # fresh points per model: a few seconds per model on a CPU at 100 steps
PATHS = 20  # points of the reverse process whose paths are drawn as lines


@st.cache_resource(max_entries=32, show_spinner=False)
def panels_figure(root: str, dataset: str, keys: tuple):
    """Figures per (dataset, shown runs): switching back to a dataset costs no rebuild.

    cache_resource, not cache_data: the figures are only read, and unpickling a copy of the
    animation on every rerun cost more than drawing it (measured ~0.15 s).
    """
    runs = {v: common.store().get(rid) if rid else None for v, rid, _ in keys}
    real = common.real_points(dataset)
    samples = {v: common.load(r, "samples") if r else None for v, r in runs.items()}
    trajs = {v: common.load(r, "trajectory") if r else None for v, r in runs.items()}
    notes = {v: "light run: no trajectory stored" for v, r in runs.items() if r is not None and r.light}
    return (sample_panels(real, samples), phone_panels(real, samples),
            trajectory_animation(real, trajs, notes=notes, n_paths=PATHS))


def phone_panels(real, samples: dict, notes: dict | None = None):
    """The panels one above the other for a phone (shown below 640 px; sent, and drawn hidden, on
    every visit, a desktop's too): 1,500 samples and 500 real points each, in SVG, which still show each
    shape in a phone's 360-px panel; every SVG point delays the page's first plot."""
    return sample_panels(real, samples, n_real=500, stacked=True, n_samples=1500, notes=notes)


def step_choices(timesteps: int) -> list[int]:
    """The sampling steps offered: T (the trained schedule), then T/2, T/4 and T/10 (100, 50, 25, 10)."""
    return list(dict.fromkeys(s for s in (timesteps, timesteps // 2, timesteps // 4, timesteps // 10) if s >= 2))


def strided_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` of the T trained timesteps, evenly spaced, T-1 and 0 included, largest first."""
    return [int(t) for t in np.unique(np.linspace(0, timesteps - 1, steps).round().astype(int))[::-1]]


def strided_sample(model, schedule, n: int, seed: int, steps: int) -> np.ndarray:
    """n points from x_T ~ N(0, I) drawn with `seed`, denoised in `steps` steps, (n, 2) float32.

    steps = T: diffusion.sample itself, the trained schedule (Ho et al. Algorithm 2), as a run's
    stored samples were drawn. Fewer: DDPM ancestral steps on a strided subset tau of the trained
    timesteps, the schedule "respaced" (Nichol & Dhariwal 2021, section 4): between tau_i and the
    next, smaller tau_{i-1}, beta_i = 1 - abar(tau_i) / abar(tau_{i-1}) (abar = 1 after the last),
    x0_hat from the network at tau_i, the posterior mean of q(x_{tau_{i-1}} | x_{tau_i}, x0_hat) plus
    noise of its variance beta_i (1 - abar(tau_{i-1})) / (1 - abar(tau_i)); none after t = 0. At
    stride 1 this is Algorithm 2 step for step. Either way the generator draws x_T first, so a seed
    starts every step count (and every variant) from the same x_T.
    """
    import torch

    from dualscale.diffusion import sample

    g = torch.Generator().manual_seed(seed)
    if steps >= schedule.timesteps:
        return sample(model, schedule, n, g)[0].astype(np.float32)
    taus = strided_timesteps(schedule.timesteps, steps)
    abar = schedule.alphas_cumprod.double()  # (T,)
    model.eval()
    with torch.inference_mode():
        tables = model.tables()  # what depends on t alone: once, not once per step
        x = torch.randn(n, 2, generator=g)  # x_T: the same draw as diffusion.sample's for this seed
        for i, t in enumerate(taus):
            last = i + 1 == len(taus)
            a_t = abar[t]
            a_prev = torch.ones((), dtype=torch.float64) if last else abar[taus[i + 1]]
            beta = 1 - a_t / a_prev
            x0_hat = schedule.predict_x0(x, model(x, t, tables).float(), t)
            x = (beta * a_prev.sqrt() / (1 - a_t)).float() * x0_hat + \
                ((1 - a_prev) * (1 - beta).sqrt() / (1 - a_t)).float() * x
            if not last:
                var = (beta * (1 - a_prev) / (1 - a_t)).clamp(min=1e-20)
                x = x + var.sqrt().float() * torch.randn(x.shape, generator=g)
    return x.numpy().astype(np.float32)


@st.cache_resource(max_entries=6, show_spinner=False)
def _model(root: str, run_id: str, stamp: int):
    """A run's EMA model (Run.load_model: weights.npz checked against run.json, no pickle) and its
    noise schedule, once per run version."""
    from dualscale.train import make_schedule

    run = common.store().get(run_id)
    return run.load_model("ema"), make_schedule(run.config)


@st.cache_data(max_entries=64, show_spinner=False)
def resampled(root: str, run_id: str, stamp: int, seed: int, steps: int, n: int) -> np.ndarray:
    """strided_sample for one run, once per (run version, seed, steps, n)."""
    model, schedule = _model(root, run_id, stamp)
    return strided_sample(model, schedule, n, seed, steps)


@st.cache_resource(max_entries=32, show_spinner=False)
def fresh_figures(root: str, dataset: str, keys: tuple, seed: int, steps: int, n: int):
    """(row figure, stacked figure, problems) of fresh samples for the shown runs: a light run (no
    weights) or one whose weights do not load is an empty panel that says so."""
    real = common.real_points(dataset)
    samples, notes, problems = {}, {}, []
    for v, rid, stamp_, light in keys:
        samples[v] = None
        if rid is None:
            continue
        if light:
            notes[v] = "light run: no weights to resample"
            continue
        try:
            samples[v] = resampled(root, rid, stamp_, seed, steps, n)
        except WEIGHT_ERRORS as e:
            notes[v] = "weights do not load: not resampled"
            problems.append(f"{v}: run {rid} cannot be resampled: {str(e).splitlines()[0] or type(e).__name__}")
    return (sample_panels(real, samples, notes=notes),
            phone_panels(real, samples, notes), problems)


def fresh_controls(shown: dict) -> tuple[int, int] | None:
    """The toggle and, when it is on, "Start noise seed" and "Sampling steps": (seed, steps), or None
    for the stored samples. Light runs ship without weights: said, and never resampled."""
    weighted = [r for r in shown.values() if r and not r.light]
    light = [v for v, r in shown.items() if r and r.light]
    on = st.toggle("Draw fresh samples: another start noise x_T, fewer sampling steps", key="samples_fresh",
                   disabled=not weighted,
                   help="Samples the stored models again, here and now, from the x_T a seed draws and in the "
                        "number of steps you choose. Needs a run's weights: light runs ship without them.")
    if light:
        who = ("All the runs shown are light runs: shipped without weights, so they cannot be resampled (their"
               if not weighted else
               f"**{light[0]}** is a light run: shipped without weights, so it cannot be resampled (its"
               if len(light) == 1 else
               f"**{'**, **'.join(light)}** are light runs: shipped without weights, so they cannot be resampled "
               "(their")
        st.caption(f"{who} stored samples are all there is). Seed 0 of the shipped runs and every local run carry "
                   "weights.")
    if not (on and weighted):
        return None
    timesteps = weighted[0].config.timesteps
    left, right = st.columns(2)
    seed = left.number_input("Start noise seed", min_value=0, max_value=2**32 - 1, value=0, step=1,
                              key="samples_seed", help="Seeds the draw of x_T ~ N(0, I) and of each step's noise. "
                              "Every variant and every step count starts from the same x_T for one seed.")
    steps = right.selectbox("Sampling steps", step_choices(timesteps), key="samples_steps",
                            format_func=lambda s: f"{s} (the trained schedule)" if s == timesteps else str(s),
                            help=f"The models were trained on {timesteps} timesteps. Fewer steps visit an evenly "
                                 "spaced subset of them (t = T-1 down to 0): DDPM ancestral steps with the variance "
                                 "of that strided schedule; the models are not retrained.")
    return int(seed), int(steps)


sel = common.selection("Variant (all three are shown)")
st.title("Samples")
runs = common.all_runs()
shown = {v: common.pick_run(sel.dataset, v, sel.settings, runs) for v in VARIANTS}
note = common.left_out(runs, sel.settings, sel.dataset)
if not any(shown.values()):
    st.info(f"No stored runs for **{sel.dataset}** with these settings yet: train one on the Train page.")
    if note:
        st.caption(note)
    st.stop()

st.caption(" · ".join(f"**{v}**: {common.describe(r, sel.seed) if r else 'no run'}" for v, r in shown.items()))
if note:
    st.caption(note)
keys = tuple((v, r.id if r else None, common.stamp(r) if r else 0) for v, r in shown.items())
scatter, stacked, animation = panels_figure(common.store_root(), sel.dataset, keys)
n = next(r for r in shown.values() if r).config.n_samples
fresh = fresh_controls(shown)
if fresh is None:
    st.markdown(f"**{sel.dataset}**: {n:,} generated points per model, with the real data drawn over them in dark "
                "grey. Drag to zoom (all panels follow), double-click to reset.")
else:
    seed, steps = fresh
    m = min(n, RESAMPLE_POINTS)
    fresh_keys = tuple((v, r.id if r else None, common.stamp(r) if r else 0, bool(r and r.light))
                       for v, r in shown.items())
    with st.spinner(f"Sampling {m:,} points per model from seed {seed} in {steps} steps…"):
        scatter, stacked, problems = fresh_figures(common.store_root(), sel.dataset, fresh_keys, seed, steps, m)
    for problem in problems:
        st.warning(common.literal(problem))
    timesteps = next(r for r in shown.values() if r and not r.light).config.timesteps
    how = ("the trained schedule, as the stored samples were drawn" if steps >= timesteps else
           f"{steps} of the {timesteps} trained timesteps, evenly spaced, each a DDPM ancestral step with the "
           "variance of that strided schedule")
    st.markdown(f"**{sel.dataset}**, fresh: {m:,} points per model from the x_T that seed {seed} draws (the same "
                f"for every variant), denoised in **{steps} steps**: {how}. Real data in dark grey over them. "
                "Drag to zoom (all panels follow), double-click to reset.")
wide, narrow = common.wide_or_narrow("samples")  # below 640 px three side-by-side panels would be 100 px wide
with wide:
    st.plotly_chart(scatter, key="samples_scatter")
with narrow:  # a phone: the panels one above the other, 1,500 points each
    st.plotly_chart(stacked, key="samples_stacked")
reverse = st.expander("**Reverse process**: from noise to data, step by step, with the paths of 20 points",
                      key="samples_reverse", on_change="rerun", icon=":material/play_circle:")
if not reverse.open:  # drawn when opened: the animation (1.2 MB, 35 frames) held back the plots above by ~0.7 s
    st.stop()
seeds = {r.config.seed for r in shown.values() if r}
same = ("The variants start from **the same x_T** (seed {0} draws the same noise for each: the same batches, t and "
        "noise in training, then the same sampling draws), so the differences between the panels come from the "
        "models alone.").format(next(iter(seeds))) if len(seeds) == 1 else \
    "The panels show runs of different seeds, so they start from different noise: choose a seed all three have."
reverse.caption("From pure noise (largest t) to data (t = 0), a thinned subset of points; the lines follow "
                f"{PATHS} of them from x_T to the step shown. Drag the timestep slider or press Play. " + same)
reverse.plotly_chart(animation, key="samples_trajectory")
