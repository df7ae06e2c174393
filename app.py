"""dualscale dashboard: `streamlit run app.py`.

The entry point runs on every page: page config, the shared sidebar (whose widgets therefore
keep their values across pages), then st.navigation runs the chosen page from views/.

The page files live in views/, not pages/: Streamlit treats a folder named pages/ next to the
entry point as a legacy multipage app, and then the first request after a server start (and
every AppTest rerun) runs a page file on its own, without this sidebar (measured, 1.67).
"""
from __future__ import annotations

import streamlit as st

from dualscale import DATASETS, PAPER_DATASETS, VARIANTS, TrainConfig
from views.common import Selection

st.set_page_config(page_title="dualscale", page_icon=":material/blur_on:", layout="wide")

DEFAULTS = TrainConfig()
# (setting, label, number_input options); no min/max on purpose: TrainConfig.validate() is the
# one judge of what is possible, so the message a user sees is the engine's own.
NUMBERS = (
    ("steps", "Training steps", {"step": 100}),
    ("batch_size", "Batch size", {"step": 32}),
    ("lr", "Learning rate (peak)", {"step": 1e-4, "format": "%.2e"}),
    ("weight_decay", "Weight decay", {"step": 0.01, "format": "%.3f"}),
    ("grad_clip", "Gradient clip (norm)", {"step": 0.1, "format": "%.2f"}),
    ("n_points", "Training points", {"step": 1000}),
    ("timesteps", "Diffusion steps T", {"step": 10}),
    ("kl_weight", "KL weight λ", {"step": 0.05, "format": "%.3f"}),
    ("n_samples", "Samples for evaluation", {"step": 1000}),
)
CHOICES = (
    ("beta_schedule", "Noise schedule", ("linear", "quadratic")),
    ("weight_net", "alpha(t) network (adaptive)", ("sigmoid", "softmax")),
)
ADVANCED = tuple(n for n, _, _ in NUMBERS) + tuple(n for n, _, _ in CHOICES)


def reset_advanced() -> None:
    """One click back to the settings that produced the paper's tables."""
    for name in ADVANCED:
        st.session_state[f"cfg_{name}"] = getattr(DEFAULTS, name)


def init_state() -> None:
    # Defaults go into session state (not value=) so a widget never gets two sources of truth.
    for name, value in {**from_url(), **{n: getattr(DEFAULTS, n) for n in ADVANCED}}.items():
        st.session_state.setdefault(f"cfg_{name}", value)


def from_url() -> dict:
    """dataset / variant / seed from the address (?dataset=moons...), so a reload or a shared
    link shows the same selection; anything unusable falls back to the default."""
    q = st.query_params
    out = {"dataset": q.get("dataset", DEFAULTS.dataset), "variant": q.get("variant", DEFAULTS.variant),
           "seed": int(q["seed"]) if q.get("seed", "").isdigit() else DEFAULTS.seed}
    out["dataset"] = out["dataset"] if out["dataset"] in DATASETS else DEFAULTS.dataset
    out["variant"] = out["variant"] if out["variant"] in VARIANTS else DEFAULTS.variant
    return out


def advanced_settings() -> None:
    with st.expander("Advanced: training settings"):
        for name, label, opts in NUMBERS:
            st.number_input(label, key=f"cfg_{name}", **opts)
        for name, label, options in CHOICES:
            st.selectbox(label, options, key=f"cfg_{name}")
        st.button("Reset to reference defaults", on_click=reset_advanced,
                  help="The settings that produced the paper's tables")


def validated(values: dict) -> Selection:
    """The engine judges the settings; an impossible one is one line in the sidebar."""
    try:
        config, error = TrainConfig(**values).validate(), None
    except (ValueError, TypeError) as e:
        config, error = None, str(e).splitlines()[0]
        st.error(f"Impossible setting: {error}")
    changed = [n for n in ADVANCED if values[n] != getattr(DEFAULTS, n)]
    if changed and not error:
        st.caption("Changed from the reference: " + ", ".join(changed))
    return Selection(values["dataset"], values["variant"], int(values["seed"]), config, error)


def sidebar() -> Selection:
    with st.sidebar:
        st.selectbox("Dataset", DATASETS, key="cfg_dataset",
                     format_func=lambda d: d if d in PAPER_DATASETS else f"{d} (Datasaurus)")
        st.radio("Variant", VARIANTS, key="cfg_variant", horizontal=True)
        st.number_input("Seed", step=1, key="cfg_seed")
        advanced_settings()
        return validated({n: st.session_state[f"cfg_{n}"]
                          for n in ("dataset", "variant", "seed") + ADVANCED})

init_state()
selection = st.session_state["selection"] = sidebar()
st.query_params.update(dataset=selection.dataset, variant=selection.variant, seed=str(selection.seed))
pages = [
    st.Page("views/results.py", title="Results", icon=":material/table_chart:", default=True),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/samples.py", title="Samples", icon=":material/scatter_plot:"),
    st.Page("views/alpha.py", title="alpha(t)", icon=":material/show_chart:", url_path="alpha"),
]
st.navigation(pages).run()
