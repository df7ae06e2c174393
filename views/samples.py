"""Samples: generated points over the real data, the three variants side by side, and the
reverse process from noise to data (Plotly slider + Play, no server round trip per frame)."""
from __future__ import annotations

import streamlit as st

from dualscale import VARIANTS
from dualscale.plots import sample_panels, trajectory_animation
from views import common

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
    return (sample_panels(real, samples), sample_panels(real, samples, n_real=1000, stacked=True, n_samples=3000),
            trajectory_animation(real, trajs, notes=notes))


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
st.markdown(f"**{sel.dataset}**: {n:,} generated points per model, with the real data drawn over them in dark grey. "
            "Drag to zoom (all panels follow), double-click to reset.")
wide, narrow = common.wide_or_narrow("samples")  # below 640 px three side-by-side panels would be 100 px wide
with wide:
    st.plotly_chart(scatter, key="samples_scatter")
with narrow:  # a phone: the panels one above the other, 3,000 points each
    st.plotly_chart(stacked, key="samples_stacked")
st.subheader("Reverse process")
seeds = {r.config.seed for r in shown.values() if r}
same = ("The variants start from **the same x_T** (seed {0} draws the same noise for each: the same batches, t and "
        "noise in training, then the same sampling draws), so the differences between the panels come from the "
        "models alone.").format(next(iter(seeds))) if len(seeds) == 1 else \
    "The panels show runs of different seeds, so they start from different noise: choose a seed all three have."
st.caption("From pure noise (largest t) to data (t = 0), a thinned subset of points. Drag the timestep slider or "
           "press Play. " + same)
st.plotly_chart(animation, key="samples_trajectory")
