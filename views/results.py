"""Results: the paper's three tables rebuilt from the runs in the store, beside the paper's."""
from __future__ import annotations

import streamlit as st

from dualscale import METRICS, VARIANTS
from dualscale.paper import TITLES, for_csv, is_reference, metrics_frame, table
from dualscale.plots import JUDGED_PAPER, PAGE_ORDER, compact_html, marked_tables
from dualscale.stats import winners
from views import common


def column_config() -> dict:
    """Narrow columns, so all of them fit 1440 px; help from the metric registry."""
    config = {"runs": st.column_config.NumberColumn(width="small")}
    for m in (METRICS[name] for name in PAGE_ORDER):
        config[m.short] = st.column_config.TextColumn(width="small", help=m.help)
        config[f"{m.short} paper (Δ)"] = st.column_config.TextColumn(width="small", help=f"The paper's {m.label} "
                                                                     "and, in brackets, ours minus the paper's")
    return config


# Below 640 px (a phone) the nine-column tables would scroll sideways: each is shown there as a
# compact table of the judged metrics instead (its cells wrap), and the full one is hidden.
COMPACT_CSS = """<style>
.compact-table { font-size: 0.8rem; border-collapse: collapse; width: 100%; }
.compact-table th, .compact-table td { padding: 2px 4px; border-bottom: 1px solid #ddd; text-align: left; }
</style>"""

sel = common.selection("Dataset, variant and seed")
st.html(COMPACT_CSS)
st.title("Results")
frame = metrics_frame(common.all_runs())
for problem in common.store().problems():  # unreadable run folders are skipped, not hidden
    st.warning(common.literal(f"Unreadable: {problem.splitlines()[0]}"))
if frame.empty:
    st.info("No runs in the store yet: start one on the Train page "
            "(or run `python -m dualscale reproduce`).")
    st.stop()

same = common.same_settings(frame, sel.settings)
legend = "; ".join(f"{m.short} = {m.label}" + (f" ({m.unit})" if m.unit and f"({m.unit})" not in m.label else "")
                   for m in (METRICS[name] for name in PAGE_ORDER))
st.caption(f"{common.count(len(same), 'run')} with the sidebar's training settings ({common.settings_label(sel.settings)}); "
           f"{common.count(len(frame) - len(same), 'run')} with other settings are left out, never pooled in. "
           "Each cell: mean ± 95% CI over seeds (t interval, when there are several). "
           "★ = better than both other variants on that dataset in the Verdict's decision (its confidence "
           "sequence, paired by seed, excludes 0 in its favour within the declared family; KL and eval loss; "
           "times are not judged). "
           f"{legend} (the paper's seconds are GPU seconds). Our seconds are as each run measured them, on its "
           "machine and beside whatever else ran (the dino evidence seeds shared 2 cores with other work): "
           "compare them within one sweep; the CSV's `machine`, `origin` and `stacked` columns say which.")

present = {d: set(g.variant) for d, g in same.groupby("dataset")} if len(same) else {}
judged = [c for c in common.settings_comparisons(common.verdict(), sel.settings)
          if c.metric in JUDGED_PAPER]
marks = winners(judged, present) if len(same) else {}
at_paper = is_reference({k: getattr(sel.settings, k) for k in common.SETTINGS})
tables = marked_tables({v: table(same, v) for v in VARIANTS}, marks, paper=at_paper)
if not at_paper:
    st.caption("The paper's values are not shown beside runs of other settings: they would compare unlike with unlike.")
for variant in VARIANTS:
    st.subheader(TITLES[variant])
    if tables[variant].empty:
        st.caption("No runs of this variant on the paper's datasets with these settings.")
    else:
        wide, narrow = common.wide_or_narrow(variant)
        with wide:
            st.dataframe(tables[variant], column_config=column_config(), key=f"table_{variant}")
        with narrow:
            st.html(compact_html(tables[variant]))
            st.caption("Runs (seeds), KL and eval loss only, at this width: widen the window for every column.")

st.download_button("Download metrics CSV (one row per run; units in the column names)", for_csv(frame).to_csv(index=False),
                   file_name="dualscale-runs.csv", mime="text/csv", icon=":material/download:")
with st.expander(f"All {common.count(len(frame), 'run')}"):
    st.dataframe(frame, hide_index=True)
