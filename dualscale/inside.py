"""Inside the models: where in t a variant lowers the loss, and what each branch does.

- `per_timestep(runs_a, runs_b)`: the paired difference of the stored `eval_loss_by_t` (a - b)
  over the seeds both have, per timestep: mean and a descriptive 95% t-interval at each t.
- `branch_field(model, schedule, t, lim)`: on a grid over the plane at timestep t, the predicted
  clean point x0_hat of the global branch, the local branch and their mix alpha(t) g + (1 -
  alpha(t)) l (which is the model's output, tested).
- `weights_problem(run)`: None if the run's model loads from its weights, else one line naming the
  run and what is wrong (truncated, missing, a FIFO or folder in place of weights.npz: read through
  the Run's own loading, regular files only, so it never hangs), for the page to say and go on.
The figures are plain Plotly, no Streamlit (the Inside page draws them).
"""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .plots import thin, xy


def per_timestep(runs_a: dict, runs_b: dict) -> dict | None:
    """runs_a, runs_b: seed -> (T,) eval loss per timestep. -> {"seeds", "mean", "low", "high"} of
    a - b at each t over the common seeds (descriptive t-interval per t), or None below 2 seeds."""
    from scipy.special import stdtrit  # the t quantile, without importing scipy.stats

    seeds = sorted(set(runs_a) & set(runs_b))
    if len(seeds) < 2:
        return None
    d = np.stack([np.asarray(runs_a[s], dtype=float) - np.asarray(runs_b[s], dtype=float) for s in seeds])  # (n, T)
    mean, se = d.mean(0), d.std(0, ddof=1) / np.sqrt(len(seeds))
    half = stdtrit(len(seeds) - 1, 0.975) * se
    return {"seeds": seeds, "mean": mean, "low": mean - half, "high": mean + half}


def where_figure(diffs: dict[str, dict], alphas: list[np.ndarray]) -> go.Figure:
    """Top: for each pair ("adaptive − baseline", ...), the paired eval-loss difference per timestep
    with its band; below zero the first variant predicts the noise better there. Bottom: alpha(t)'s
    mean and spread over the adaptive seeds, on the same t axis."""
    colors = {"adaptive − baseline": "#16a085", "adaptive − fixed": "#8e44ad", "fixed − baseline": "#e67e22"}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.08,
                        subplot_titles=["eval loss a − b at each t (paired; band: 95% t-interval)",
                                        "alpha(t), the global branch's weight (mean ± sd)"])  # fit 390 px
    for name, d in diffs.items():
        if d is None:
            continue
        t = np.arange(len(d["mean"]))
        color = colors.get(name, "#2c3e50")
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([d["high"], d["low"][::-1]]),
                                 fill="toself", fillcolor=_fade(color), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=t, y=d["mean"], mode="lines", name=f"{name} ({len(d['seeds'])} seeds)",
                                 line={"color": color, "width": 2}, legendgroup=name,
                                 hovertemplate="t=%{x}: %{y:+.5f}<extra>" + name + "</extra>"), row=1, col=1)
    fig.add_hline(y=0, line={"color": "#2c3e50", "width": 1, "dash": "dot"}, row=1, col=1)
    if alphas:
        a = np.stack(alphas)
        t = np.arange(a.shape[1])
        mean, sd = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([mean + sd, (mean - sd)[::-1]]),
                                 fill="toself", fillcolor=_fade("#16a085"), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False), row=2, col=1)
        fig.add_trace(go.Scatter(x=t, y=mean, mode="lines", name=f"alpha(t), {len(a)} adaptive seeds",
                                 line={"color": "#16a085", "width": 2, "dash": "dash"},
                                 hovertemplate="t=%{x}: alpha %{y:.3f}<extra></extra>"), row=2, col=1)
        fig.add_hline(y=0.5, line={"color": "#e67e22", "width": 1, "dash": "dot"}, row=2, col=1)
    fig.update_xaxes(title_text="timestep t (0 = data, T-1 = noise)", row=2, col=1)
    fig.update_layout(height=580, margin={"l": 10, "r": 10, "t": MODEBAR_BAND + 22, "b": 10}, hovermode="x",
                      legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0})
    fig.update_annotations(font_size=12)
    return fig


