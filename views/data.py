"""Your data: upload a CSV or draw points, see the cloud as it will be trained, and train the three
variants on it (queued on the dashboard's runner). The new dataset then appears in the sidebar of
every page, with seeds and settle like any other (dualscale.userdata)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dualscale import VARIANTS, TrainConfig, userdata
from dualscale.estimates import estimate_seconds
from views import common

GRID = 61  # the drawing pad's candidate points per side


def pad() -> go.Figure:
    """A square of faint candidate points: box or lasso over them to add them to your cloud."""
    xs = np.linspace(-4, 4, GRID)
    gx, gy = np.meshgrid(xs, xs)
    drawn = np.array(st.session_state.get("data_drawn", np.zeros((0, 2))))
    fig = go.Figure(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", marker={"size": 5, "color": "rgba(46,134,222,0.10)"},
                               hoverinfo="skip", name="pad"))
    if len(drawn):
        fig.add_trace(go.Scatter(x=drawn[:, 0], y=drawn[:, 1], mode="markers", marker={"size": 6, "color": "#16a085"},
                                 hoverinfo="skip", name="your points"))
    fig.update_layout(height=420, dragmode="select", showlegend=False, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"range": [-4.2, 4.2], "constrain": "domain"},
                      yaxis={"range": [-4.2, 4.2], "scaleanchor": "x", "constrain": "domain"})
    return fig


def drawn_points() -> np.ndarray | None:
    """Draw: select regions of the pad (lasso or box); each selection adds the pad's points inside it."""
    event = st.plotly_chart(pad(), on_select="rerun", selection_mode=("lasso", "box"), key="data_pad")
    picked = [(p["x"], p["y"]) for p in (event.selection.points if event and event.selection else [])
              if p.get("curve_number", 0) == 0]
    if picked:
        old = [tuple(p) for p in st.session_state.get("data_drawn", [])]
        st.session_state["data_drawn"] = sorted(set(old) | set(picked))
        st.rerun()
    drawn = st.session_state.get("data_drawn", [])
    left, right = st.columns([3, 1])
    left.caption(f"{len(drawn)} points drawn. Drag a box over the pad to add its points, or pick the lasso in the "
                 "pad's toolbar (top right) and draw around them.")
    if right.button("Clear the drawing", key="data_clear", disabled=not drawn):
        st.session_state["data_drawn"] = []
        st.rerun()
    return np.array(drawn, dtype=np.float64) if drawn else None


def preview(points: np.ndarray) -> go.Figure:
    """The cloud as it will be trained: 3,000 jittered draws from the scaled points."""
    scaled = userdata.scaled(points)
    rng = np.random.default_rng(42)
    sample = scaled[rng.integers(0, len(scaled), 3000)] + userdata.JITTER * rng.normal(size=(3000, 2))
    fig = go.Figure(go.Scattergl(x=sample[:, 0], y=sample[:, 1], mode="markers", marker={"size": 3, "color": "#2e86de"}))
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis={"constrain": "domain"},
                      yaxis={"scaleanchor": "x", "constrain": "domain"})
    return fig


def queue(points: np.ndarray, label: str, settings: TrainConfig) -> None:
    """Queue the three variants (the sidebar's settings and seed) on the points. Everything that can
    be checked is checked first (the points, the three configs and their memory, the store
    writable); the points are stored only then, so a dataset that is listed can be trained."""
    st.session_state.pop("data_confirm", None)
    st.session_state.pop("data_refused", None)
    try:
        points = userdata.check(np.asarray(points, dtype=np.float64))
        name = userdata.name_of(points, label)
        configs = [TrainConfig(**{**settings.to_dict(), "dataset": name, "variant": v}).validate().check_resources()
                   for v in VARIANTS]
        store = common.store()
        store.check_writable()
        name = store.save_data(points, label)
    except OSError as e:  # the data folder cannot be made or written
        st.session_state["data_refused"] = (f"Not queued: the store cannot keep the points ({e.strerror or e}"
                                            + (f": {e.filename}" if e.filename else "") + ")")
        return
    except ValueError as e:  # StoreError is one
        st.session_state["data_refused"] = f"Not queued: {(str(e).splitlines() or [repr(e)])[0]}"
        return
    st.session_state["data_queued"] = (name, [common.registry().submit(c) for c in configs])


