"""Schedules: how much signal each noise schedule leaves at the last step, what the mismatch with
the N(0, I) start costs, and the study of schedules over seeds (dualscale.stats.compare_schedules)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from dualscale import METRICS, TrainConfig
from dualscale.metrics import floor
from dualscale.paper import metrics_frame
from dualscale.forest import forest
from dualscale.plots import schedule_curves, start_kl
from dualscale.schedules import BETA_SCHEDULES
from dualscale.sentences import dataset_sentence
from dualscale import stats
from dualscale.stats import SCHEDULE_FIELDS, compare_schedules, schedule_label
from views import common

SHOWN = {"linear": dict(beta_schedule="linear"), "linear, beta_end 0.05": dict(beta_end=0.05),
         "linear, beta_end 0.1": dict(beta_end=0.1), "cosine": dict(beta_schedule="cosine"),
         "zero_snr, v": dict(beta_schedule="zero_snr", prediction="v")}
JUDGED = [m for m in stats.JUDGED if m != "eval_loss"]  # under v-prediction the eval loss measures another target


def abar(timesteps: int, beta_schedule: str, beta_end: float):
    """abar_t of a schedule, float64: the betas NoiseSchedule is built from, without torch (whose
    import cost this page 1.5 s on a fresh server)."""
    return np.cumprod(1 - BETA_SCHEDULES[beta_schedule](timesteps, beta_end=beta_end))


def others_equal(config: TrainConfig, settings: TrainConfig) -> bool:
    """Same settings but for the schedule (what this page compares)."""
    return all(getattr(config, k) == getattr(settings, k) for k in common.SETTINGS if k not in SCHEDULE_FIELDS)


@st.cache_data(max_entries=16, show_spinner=False)
def study(root: str, key: tuple, settings_json: str):
    settings = TrainConfig.from_json(settings_json)
    runs = [r for r in common.all_runs() if others_equal(r.config, settings)]
    return compare_schedules(metrics_frame(runs), JUDGED) if runs else None


sel = common.selection("Seed")
settings = sel.settings
st.title("Noise schedules")
st.markdown(
    "The paper's schedule (T = 100, linear betas from 1e-4 to 0.02) leaves abar_T = 0.364: x_T still carries "
    "sqrt(abar_T) = 0.60 of the data, yet sampling starts from pure noise N(0, I) (Lin et al. 2024). Here: what "
    "each schedule leaves at T, what the mismatch costs a trained model, and whether a schedule that reaches "
    "pure noise changes the answer to the paper's question.")

st.subheader("Signal left at the last step")
current = schedule_label(settings)
curves = {label: abar(settings.timesteps, over.get("beta_schedule", "linear"), over.get("beta_end", 0.02))
          for label, over in SHOWN.items()}
if current not in curves:
    curves[f"{current} (sidebar)"] = abar(settings.timesteps, settings.beta_schedule, settings.beta_end)
wide, narrow = common.wide_or_narrow("schedule_curves")
with wide:
    st.plotly_chart(schedule_curves(curves), key="schedule_curves")
with narrow:
    st.plotly_chart(schedule_curves(curves, stacked=True), key="schedule_curves_stacked")
st.caption(f"T = {settings.timesteps} (the sidebar's). Click a legend entry to hide a schedule; zoom with the mouse.")

st.subheader(f"What the start mismatch costs on {sel.dataset} ({sel.variant})")
runs = [r for r in common.all_runs() if r.config.dataset == sel.dataset and r.config.variant == sel.variant
        and others_equal(r.config, settings)]
rows = [{"schedule": schedule_label(r.config), "seed": r.config.seed, "kl": r.metrics["kl_divergence"],
         "oracle": r.metrics.get("kl_oracle_start")} for r in runs]
order = list(SHOWN)  # linear first, then the others as listed
rows.sort(key=lambda r: (order.index(r["schedule"]) if r["schedule"] in order else len(order), r["schedule"], r["seed"]))
if rows:
    st.plotly_chart(start_kl(rows, floor(sel.dataset, "kl_divergence")), key="start_kl")
    st.caption(METRICS["kl_oracle_start"].help + " Runs shipped without weights were scored when they were made; "
               "`python -m dualscale rescore` adds it to stored runs that have weights.")
else:
    st.info(f"No stored {sel.dataset}/{sel.variant} runs with these settings yet.")

st.subheader("The study: each schedule against linear, paired by seed")
all_runs = common.all_runs()
key = tuple(sorted((r.id, common.stamp(r)) for r in all_runs))
result = study(common.store_root(), key, settings.to_json())
shown = [c for c in (result.comparisons if result else []) if c.variant == sel.variant]
if not shown:
    st.info("Not enough paired runs of two schedules with these settings yet. Add them with e.g. "
            "`python -m dualscale reproduce --seeds 0-9 --beta-schedule cosine`.")
    st.stop()
pairs = list(dict.fromkeys(f"{c.a} − {c.b}" for c in shown))
choice = st.segmented_control("Comparison", pairs, default=pairs[0], key="schedule_pair") or pairs[0]
a, b = choice.split(" − ")
mine = [c for c in shown if c.a == a and c.b == b]
for d in dict.fromkeys(c.dataset for c in mine):
    st.markdown(dataset_sentence(d, mine, a, b))
st.plotly_chart(forest(mine, JUDGED), key="schedule_forest")
st.caption(f"{sel.variant} runs (the sidebar's variant), the mean over seeds of {a} minus {b}: thick bar, its "
           "confidence sequence (a family per metric over this study's comparisons, Bonferroni), coloured by the "
           "decision; thin bar, the descriptive t-interval; grey band, the practical margin. Eval loss is "
           "not compared: under v-prediction it measures another target. The Verdict page answers the paper's "
           "question for the schedule chosen in the sidebar.")