def _fade(hex_color: str, alpha: float = 0.2) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# What reading a run's weights can raise when they are damaged: the store's StoreError (a ValueError;
# a hash that does not match, a file that is missing, unreadable or not a regular file), and what
# numpy's and torch's loading raise on a file whose run.json was rewritten to match it.
WEIGHT_ERRORS = (ValueError, OSError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, zlib.error)


def weights_problem(run) -> str | None:
    """None if the run's EMA model loads (Run.load_model: its files checked against run.json, opened
    as regular files only); else the one-line reason, naming the run (`damaged`)."""
    try:
        run.load_model("ema")
    except WEIGHT_ERRORS as e:
        return damaged(run, e)
    return None


def damaged(run, error: BaseException) -> str:
    """One line: which run (id, dataset/variant, seed, shipped or local) and why its weights cannot be
    used, the run's folder left out of the reason (its id says which)."""
    reason = str(error).splitlines()[0] if str(error).strip() else error.__class__.__name__
    reason = reason.replace(f"{run.path}{os.sep}", "").replace(str(run.path), "the run's folder")
    reason = reason.removeprefix(f"run {run.id}: ")
    origin = f"shipped in {run.path.parent.name}/" if run.shipped else "local"
    c = run.config
    return (f"Run {run.id} ({c.dataset}/{c.variant}, seed {c.seed}, {origin}) has damaged weights, so its field "
            f"is not drawn: {reason}")


def branch_field(model, schedule, t: int, lim: float, n: int = 41) -> dict:
    """The denoiser at timestep t on an n x n grid over [-lim, lim]^2, as predicted clean points:
    {"grid": (n*n, 2), "global", "local", "mix" (each (n*n, 2) x0_hat), "alpha": alpha(t)} for a
    dual-scale model; a baseline has only "mix" (its one branch). The mix is the model's output."""
    import torch

    xs = np.linspace(-lim, lim, n)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2).astype(np.float32)
    x = torch.from_numpy(grid)
    with torch.inference_mode():
        parts = model.branch_outputs(x, t)
        out = {"grid": grid, "alpha": None if parts["alpha"] is None else float(parts["alpha"])}
        for name, eps in parts.items():
            if name != "alpha" and eps is not None:
                out[name] = schedule.predict_x0(x, eps.float(), t).numpy()
    return out


# The modebar (Plotly's toolbar, 26 px high at the top right) gets a band of its own above every title
# and legend: on a phone it would otherwise sit on them.
MODEBAR_BAND = 32
FIELD_ARROWS = 21  # arrows per side of a panel (of the field's 41 x 41 grid): a row of three wide panels
PHONE_ARROWS = 15  # a phone's panels, one above the other: fewer, longer arrows
FIELD_BACKGROUND = 1000  # points of the data drawn under the arrows


def _thin_grid(n: int, arrows: int) -> np.ndarray:
    """Which of an n x n grid's points carry an arrow: about `arrows` per side, evenly spread, both edges in."""
    idx = np.unique(np.linspace(0, n - 1, min(arrows, n)).round().astype(int))
    keep = np.zeros((n, n), dtype=bool)
    keep[np.ix_(idx, idx)] = True
    return keep.reshape(-1)


def arrow_scales(field: dict, arrows: int = FIELD_ARROWS) -> dict[str, dict]:
    """Per part ("global", "local", "mix"): how its arrows are drawn. Each panel's arrows are scaled
    on their own so that the longest is 0.9 of the spacing between arrows: at small t, where
    x0_hat - x_t is a hundredth of the plane, they would otherwise be dots. -> {part: {"longest":
    the longest |x0_hat - x_t| shown, "scale": drawn length / true length}}."""
    grid = field["grid"]
    n = int(round(np.sqrt(len(grid))))
    keep = _thin_grid(n, arrows)
    lim = float(np.abs(grid).max())
    spacing = 2 * lim / max(int(round(np.sqrt(keep.sum()))) - 1, 1)
    out = {}
    for p in ("global", "local", "mix"):
        if p not in field:
            continue
        longest = float(np.linalg.norm(field[p][keep] - grid[keep], axis=1).max())
        out[p] = {"longest": longest, "scale": 0.9 * spacing / longest if longest > 0 else 1.0}
    return out


