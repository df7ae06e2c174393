"""Figures and tables for the dashboard: plain data in, Plotly figures / pandas frames out.

No streamlit here, so every builder can be tested (and reused in a notebook) without a server.
Point clouds go in as float32 and background data is subsampled: a figure is serialised to
the browser on every rerun, and 100,000 points would make that slow.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import METRICS
from .paper import PAPER_METRICS

if TYPE_CHECKING:  # pandas is imported by the table builders only: the Train page's first visit skips it (0.25 s)
    import pandas as pd

VARIANT_COLORS = {"baseline": "#2e86de", "fixed": "#e67e22", "adaptive": "#16a085"}  # none grey: grey is the data
DATASET_COLORS = ("#2e86de", "#e74c3c", "#27ae60", "#8e44ad", "#f39c12", "#16a085", "#d35400",
                  "#2c3e50", "#c0392b", "#7f8c8d", "#1abc9c", "#9b59b6", "#34495e", "#e84393",
                  "#00b894", "#6c5ce7")
REAL_COLOR = "rgba(150,150,150,0.25)"          # real data behind the reverse process
REAL_ON_TOP = "rgba(30,30,30,0.45)"             # real data drawn over 10k samples, so it stays visible
MODEBAR = {"orientation": "v"}                  # the toolbar down the right edge, off the panel titles
# The other figures keep the toolbar at the top right (26 px high) and leave it a band of its own there,
# above every title and legend: on a phone it would otherwise sit on them.
MODEBAR_BAND = 32
# A horizontal legend under a plot whose x axis has a title: below the tick labels and the title.
LEGEND_BELOW_TITLED_X = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"}


def thin(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most n rows of points, a fixed random subset (same picture on every rerun)."""
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


def xy(points: np.ndarray) -> dict:
    # float32: Plotly ships numpy arrays as base64 binary, so this halves what travels.
    pts = np.asarray(points, dtype=np.float32)  # (N, 2)
    return {"x": pts[:, 0], "y": pts[:, 1]}


def _square_axes(fig: go.Figure, n: int, lim: float) -> None:
    """Same fixed range on every panel, y scaled like x: a circle must look like a circle.

    constrain="domain": the panel's plot area is made square, the range stays [-lim, lim]. With
    the default ("range") Plotly widens the range instead and keeps the widened one in the
    figure's layout: a figure first drawn at another size (Samples' hidden row or stacked copy,
    drawn at Plotly's default 700 px until the window crosses 640 px) then widens the other
    axis as well and shows the points small in the middle of a mostly empty panel.
    """
    for i in range(1, n + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"xaxis{suffix}"].update(range=[-lim, lim], zeroline=False, constrain="domain")
        fig.layout[f"yaxis{suffix}"].update(range=[-lim, lim], zeroline=False, constrain="domain",
                                            scaleanchor=f"x{suffix}", scaleratio=1)


def _limit(*clouds) -> float:
    extent = max((float(np.abs(c).max()) for c in clouds if c is not None and len(c)), default=4.0)
    return round(min(max(extent, 1.0), 8.0) * 1.08, 2)  # clip: a diverged model must not zoom out to 1e6


def _empty_note(fig: go.Figure, col: int, text: str, row: int = 1) -> None:
    fig.add_annotation(text=text, showarrow=False, row=row, col=col, x=0, y=0,
                       font={"color": "#999", "size": 13})


