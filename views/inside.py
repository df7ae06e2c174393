"""Inside the models: at which noise levels the second branch lowers the loss (paired per-timestep
eval loss beside alpha(t)), and what each branch predicts over the plane at a chosen t."""
from __future__ import annotations

import numpy as np
import streamlit as st

from dualscale import VARIANTS, StoreError
from dualscale.inside import branch_field, damaged, field_figure, per_timestep, weights_problem, where_figure
from dualscale.stats import PAIRS
from dualscale.store import file_version
from views import common


@st.cache_data(max_entries=64, show_spinner="Computing the field at this t…")
def field(root: str, run_id: str, stamp: int, t: int, lim: float) -> dict:
    """branch_field once per (run, t): a 41 x 41 grid through the EMA model, kept."""
    from dualscale.train import make_schedule

    run = common.store().get(run_id)
    return branch_field(run.load_model("ema"), make_schedule(run.config), t, lim)


@st.cache_data(max_entries=16, show_spinner="Reading the per-timestep losses…")
def where_in_t(key: tuple, _runs: list) -> tuple[dict, list, int, list[str]]:
    """(per_timestep of each pair, the adaptive runs' alpha(t), how many runs lack the per-timestep
    loss, one line per run that cannot be read), once per set of run versions (key: their ids and
    folder times). One entry per page, not one per run and array: dino's 204 runs were 408 entries
    of common.load's 256, so every visit read them all again (1.5 s, measured)."""
    by_t, alphas, lacking, problems = {v: {} for v in VARIANTS}, [], 0, []
    for r in _runs:
        try:
            x, a = r.eval_loss_by_t(), r.alpha() if r.config.variant == "adaptive" else None
        except StoreError as e:
            problems.append(str(e).splitlines()[0])
            continue
        if x is None:
            lacking += 1
        else:
            by_t[r.config.variant][r.config.seed] = x
        if a is not None:
            alphas.append(a)
    return {f"{a} − {b}": per_timestep(by_t[a], by_t[b]) for a, b in PAIRS}, alphas, lacking, problems


@st.cache_data(max_entries=64, show_spinner=False)
def _problem(root: str, run_id: str, files: tuple) -> str | None:
    return weights_problem(common.store().get(run_id))


def problem_of(run) -> str | None:
    """weights_problem (it loads the model: 0.2 s) once per version of the run's files."""
    return _problem(common.store_root(), run.id, tuple((n, file_version(run.path / n)) for n in sorted(run.files)))


sel = common.selection("Seed (every seed is used above; the field shows the sidebar's run)")
st.title("Inside the models")
st.markdown("The paper's idea: a **global** branch (the input as it is) for overall structure, a **local** "
            "branch (an \"upscaled\" input: here a learned linear map of the point) for fine detail, and a weight "
            "alpha(t) on the global one, learned from the timestep, that shifts the balance between them as noise "
            "falls. The paper does not say which way it should shift. Here: where in t the dual-scale models predict "
            "the noise better, beside alpha(t); then what each branch predicts over the plane.")

st.subheader(f"Where in t, on {sel.dataset}")
runs = [r for r in common.all_runs() if r.config.dataset == sel.dataset and common.same_config_settings(r.config, sel.settings)]
diffs, alphas, lacking, unreadable = where_in_t(tuple((r.id, common.stamp(r)) for r in runs), runs)
for line in unreadable:
    st.warning(common.literal(line))
if any(diffs.values()):
    st.plotly_chart(where_figure(diffs, alphas), key="inside_where")
    st.caption("Each line: the mean over seeds of the first variant's eval loss minus the second's at that timestep, on "
               "a fixed evaluation set (the same points and noise for every run); below zero the first predicts the "
               "noise better there. The band is a 95% t-interval at each t: description, not a decision."
               + (f" {lacking} runs here were stored before the per-timestep loss existed and are left out "
                  "(`python -m dualscale rescore` adds it to runs with weights)." if lacking else ""))
else:
    st.info("No two seeds of a pair with the per-timestep eval loss yet (runs stored since it is recorded have it: "
            "the shipped evidence on dino, seeds 10 and up).")

st.subheader("What each branch does")
run = common.pick_run(sel.dataset, sel.variant, sel.settings)
if run is None:
    st.info(f"No stored {sel.dataset}/{sel.variant} run with these settings.")
elif run.light:
    st.info(f"{common.describe(run, sel.seed)}: a light run ships without weights. Seed 0 of the shipped runs has "
            "them; or train one on Train.")
elif (problem := problem_of(run)) is not None:
    st.error(common.literal(problem))  # one line, as it is; the rest of the page stands
else:
    real = common.real_points(sel.dataset, 3000)
    lim = float(np.abs(real).max() * 1.15)
    t = st.slider("timestep t (0 = data, T-1 = noise)", 0, run.config.timesteps - 1, run.config.timesteps // 2,
                  key="inside_t")
    try:
        shown = field(common.store_root(), run.id, common.stamp(run), t, lim)
    except StoreError as e:  # damaged since the check above: said the same way
        st.error(common.literal(damaged(run, e)))
    else:
        wide, narrow = common.wide_or_narrow("inside_field")  # below 640 px three panels in a row are 90 px wide
        with wide:
            st.plotly_chart(field_figure(shown, real, t), key="inside_field")
        with narrow:  # a phone: the three one above the other, fewer arrows
            st.plotly_chart(field_figure(shown, real, t, stacked=True), key="inside_field_stacked")
        st.caption(f"At t = {t}, each arrow points from a point x_t toward the clean point the network predicts "
                   "for it. **Arrow lengths are scaled per panel**: in each, the longest arrow is drawn just short of the "
                   "space between two arrows, and the line under the panel gives its true length and the factor "
                   "every arrow there is drawn at (near t = 0 the predicted moves are tiny, and unscaled they "
                   "would be dots). Compare directions across panels, lengths only within one. "
                   f"{sel.variant}, {common.describe(run, sel.seed)}. The mix is alpha(t) × global + (1 − alpha(t)) "
                   "× local, exactly the model's output (tested). Computed once per (run, t) on a 41 × 41 grid, "
                   "then kept; 21 × 21 of its points carry an arrow (15 × 15 on a phone).")