sel = common.selection("Dataset and variant (this page makes a dataset; the three variants train)")
st.title("Your data")
st.markdown("Upload a point cloud (a CSV of two numeric columns, x and y, header optional) or draw one, see it as it "
            f"will be trained, then train the three variants on it. The points are scaled into the paper's range "
            f"(centred, the larger half-range {userdata.SPAN:g}) and the training set is drawn from them with a small "
            f"jitter (sd {userdata.JITTER:g}), as the dino recipe does with its 142 points. The dataset is named by a "
            "label and the hash of its points, so changing one point makes a new dataset.")

source = st.radio("Points from", ["a CSV file", "drawing"], horizontal=True, key="data_source")
points, label, error = None, "drawn", None
if source == "a CSV file":
    upload = st.file_uploader(f"CSV, at most {userdata.MAX_BYTES // 2**20} MB", type=["csv", "txt"], key="data_file")
    if upload is not None:
        label = upload.name
        try:
            points = userdata.parse(upload.getvalue())
        except ValueError as e:
            error = f"{upload.name}: {e}"
else:
    drawn = drawn_points()
    if drawn is not None:
        try:
            points = userdata.check(drawn)
        except ValueError as e:
            error = f"The drawing: {e}"
    else:
        st.info("The drawing has no points yet.")
if error:
    st.error(common.literal(error))  # one line, shown as it is (the file's name and text are a stranger's); nothing is stored
if refused := st.session_state.pop("data_refused", None):  # said once, after the click
    st.error(common.literal(refused))

if points is not None:
    label = st.text_input("Label", value=userdata.label_of(label), key="data_label", max_chars=20)
    name = userdata.name_of(points, label)
    st.subheader(f"{name}: {len(points):,} points, as it will be trained")
    st.plotly_chart(preview(points), key="data_preview")
    if sel.config is None:
        st.caption("Fix the sidebar's settings first.")
    elif not st.session_state.get("data_confirm"):
        st.button("Train the three variants", type="primary", key="data_train",
                  on_click=lambda: st.session_state.update(data_confirm=True))
    else:
        configs = [TrainConfig(**{**sel.settings.to_dict(), "dataset": name, "variant": v}) for v in VARIANTS]
        seconds, basis = estimate_seconds(common.all_runs(), configs, common.registry().jobs or 1)
        st.warning(f"This queues **3 runs** ({', '.join(VARIANTS)}, seed {sel.settings.seed}, "
                   f"{common.settings_label(sel.settings)}): about **{seconds / 60:.0f} min** "
                   f"({common.registry().jobs or 1} at a time; estimated from {basis}).", icon=":material/schedule:")
        left, right = st.columns(2)
        left.button("Confirm: queue 3 runs", type="primary", key="data_go", on_click=queue,
                    args=(points, label, sel.settings))
        right.button("Back", key="data_back", on_click=lambda: st.session_state.pop("data_confirm", None))

def progress(name: str, ids: list[str]) -> None:
    """The queued runs, polled: the runner starts the next when one ends (it moves on when a page asks)."""
    registry = common.registry()
    registry.pump()
    states = [registry.status(rid).state for rid in ids]
    done, waiting = states.count("done"), states.count("queued")
    stopped = sum(s in ("failed", "cancelled") for s in states)
    st.progress(done / len(ids), text=f"{name}: {done} of {len(ids)} runs done, {len(ids) - done - waiting - stopped} "
                f"training, {waiting} waiting" + (f", {stopped} failed or cancelled (see Train)" if stopped else ""))


if queued := st.session_state.get("data_queued"):
    name, ids = queued
    st.success(f"Queued {len(ids)} runs on **{name}**: watch them here or on Train. The dataset is in the sidebar now, "
               "on every page; add seeds or settle it on Verdict like any other.")
    st.fragment(run_every=2.0)(progress)(name, ids)