def sample_panels(real: np.ndarray, panels: dict[str, np.ndarray | None],
                  n_real: int = 2000, stacked: bool = False, n_samples: int | None = None,
                  notes: dict[str, str] | None = None) -> go.Figure:
    """Generated points over the real data, one panel per entry; zoom in one, zoom all.
    stacked: the panels one above the other (a phone's width), each at most n_samples points.
    notes: what an empty panel (None) says instead of "no run yet".

    Side by side: WebGL (Scattergl), 10,000 points per panel. Stacked: SVG (Scatter). In Chromium
    without a GPU (headless, or a blocklisted GPU: software WebGL) the stacked figure's one WebGL
    canvas, 1,080 px high and taller than a phone's screen, was shown only in part once scrolled
    to inside Streamlit's scrolling main area: the lowest (adaptive) panel drew its axes (SVG) but
    no points, though the canvas held them (measured at 390 x 844; the same figure on a plain
    page drew). SVG points are drawn like the axes (the Samples page asks for 3 x (1,500 + 500)).
    """
    names = list(panels)
    scatter = go.Scatter if stacked else go.Scattergl
    rows, cols = (len(names), 1) if stacked else (1, len(names))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.03, vertical_spacing=0.06)
    background = thin(real, n_real)
    for i, name in enumerate(names, start=1):
        row, col = (i, 1) if stacked else (1, i)
        pts = panels[name]
        if pts is None:
            _empty_note(fig, col, (notes or {}).get(name, "no run yet"), row)
        else:
            color = VARIANT_COLORS.get(name.split()[0], "#2e86de")
            shown = thin(pts, n_samples) if n_samples else pts
            fig.add_trace(scatter(**xy(shown), mode="markers", name=f"{name} samples",
                                  marker={"size": 2.5, "color": color, "opacity": 0.5}),
                          row=row, col=col)
        fig.add_trace(scatter(**xy(background), mode="markers", name="real data",  # on top
                              marker={"size": 2, "color": REAL_ON_TOP},
                              showlegend=i == 1, legendgroup="real", hoverinfo="skip"),
                      row=row, col=col)
    _square_axes(fig, len(names), _limit(real, *[p for p in panels.values() if p is not None]))
    fig.update_layout(height=360 * len(names) if stacked else 420, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.08 / (len(names) if stacked else 1)}, dragmode="zoom",
                      modebar=MODEBAR)
    return fig


def _frame_index(ts: np.ndarray, t: int) -> int:
    return int(np.argmin(np.abs(np.asarray(ts) - t)))


def trajectory_animation(real: np.ndarray, trajectories: dict[str, tuple | None],
                         n_real: int = 800, max_frames: int = 35, n_points: int = 500,
                         notes: dict[str, str] | None = None, n_paths: int = 20) -> go.Figure:
    """The reverse process, noise (largest t) to data (t = 0), every panel in step.

    A Plotly slider and Play button drive it in the browser: scrubbing costs no server rerun.
    Frames and points are thinned (35 frames, 500 points per panel): the whole animation
    travels to the browser at once and must stay small. n_paths of the points (the first ones:
    a random handful, the start being N(0, I) draws) also draw their path from x_T up to the
    frame shown, one line through the frames so far (about 140 kB per panel at 20 paths).
    """
    names = list(trajectories)
    given = [tr for tr in trajectories.values() if tr is not None]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.03)
    if not given:
        _empty_note(fig, 1, "no trajectory stored")
        return fig
    ts = np.asarray(given[0][0])
    trajectories = {k: (tr[0], tr[1][:, :n_points]) if tr is not None else None
                    for k, tr in trajectories.items()}
    keep = np.unique(np.linspace(0, len(ts) - 1, min(max_frames, len(ts))).round().astype(int))
    frame_ts = [int(ts[i]) for i in keep]  # noise first: the order the sampler visits them
    moving = _add_trajectory_traces(fig, names, trajectories, thin(real, n_real), frame_ts, notes or {}, n_paths)
    fig.frames = [go.Frame(name=str(t), traces=moving,
                           data=_trajectory_step(names, trajectories, t, frame_ts, n_paths)) for t in frame_ts]
    _square_axes(fig, len(names), _limit(real, *[tr[1][0] for tr in given]))
    _add_player(fig, frame_ts)
    fig.update_layout(height=470, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False)
    return fig


def _add_trajectory_traces(fig, names, trajectories, background, frame_ts, notes, n_paths) -> list[int]:
    """Static real-data traces plus, per panel, the moving traces (the paths' lines, then the
    points over them); returns the moving traces' indices, in the order _trajectory_step gives them."""
    moving = []
    first = _trajectory_step(names, trajectories, frame_ts[0], frame_ts, n_paths)
    per_panel = len(first) // len(names)
    for col, name in enumerate(names, start=1):
        fig.add_trace(go.Scatter(**xy(background), mode="markers", hoverinfo="skip",
                                 marker={"size": 3, "color": REAL_COLOR}), row=1, col=col)
        for trace in first[(col - 1) * per_panel:col * per_panel]:
            fig.add_trace(trace, row=1, col=col)
            moving.append(len(fig.data) - 1)
        if trajectories[name] is None:
            _empty_note(fig, col, notes.get(name, "no run yet"))
    return moving


