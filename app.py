"""dualscale dashboard: `streamlit run app.py`.

The entry point runs on every page: page config, the shared sidebar (whose widgets therefore
keep their values across pages), then st.navigation runs the chosen page from views/.

The page files live in views/, not pages/: Streamlit treats a folder named pages/ next to the
entry point as a legacy multipage app, and then the first request after a server start (and
every AppTest rerun) runs a page file on its own, without this sidebar (measured, 1.67).
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dualscale import DATASETS, PAPER_DATASETS, VARIANTS, TrainConfig
from dualscale.config import changed_settings, fields, parse_setting, training_settings
from views import common
from views.common import Selection

# A local icon: a Material-symbol or emoji icon is fetched from the internet on every page load.
st.set_page_config(page_title="dualscale", page_icon=str(Path(__file__).parent / "docs" / "favicon.png"), layout="wide")

DEFAULTS = TrainConfig()
# Generated from TrainConfig's fields (label, help, choices, step, format). No min/max on the
# number inputs on purpose: TrainConfig.validate() is the one judge of what is possible, so the
# message a user sees is the engine's own.
ADVANCED = tuple(f.name for f in training_settings())
FIELDS = {f.name: f for f in fields()}


def reset_advanced() -> None:
    """One click back to the settings that produced the paper's tables."""
    for name in ADVANCED:
        st.session_state[f"cfg_{name}"] = getattr(DEFAULTS, name)


def init_state() -> None:
    # Defaults go into session state (not value=) so a widget never gets two sources of truth.
    if "cfg_dataset" not in st.session_state:  # a new session (a reload, a shared link): the address decides
        values, notices = from_url()
        st.session_state["url_notices"] = notices
        for name, value in values.items():
            st.session_state[f"cfg_{name}"] = value


def from_url() -> tuple[dict, list[str]]:
    """Every setting from the address (?dataset=moons&steps=500, keys = TrainConfig fields), parsed
    strictly; a value that cannot be used is replaced by the default, and a line says so."""
    values, notices = {f: getattr(DEFAULTS, f) for f in FIELDS}, []
    for name, text in st.query_params.to_dict().items():
        if name not in FIELDS:
            continue  # not ours
        try:
            values[name] = parse_setting(name, text)
            if name == "dataset" and values[name] not in common.datasets():
                raise ValueError(f"no dataset {text!r} in this store")
        except ValueError as e:
            values[name] = getattr(DEFAULTS, name)
            notices.append(f"Address: {e}; using the default, {getattr(DEFAULTS, name)}.")
    return values, notices


def to_url(values: dict) -> None:
    """Dataset, variant, seed and every setting that differs from the defaults into the address."""
    keep = {n: v for n, v in values.items() if n in ("dataset", "variant", "seed") or v != getattr(DEFAULTS, n)}
    wanted = {n: str(v) for n, v in keep.items()}
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def setting_widget(f) -> None:
    """The widget of one TrainConfig field: a selectbox for choices, else a number input."""
    m = f.metadata
    if m["choices"] is not None:
        st.selectbox(m["label"], m["choices"], key=f"cfg_{f.name}", help=m["help"])
    else:
        opts = {k: v for k, v in (("step", m["step"]), ("format", m["fmt"])) if v is not None}
        st.number_input(m["label"], key=f"cfg_{f.name}", help=m["help"], **opts)


def advanced_settings() -> None:
    with st.expander("Advanced: training settings"):
        for f in training_settings():
            setting_widget(f)
        st.button("Reset to reference defaults", on_click=reset_advanced,
                  help="The settings that produced the paper's tables")


def validated(values: dict) -> Selection:
    """The engine judges the settings; an impossible one is one line in the sidebar."""
    try:
        config, error = TrainConfig(**values).validate().check_resources(), None
        if config.compute_precision == "tf32":  # a CUDA mode: refused before Start where there is none
            from dualscale.system import arithmetic, resolve_device

            with arithmetic("tf32", resolve_device(os.environ.get("DUALSCALE_DEVICE", "auto"))):
                pass
    except (ValueError, TypeError) as e:
        config, error = None, str(e).splitlines()[0]
        st.error(f"Impossible setting: {error}")
    changed = list(changed_settings(values))
    if changed and not error:
        st.caption("Changed from the reference: " + ", ".join(changed))
        for line in far_from_reference(values):
            st.warning(line, icon=":material/warning:")
    return Selection(values["dataset"], values["variant"], int(values["seed"]), config, error)


FAR = 1000  # a float setting this many times above or below the reference's is said, not silently taken


def far_from_reference(values: dict) -> list[str]:
    """One line per float setting three orders of magnitude or more from the reference's value
    (lr=1e9 from an address is possible, but surely not meant)."""
    out = []
    for name in ADVANCED:
        default, value = getattr(DEFAULTS, name), values.get(name)
        if isinstance(default, float) and default > 0 and isinstance(value, (int, float)) and value > 0 \
                and not default / FAR < value < default * FAR:
            out.append(f"{FIELDS[name].metadata['label']} is {value:g}, {FAR:,}x or more from the reference's "
                       f"{default:g}: a run with it will likely diverge or not move. Reset restores the reference.")
    return out


def dataset_label(d: str) -> str:
    return d if d in PAPER_DATASETS else f"{d} (Datasaurus)" if d in DATASETS else f"{d} (your data)"


def sidebar() -> Selection:
    with st.sidebar:
        st.selectbox(FIELDS["dataset"].metadata["label"], common.datasets(), key="cfg_dataset",
                     help=FIELDS["dataset"].metadata["help"], format_func=dataset_label)
        st.radio(FIELDS["variant"].metadata["label"], VARIANTS, key="cfg_variant", horizontal=True,
                 help=FIELDS["variant"].metadata["help"])
        st.number_input(FIELDS["seed"].metadata["label"], step=1, key="cfg_seed",
                        help=FIELDS["seed"].metadata["help"])
        advanced_settings()
        notices = st.session_state.pop("url_notices", [])  # once, on the first screen
        for notice in notices:  # the address is a stranger's text: shown as written
            st.warning(common.literal(notice), icon=":material/link_off:")
        values = {n: st.session_state[f"cfg_{n}"] for n in ("dataset", "variant", "seed") + ADVANCED}
        to_url(values)
        selection = validated(values)
    for notice in notices:  # and above the page: on a phone the sidebar starts collapsed
        st.warning(common.literal(notice), icon=":material/link_off:")
    for line in common.store().unverified():  # shipped data that does not verify: said on every page
        st.error(line, icon=":material/gpp_bad:")
    return selection


init_state()
selection = st.session_state["selection"] = sidebar()
pages = [
    st.Page("views/verdict.py", title="Verdict", icon=":material/balance:", default=True),
    st.Page("views/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("views/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/samples.py", title="Samples", icon=":material/scatter_plot:"),
    st.Page("views/alpha.py", title="alpha(t)", icon=":material/show_chart:", url_path="alpha"),
    st.Page("views/schedules.py", title="Schedules", icon=":material/timeline:"),
    st.Page("views/inside.py", title="Inside", icon=":material/hub:"),
    st.Page("views/data.py", title="Your data", icon=":material/upload_file:", url_path="data"),
]
st.navigation(pages).run()
