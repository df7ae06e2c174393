"""alpha(t): the adaptive model's weight on the global branch per timestep, for every dataset,
against the fixed model's 0.5; and the training-loss curves of the three variants."""
from __future__ import annotations

import streamlit as st

from dualscale import VARIANTS
from dualscale.plots import alpha_curves, loss_curves
from views import common

sel = common.selection("Variant (every adaptive run is drawn; the seed picks the loss curves)")
st.title("alpha(t)")
runs = common.all_runs()
adaptive = [r for r in runs if r.config.variant == "adaptive" and common.same_config_settings(r.config, sel.settings)]
st.subheader("alpha(t) of the adaptive runs")
st.caption(f"Runs with {common.settings_label(sel.settings)}: per dataset the mean over its seeds with a band of ± one "
           "sd; switch on every seed's own curve below.")
if note := common.left_out([r for r in runs if r.config.variant == "adaptive"], sel.settings):
    st.caption(note)
if adaptive:
    datasets = sorted({r.config.dataset for r in adaptive})
    chosen = st.multiselect("Datasets", datasets, default=datasets, key="alpha_datasets")
    per_seed = st.toggle("Every seed's curve", key="alpha_per_seed")
    curves = [{"dataset": r.config.dataset, "alpha": alpha,
               "label": f"{r.config.dataset} seed {r.config.seed} ({r.config.steps:,} steps)"}
              for r in adaptive if r.config.dataset in chosen
              if (alpha := common.load(r, "alpha")) is not None]
    st.plotly_chart(alpha_curves(curves, per_seed), key="alpha_curves")
    st.caption("alpha = 1: only the global branch; 0: only the local (upscaled-input) branch. "
               "Hover a curve for its values.")
else:
    st.info("No adaptive runs stored yet: train one on the Train page.")

st.subheader(f"Training loss on {sel.dataset}")
shown = {v: common.pick_run(sel.dataset, v, sel.settings, runs) for v in VARIANTS}
histories = {v: common.load(r, "loss_history") if r else None for v, r in shown.items()}
if any(h is not None for h in histories.values()):
    st.plotly_chart(loss_curves(histories), key="loss_curves")
    st.caption(" · ".join(f"**{v}**: {common.describe(r, sel.seed) if r else 'no run'}"
                          for v, r in shown.items()))
else:
    st.info(f"No stored runs for **{sel.dataset}** yet.")