def _trajectory_step(names, trajectories, t: int, frame_ts: list[int], n_paths: int) -> list[go.Scatter]:
    """Per panel at timestep t: the first n_paths points' paths through the frames from x_T up to t
    (one line trace, the paths apart by a gap), then the moving points (empty traces where a panel
    has no run)."""
    traces = []
    upto = frame_ts[:frame_ts.index(t) + 1]  # the frames shown so far, noise first
    for name in names:
        color = VARIANT_COLORS.get(name.split()[0], "#2e86de")
        tr = trajectories[name]
        pts = tr[1][_frame_index(tr[0], t)] if tr is not None else np.zeros((0, 2))
        traces.append(go.Scatter(**xy(_paths(tr, upto, n_paths)), mode="lines", name=f"{name} paths",
                                 hoverinfo="skip", connectgaps=False,
                                 line={"color": _darker(color), "width": 1}, opacity=0.7))
        traces.append(go.Scatter(**xy(pts), mode="markers", name=name,
                                 marker={"size": 4, "color": color, "opacity": 0.7}))
    return traces


def _paths(trajectory, upto: list[int], n_paths: int) -> np.ndarray:
    """The first n_paths points at each frame of `upto`, as one polyline per point with a NaN row
    after each (Plotly breaks a line at a gap): (n_paths * (len(upto) + 1), 2); (0, 2) without a run."""
    if trajectory is None or n_paths <= 0:
        return np.zeros((0, 2), np.float32)
    ts, points = trajectory
    k = min(n_paths, points.shape[1])
    way = np.stack([points[_frame_index(ts, t), :k] for t in upto], 1)  # (k, frames so far, 2)
    gap = np.full((k, 1, 2), np.nan, np.float32)
    return np.concatenate([way.astype(np.float32), gap], 1).reshape(-1, 2)


def _darker(hex_color: str, factor: float = 0.6) -> str:
    """The variant's colour, darkened: a path stays visible over that variant's own points."""
    r, g, b = (round(int(hex_color[i:i + 2], 16) * factor) for i in (1, 3, 5))
    return f"rgb({r},{g},{b})"


def step_label(t: int) -> str:
    """A stored frame's name in the timesteps of alpha(t) and training (0..T-1): frame T is the
    noise the step at t = T-1 starts from; frame t >= 1 is the input of step t-1; frame 0 is x0."""
    return "x0 (data)" if t == 0 else f"t = {t - 1}"


def _add_player(fig: go.Figure, frame_ts: list[int]) -> None:
    """Slider over the frames (labelled by t) and Play / Pause buttons."""
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": False},
             "transition": {"duration": 0}}
    steps = [{"method": "animate", "label": step_label(t), "args": [[str(t)], still]} for t in frame_ts]
    play = {"frame": {"duration": 150, "redraw": False}, "fromcurrent": True,
            "transition": {"duration": 0}, "mode": "immediate"}
    fig.update_layout(
        sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "denoiser input at "},
                  "pad": {"t": 30}, "x": 0.0, "len": 1.0}],
        modebar=MODEBAR,
        # above the panels, so that no width can put a button over the slider
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0.0, "y": 1.02, "xanchor": "left",
                      "yanchor": "bottom", "pad": {"b": 22},
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                  {"label": "❚❚ Pause", "method": "animate",
                                   "args": [[None], still]}]}])


