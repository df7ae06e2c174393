"""Figures of the verdict: the forest plot (every comparison's sequence interval against the
margin band, the t-interval beside it) and an interval's path as seeds are added."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import METRICS
from .sequential import confidence_sequence
from .sentences import diff_text, word

DECISION_COLORS = {"better": "#16a085", "better, size unclear": "#76c7b1", "no practical difference": "#7f8c8d",
                   "worse, size unclear": "#e59c93", "worse": "#c0392b", "undecided": "#e67e22"}
T_COLOR = "#34495e"
BAND = "rgba(127,140,141,0.18)"  # the practical margin, +- around zero
# Plotly's toolbar sits at the top right, 26 px high: a band of its own above every title, and the legend
# goes under the panels (at the top, on a phone, the toolbar covered it).
MODEBAR_BAND = 32


def _reach(comparisons) -> float:
    """Half the x range of a panel: every finite interval end and the margin, with room."""
    m = METRICS[comparisons[0].metric]
    ends = [abs(v) for c in comparisons for v in (c.cs_low, c.cs_high, c.ci_low, c.ci_high) if math.isfinite(v)]
    return 1.15 * max(ends + [2 * (m.margin or 0), 1e-9])


def forest(comparisons, metrics: list[str]) -> go.Figure:
    """One panel per metric, stacked (readable on a phone), one row per dataset: the sequence
    interval that decides (thick, coloured by the decision), the fixed-n t-interval (thin, below:
    description only), the ±margin band and the zero line. Hover: n, both intervals, the
    family and every seed's values."""
    metrics = [m for m in metrics if any(c.metric == m for c in comparisons)]
    titles = [f"{METRICS[m].label} ({'lower' if METRICS[m].lower_is_better else 'higher'} is better)" for m in metrics]
    datasets = list(dict.fromkeys(c.dataset for c in comparisons))
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=titles, vertical_spacing=0.5 / max(1, len(metrics)))
    shown = set()
    for row, metric in enumerate(metrics, start=1):
        mine = [c for c in comparisons if c.metric == metric]
        reach, spec = _reach(mine), METRICS[metric]
        if spec.margin:
            fig.add_vrect(x0=-spec.margin, x1=spec.margin, fillcolor=BAND, line_width=0, layer="below", row=row, col=1,
                          exclude_empty_subplots=False)  # drawn before the traces: the panel is still empty
        fig.add_vline(x=0, line=dict(color="#2c3e50", width=1, dash="dot"), row=row, col=1, exclude_empty_subplots=False)
        for c in mine:
            y = datasets.index(c.dataset)
            lo, hi = max(c.cs_low, -reach), min(c.cs_high, reach)
            colour = DECISION_COLORS.get(c.decision, "#2c3e50")
            fig.add_trace(go.Scatter(
                x=[lo, hi], y=[y, y], mode="lines", line=dict(color=colour, width=7), name=c.decision,
                legendgroup=c.decision, showlegend=c.decision not in shown, hovertemplate=_hover(c)), row=row, col=1)
            fig.add_trace(go.Scatter(
                x=[c.mean_diff], y=[y], mode="markers", marker=dict(color="#2c3e50", size=8, symbol="line-ns-open",
                                                                    line=dict(width=2)),
                showlegend=False, hovertemplate=_hover(c)), row=row, col=1)
            fig.add_trace(go.Scatter(
                x=[max(c.ci_low, -reach), min(c.ci_high, reach)], y=[y + 0.28, y + 0.28], mode="lines",
                line=dict(color=T_COLOR, width=2), name="t-interval (descriptive)", legendgroup="t",
                showlegend="t" not in shown, hovertemplate=_hover(c)), row=row, col=1)
            shown |= {c.decision, "t"}
        fig.update_xaxes(range=[-reach, reach], row=row, col=1, zeroline=False, tickformat=f".{spec.digits}f",
                         nticks=5)
        fig.update_yaxes(tickvals=list(range(len(datasets))), ticktext=datasets, range=[len(datasets) - 0.4, -0.6],
                         row=row, col=1)
    height, top, bottom = 130 + len(metrics) * (50 + 34 * len(datasets)), MODEBAR_BAND + 24, 10
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=bottom), hovermode="closest",
                      # under the lowest panel's tick labels (30 px), in the bottom margin it pushes down
                      legend=dict(orientation="h", x=0, xanchor="left", y=-30 / (height - top - bottom), yanchor="top"))
    fig.update_annotations(font_size=13)
    return fig


def _hover(c) -> str:
    spec = METRICS[c.metric]
    f = lambda v: diff_text(c.metric, v)  # noqa: E731
    per_seed = "<br>".join(f"seed {s}: {spec.format(x)} − {spec.format(y)} = {spec.format(x - y, signed=True)}"
                           for s, x, y in list(zip(c.seeds, c.values_a, c.values_b))[:12])
    more = f"<br>… {c.n - 12} more seeds" if c.n > 12 else ""
    return (f"<b>{c.dataset}</b>, {spec.label}: {c.a} − {c.b}<br>mean {f(c.mean_diff)} over n = {c.n} seeds<br>"
            f"sequence interval [{f(c.cs_low)}, {f(c.cs_high)}] (decides; level 0.05/{c.family_size}, "
            f"{c.family})<br>t-interval [{f(c.ci_low)}, {f(c.ci_high)}] (descriptive)<br>"
            f"margin ±{spec.margin:g}: <b>{word(c)}</b><br>{per_seed}{more}<extra></extra>")


def sequence_path(c) -> go.Figure:
    """How the comparison's sequence interval narrowed as seeds were added (in seed order): the
    interval against n, the running mean, the margin band and the zero line."""
    spec = METRICS[c.metric]
    d = np.array(c.values_a) - np.array(c.values_b)
    low, high = confidence_sequence(d, c.level)
    n = np.arange(1, len(d) + 1)
    ok = np.isfinite(low) & np.isfinite(high)
    mean = np.cumsum(d) / n
    fig = go.Figure()
    if spec.margin:
        fig.add_hrect(y0=-spec.margin, y1=spec.margin, fillcolor=BAND, line_width=0)
    fig.add_hline(y=0, line=dict(color="#2c3e50", width=1, dash="dot"))
    fig.add_trace(go.Scatter(x=n[ok], y=high[ok], mode="lines", line=dict(color="#e67e22", width=1), showlegend=False,
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=n[ok], y=low[ok], mode="lines", line=dict(color="#e67e22", width=1), fill="tonexty",
                             fillcolor="rgba(230,126,34,0.25)", name="sequence interval", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=n, y=mean, mode="lines+markers", line=dict(color="#2c3e50"), marker=dict(size=4),
                             name="mean so far", hovertemplate="n = %{x}: mean %{y:+.4f}<extra></extra>"))
    # The title just above the plot area, under the toolbar's band; the legend under the x axis's title.
    # Two lines: one would run past a phone's width.
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=MODEBAR_BAND + 44, b=10), hovermode="x",
                      title=dict(text=f"{c.dataset}: {c.a} − {c.b}, {spec.short}<br>{word(c)} at n = {c.n}",
                                 font_size=13, x=0, xref="paper", xanchor="left", y=1, yref="paper",
                                 yanchor="bottom", pad=dict(b=8)),
                      xaxis_title="seeds (n)", yaxis_title=f"{c.a} − {c.b}" + (f" ({spec.unit})" if spec.unit else ""),
                      legend=dict(orientation="h", x=0, y=-0.25, yanchor="top"))
    return fig