def scale_text(scale: dict) -> str:
    """'longest 0.0132, drawn ×68': what a panel's arrow lengths mean."""
    return f"longest {scale['longest']:.3g}, drawn ×{scale['scale']:.3g}"


def field_figure(field: dict, real: np.ndarray, t: int, stacked: bool = False, arrows: int | None = None) -> go.Figure:
    """Arrows from each grid point x_t toward its predicted clean point at timestep t, one panel per
    part, over the data in grey: about `arrows` per side (default 21 in a row, 15 stacked), their
    lengths scaled per panel (arrow_scales: the longest is 0.9 of the spacing, its true length and
    the factor written under the panel). stacked: the panels one above the other, for a phone."""
    arrows = arrows or (PHONE_ARROWS if stacked else FIELD_ARROWS)
    parts = [p for p in ("global", "local", "mix") if p in field]
    alpha = field["alpha"]
    titles = {"global": f"global branch (weight {alpha:.2f})" if alpha is not None else "global branch",
              "local": f"local branch (weight {1 - alpha:.2f})" if alpha is not None else "local branch",
              "mix": "their mix: the model" if len(parts) > 1 else "the model (one branch)"}
    k = len(parts)
    panel = 330  # a stacked panel's height in px (square at a phone's width)
    gap = 70  # between stacked panels: the tick labels, the scale line, the next title
    top, bottom = MODEBAR_BAND + 24, 44
    height = k * panel + (k - 1) * gap + top + bottom if stacked else 420
    shape = dict(rows=k, cols=1, vertical_spacing=gap / (height - top - bottom) if k > 1 else 0) if stacked else \
        dict(rows=1, cols=k, horizontal_spacing=0.04)
    fig = make_subplots(**shape, subplot_titles=[titles[p] for p in parts], shared_xaxes="all",
                        shared_yaxes="all")  # zoom one panel, zoom all
    grid = field["grid"]
    n = int(round(np.sqrt(len(grid))))
    keep = _thin_grid(n, arrows)
    scales = arrow_scales(field, arrows)
    # The data under the arrows: 1,000 points in SVG. WebGL (3,000 points) gave each figure a canvas,
    # and in Chromium without a GPU (software WebGL) the page's first plot came 0.4 s later (measured).
    background = thin(real, FIELD_BACKGROUND)
    for i, p in enumerate(parts, start=1):
        row, col = (i, 1) if stacked else (1, i)
        fig.add_trace(go.Scatter(**xy(background), mode="markers", marker={"size": 2, "color": "rgba(120,120,120,0.35)"},
                                 hoverinfo="skip", showlegend=False), row=row, col=col)
        start = grid[keep]
        end = start + (field[p][keep] - start) * scales[p]["scale"]
        xs = np.column_stack([start[:, 0], end[:, 0], np.full(len(start), np.nan)]).reshape(-1)
        ys = np.column_stack([start[:, 1], end[:, 1], np.full(len(start), np.nan)]).reshape(-1)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#2e86de", "width": 1.2}, hoverinfo="skip",
                                 showlegend=False), row=row, col=col)
        fig.add_trace(go.Scatter(x=end[:, 0], y=end[:, 1], mode="markers", marker={"size": 3, "color": "#2e86de"},
                                 hoverinfo="skip", showlegend=False), row=row, col=col)
    lim = float(np.abs(grid).max())
    # Square panels: the domain shrinks to fit the range (not the range to fit the domain)
    fig.update_xaxes(range=[-lim, lim], constrain="domain", zeroline=False)
    fig.update_yaxes(range=[-lim, lim], constrain="domain", zeroline=False)
    for i in range(1, k + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", scaleratio=1)
    fig.update_annotations(font_size=13)  # the titles (the scale lines below come after them)
    for i, p in enumerate(parts, start=1):
        suffix = "" if i == 1 else str(i)
        fig.add_annotation(text=scale_text(scales[p]), xref=f"x{suffix} domain", yref=f"y{suffix} domain",
                           x=0.5, y=0, xanchor="center", yanchor="top", yshift=-22, showarrow=False,
                           font={"size": 11, "color": "#666"})
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": top, "b": bottom})
    return fig