def alpha_curves(curves: list[dict], per_seed: bool = False) -> go.Figure:
    """alpha(t) per dataset, with the fixed model's 0.5 as a reference line: the mean over seeds with
    a band of ± one sd (per_seed: every seed's own curve instead).

    Each curve: {"dataset", "label", "alpha": array (T,) indexed by t}.
    """
    fig = go.Figure()
    datasets = sorted({c["dataset"] for c in curves})
    colors = {d: DATASET_COLORS[i % len(DATASET_COLORS)] for i, d in enumerate(datasets)}
    for d in datasets:
        mine = [c for c in curves if c["dataset"] == d]
        name = d if len(mine) == 1 else f"{d} ({len(mine)} seeds)"
        if per_seed or len(mine) == 1:
            for i, c in enumerate(mine):
                alpha = np.asarray(c["alpha"], dtype=float)
                fig.add_trace(go.Scatter(
                    x=np.arange(len(alpha)), y=np.round(alpha, 4), mode="lines", name=name, legendgroup=d,
                    showlegend=i == 0, line={"color": colors[d], "width": 1.5 if len(mine) > 1 else 2},
                    hovertemplate=f"{c['label']}<br>t=%{{x}}<br>alpha=%{{y:.4f}}<extra></extra>"))
            continue
        stack = np.stack([np.asarray(c["alpha"], dtype=float) for c in mine])  # (seeds, T)
        mean, sd, t = stack.mean(0), stack.std(0, ddof=1), np.arange(stack.shape[1])
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.round(np.concatenate([mean + sd, (mean - sd)[::-1]]), 4),
                                 fill="toself", fillcolor=_rgba(colors[d], 0.18), line={"width": 0}, legendgroup=d,
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=t, y=np.round(mean, 4), mode="lines", name=name, legendgroup=d, line={"color": colors[d], "width": 2.5},
            customdata=np.round(sd, 4),
            hovertemplate=f"{d}: mean of {len(mine)} seeds<br>t=%{{x}}<br>alpha=%{{y:.4f}} ± %{{customdata:.4f}} (sd)"
                          "<extra></extra>"))
    fig.add_hline(y=0.5, line_dash="dash", line_color="#e67e22",
                  annotation_text="fixed: alpha = 0.5", annotation_position="top left")
    fig.update_layout(height=460, xaxis_title="timestep t (0 = data, T-1 = noise)",
                      yaxis_title="alpha(t): weight of the global branch",
                      hovermode="closest", margin={"l": 10, "r": 10, "t": MODEBAR_BAND, "b": 10},
                      legend=LEGEND_BELOW_TITLED_X)  # beside the plot it took 40% of a phone's width
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def smooth(values: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Block means: at most `points` points, so a 10,000-step curve stays light and readable."""
    values = np.asarray(values, dtype=float)
    if len(values) <= points:
        return np.arange(1, len(values) + 1), values
    edges = np.linspace(0, len(values), points + 1).astype(int)
    means = np.array([values[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    return edges[1:], means


def loss_curves(histories: dict[str, np.ndarray | None]) -> go.Figure:
    """Training loss of each variant (block-averaged), log scale."""
    fig = go.Figure()
    dashes = {"baseline": "solid", "fixed": "dash", "adaptive": "dot"}  # same seed: curves overlap
    for name, loss in histories.items():
        if loss is None or len(loss) == 0:
            continue
        x, y = smooth(loss, points=150)
        fig.add_trace(go.Scatter(x=x, y=np.round(y, 5), mode="lines", name=name,
                                 line={"color": VARIANT_COLORS.get(name.split()[0]), "width": 2.5,
                                       "dash": dashes.get(name.split()[0], "solid")},
                                 hovertemplate=f"{name}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"))
    fig.update_layout(height=400, xaxis_title="step", yaxis_title="training loss (MSE, block mean)",
                      yaxis_type="log", hovermode="x unified",
                      margin={"l": 10, "r": 10, "t": MODEBAR_BAND, "b": 10}, legend=LEGEND_BELOW_TITLED_X)
    return fig


def live_loss(steps: list[int], losses: list[float]) -> go.Figure:
    """The loss of a run in progress, as reported so far."""
    fig = go.Figure(go.Scatter(x=steps, y=losses, mode="lines", line={"color": "#2e86de"}))
    fig.update_layout(height=300, xaxis_title="step", yaxis_title="loss", yaxis_type="log",
                      margin={"l": 10, "r": 10, "t": 20, "b": 10})
    return fig


def alpha_preview(alpha: list[float]) -> go.Figure:
    """The alpha(t) the adaptive model would use right now."""
    fig = go.Figure(go.Scatter(x=list(range(len(alpha))), y=alpha, mode="lines",
                               line={"color": VARIANT_COLORS["adaptive"]}))
    fig.add_hline(y=0.5, line_dash="dash", line_color="#e67e22")
    fig.update_layout(height=300, xaxis_title="timestep t", yaxis_title="alpha(t)",
                      yaxis_range=[0, 1], margin={"l": 10, "r": 10, "t": 20, "b": 10})
    return fig


# ---------------------------------------------------------------------------------- tables

# The paper's four metrics, judged ones (with a practical margin) first, the times after.
PAGE_ORDER = tuple(sorted(PAPER_METRICS, key=lambda m: (METRICS[m].margin is None, m != "kl_divergence")))
JUDGED_PAPER = tuple(m for m in PAGE_ORDER if METRICS[m].margin is not None)  # KL and eval loss: the ★ and compact columns


def marked_tables(tables: dict[str, pd.DataFrame], winners: dict | None = None,
                  order=PAGE_ORDER, paper: bool = True) -> dict[str, pd.DataFrame]:
    """paper.table()s made readable: per metric "mean ± 95% CI" (★ where stats.winners() names this
    variant: better than each other variant in the verdict) and "paper (ours − paper)". Column
    titles are the registry's short labels (fits 1440 px).

    `tables`: variant -> paper.table(frame, variant); `winners`: (dataset, metric) -> variant;
    paper: whether the runs are at the paper's settings (else its values would compare unlike with
    unlike, a 400-step run with the paper's 10,000 steps: the paper's columns are left out).
    """
    import pandas as pd

    specs = [METRICS[name] for name in order]
    winners = winners or {}
    out = {}
    for variant, tab in tables.items():
        rows = []
        for _, r in tab.iterrows():
            row = {"dataset": r["dataset"], "runs": int(r["runs"])}
            for m in specs:
                star = winners.get((r["dataset"], m.name)) == variant
                row[m.short] = _cell(m, r[m.label], r[f"{m.label} ci"], star)
                if paper:
                    row[f"{m.short} paper (Δ)"] = (f"{m.format(r[f'{m.label} paper'])} "
                                                   f"({m.format(r[f'{m.label} diff'], signed=True)})")
            rows.append(row)
        out[variant] = pd.DataFrame(rows, columns=_display_columns(specs, paper)).set_index("dataset")
    return out


def compact_html(table: pd.DataFrame, metrics=JUDGED_PAPER) -> str:
    """A marked table cut to the number of runs (seeds) and the judged metrics (ours ± CI, then the
    paper's and the difference) as a plain HTML table whose cells wrap: what the Results page shows
    at phone width. The runs stay: 47 seeds against 68 must be as visible there as on a wide screen."""
    import html

    cols = [c for m in metrics for c in (METRICS[m].short, f"{METRICS[m].short} paper (Δ)") if c in table.columns]
    cols = (["runs"] if "runs" in table.columns else []) + cols
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["dataset", *cols])
    body = "".join("<tr><td>" + html.escape(str(d)) + "</td>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols)
                   + "</tr>" for d, r in table.iterrows())
    return f'<table class="compact-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _display_columns(specs, paper: bool = True) -> list[str]:
    names = ["dataset", "runs"]
    for m in specs:
        names += [m.short, f"{m.short} paper (Δ)"] if paper else [m.short]
    return names


def _cell(metric, mean: float, ci: float, best: bool) -> str:
    text = metric.format(mean) + ("" if math.isnan(ci) else " ± " + metric.format(ci))
    return text + (" ★" if best else "")


# ---------------------------------------------------------------------------------- verdict

# ---------------------------------------------------------------------------------- schedules

def schedule_curves(abars: dict[str, np.ndarray], stacked: bool = False) -> go.Figure:
    """abar(t) and SNR(t) = abar / (1 - abar) (log scale) of each schedule; the legend says how much
    signal, sqrt(abar_T), each leaves at the last step. Side by side, or one above the other
    (`stacked`, for a phone: side by side at 390 px the two titles overprint)."""
    titles = ["abar(t): the signal's share of x_t's variance", "SNR(t) = abar / (1 − abar), log scale"]
    fig = (make_subplots(rows=2, cols=1, vertical_spacing=0.16, subplot_titles=titles) if stacked else
           make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=titles))
    second = dict(row=2, col=1) if stacked else dict(row=1, col=2)
    for i, (label, abar) in enumerate(abars.items()):
        t = np.arange(len(abar))
        color = SCHEDULE_COLORS[i % len(SCHEDULE_COLORS)]
        name = f"{label} (sqrt(abar_T) = {math.sqrt(max(abar[-1], 0)):.4f})"
        fig.add_trace(go.Scatter(x=t, y=abar, mode="lines", name=name, legendgroup=label, line=dict(color=color),
                                 hovertemplate=f"{label}<br>t %{{x}}<br>abar %{{y:.4g}}<extra></extra>"), row=1, col=1)
        with np.errstate(divide="ignore"):
            snr = abar / (1 - abar)
        snr = np.where(snr > 0, snr, np.nan)  # SNR 0 (zero terminal SNR) has no log: the curve ends there
        fig.add_trace(go.Scatter(x=t, y=snr, mode="lines", name=name, legendgroup=label, showlegend=False,
                                 line=dict(color=color),
                                 hovertemplate=f"{label}<br>t %{{x}}<br>SNR %{{y:.4g}}<extra></extra>"), **second)
    fig.update_yaxes(type="log", **second)
    fig.update_xaxes(title_text="t", **second)  # stacked: only the lower one, the upper's would touch its title
    if stacked:
        fig.update_annotations(font_size=12)
    else:
        fig.update_xaxes(title_text="t", row=1, col=1)
    fig.update_layout(height=660 if stacked else 400, margin=dict(l=10, r=10, t=MODEBAR_BAND + 22, b=10),
                      legend=dict(orientation="h", y=-0.14 if stacked else -0.25, yanchor="top", x=0),
                      hovermode="x unified")
    return fig


SCHEDULE_COLORS = ("#2c3e50", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#2980b9")


def start_kl(rows: list[dict], floor_value: float | None = None) -> go.Figure:
    """Per schedule: the KL of samples started from N(0, I) and from the true q(x_T) (the oracle
    start), mean over the seeds that have both (paired), each seed on hover.
    rows: {"schedule", "seed", "kl", "oracle"}."""
    fig = go.Figure()
    rows = [r for r in rows if r.get("oracle") is not None]
    counts = {s: sum(r["schedule"] == s for r in rows) for s in dict.fromkeys(r["schedule"] for r in rows)}
    label = {s: f"{s}<br>({n} seed{'s' if n > 1 else ''})" for s, n in counts.items()}  # two short lines: no tilt
    rows = [{**r, "schedule": label[r["schedule"]]} for r in rows]
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    for key, name, color in (("kl", "from N(0, I) (how it samples)", "#2c3e50"),
                             ("oracle", "from q(x_T) (oracle start)", "#e67e22")):
        means, hover = [], []
        for s in schedules:
            mine = [r for r in rows if r["schedule"] == s and r.get(key) is not None]
            means.append(float(np.mean([r[key] for r in mine])) if mine else None)
            hover.append("<br>".join(f"seed {r['seed']}: {r[key]:.3f}" for r in mine) or "not measured")
        fig.add_trace(go.Bar(x=schedules, y=means, name=name, marker_color=color, customdata=hover,
                             hovertemplate="%{x}<br>mean %{y:.3f} bits<br>%{customdata}<extra>" + name + "</extra>"))
    if floor_value is not None:
        fig.add_hline(y=floor_value, line=dict(color="#7f8c8d", dash="dot"),
                      annotation_text=f"estimator floor {floor_value:.3f}", annotation_position="top left")
    fig.update_layout(barmode="group", height=370, yaxis_title="KL(data ‖ samples), bits",
                      margin=dict(l=10, r=10, t=MODEBAR_BAND + 8, b=10),
                      legend=dict(orientation="h", y=-0.2, yanchor="top", x=0))
    return fig
