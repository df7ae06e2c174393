"""Results: the paper's three tables rebuilt from the runs in the store, beside the paper's."""
from __future__ import annotations

import streamlit as st

from dualscale import METRICS, VARIANTS
from dualscale.paper import PAPER_METRICS, TITLES, metrics_frame, table
from dualscale.plots import marked_tables
from views import common


def column_config() -> dict:
    """Narrow columns, so all 13 fit a laptop screen; digits and help from the metric registry."""
    config = {"runs": st.column_config.NumberColumn(width="small")}
    for m in (METRICS[name] for name in PAPER_METRICS):
        config[m.short] = st.column_config.TextColumn(width="small", help=m.help)
        config[f"{m.short} paper"] = st.column_config.NumberColumn(width="small", format=f"%.{m.digits}f")
        config[f"{m.short} Δ"] = st.column_config.NumberColumn(width="small", format=f"%+.{m.digits}f")
    return config


sel = common.selection()
st.title("Results")
frame = metrics_frame(common.all_runs())
for problem in common.store().problems():  # unreadable run folders are skipped, not hidden
    st.warning(problem.splitlines()[0])
if frame.empty:
    st.info("No runs in the store yet: start one on the Train page "
            "(or run `python -m dualscale reproduce`).")
    st.stop()

settings = sel.settings
only_same = st.toggle("Only runs with the sidebar's training settings (all seeds pooled)",
                      value=True, help="Tables compare like with like; turn off to pool every run.")
same = frame[[all(row[k] == getattr(settings, k) for k in common.SETTINGS)
              for row in frame.to_dict("records")]] if only_same else frame
legend = "; ".join(f"{m.short} = {m.label}" + (f" ({m.unit})" if m.unit and f"({m.unit})" not in m.label else "")
                   for m in (METRICS[name] for name in PAPER_METRICS))
st.caption(f"{len(frame)} runs in the store, {len(same)} used below. "
           "★ = best of the three variants on that dataset (all four metrics: lower is better). "
           f"Δ = ours − paper. {legend} (the paper's seconds are GPU seconds).")

tables = marked_tables({v: table(same, v) for v in VARIANTS})
for variant in VARIANTS:
    st.subheader(TITLES[variant])
    if tables[variant].empty:
        st.caption("No runs of this variant on the paper's datasets with these settings.")
    else:
        st.dataframe(tables[variant], column_config=column_config(), key=f"table_{variant}")

st.download_button("Download metrics CSV (one row per run)", frame.to_csv(index=False),
                   file_name="dualscale-runs.csv", mime="text/csv", icon=":material/download:")
with st.expander(f"All {len(frame)} runs"):
    st.dataframe(frame, hide_index=True)
