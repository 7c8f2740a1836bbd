"""Figures of the Jacobian page: ||J||_F over test data, projections against the exact value, timing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..jacobian_stats import NormStats, ProjectionSpread, relative_variance_bound

__all__ = ["norm_box_figure", "norm_histogram_figure", "projection_spread_figure", "timing_figure"]


def norm_histogram_figure(stats: NormStats, *, per_class: bool = True, bins: int = 40,
                          height: int = 420) -> go.Figure:
    """Histogram of ‖J‖_F over the samples, stacked by class (or all together)."""
    fig = go.Figure()
    lo, hi = float(stats.norms.min()), float(stats.norms.max())
    size = (hi - lo) / bins if hi > lo else 1.0
    xbins = {"start": lo, "end": hi + size, "size": size}
    if per_class:
        for row in stats.per_class:
            v = stats.norms[stats.labels == row["class"]]
            fig.add_trace(go.Histogram(x=v, name=str(row["name"]), xbins=xbins))
        fig.update_layout(barmode="stack")
    else:
        fig.add_trace(go.Histogram(x=stats.norms, name="all", xbins=xbins))
    fig.add_vline(x=stats.mean, line_dash="dash", line_color="black",
                  annotation_text=f"mean {stats.mean:.3g}")
    wrt = "normalised input" if stats.normalized else "pixels"
    fig.update_layout(height=height, xaxis_title=f"‖J(x)‖_F (w.r.t. the {wrt})", yaxis_title="samples",
                      legend_title="class", margin={"l": 40, "r": 20, "t": 30, "b": 40})
    return fig


def norm_box_figure(stats: NormStats, *, height: int = 360) -> go.Figure:
    """One box per class of ‖J‖_F."""
    fig = go.Figure()
    for row in stats.per_class:
        fig.add_trace(go.Box(y=stats.norms[stats.labels == row["class"]], name=str(row["name"]),
                             boxmean=True, showlegend=False))
    fig.update_layout(height=height, xaxis_title="class", yaxis_title="‖J(x)‖_F",
                      margin={"l": 40, "r": 20, "t": 30, "b": 40})
    return fig


def projection_spread_figure(spread: ProjectionSpread, *, height: int = 400) -> go.Figure:
    """Estimates / exact for each n_proj: whole-batch draws and single-sample draws, with the
    unbiased line at 1 and the ±1 sd bound for a single sample (:func:`relative_variance_bound`)."""
    fig = go.Figure()
    for n, b in spread.batch.items():
        fig.add_trace(go.Box(y=b / spread.exact_batch, name=f"n_proj={n}, batch of {spread.batch_size}",
                             boxpoints="all", jitter=0.4, pointpos=0, marker={"size": 4},
                             line={"color": "#1f77b4"}, showlegend=False))
    for n, s in spread.samples.items():
        if s.size == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = (s / spread.exact_samples[None, :]).ravel()
        rel = rel[np.isfinite(rel)]
        fig.add_trace(go.Box(y=rel, name=f"n_proj={n}, one sample", boxpoints="outliers",
                             line={"color": "#d62728"}, showlegend=False))
        bound = math.sqrt(relative_variance_bound(spread.num_classes, spread.method) / n)
        name = f"n_proj={n}, one sample"
        fig.add_trace(go.Scatter(x=[name, name], y=[1 - bound, 1 + bound], mode="markers",
                                 marker={"symbol": "line-ew-open", "size": 28, "color": "black"},
                                 name="±1 sd bound", showlegend=n == next(iter(spread.samples))))
    fig.add_hline(y=1.0, line_dash="dash", line_color="black", annotation_text="exact")
    fig.update_layout(height=height, yaxis_title="estimate / exact  (‖J‖²_F)",
                      margin={"l": 40, "r": 20, "t": 30, "b": 40})
    return fig


def timing_figure(rows: Sequence[dict[str, Any]], *, height: int = 320) -> go.Figure:
    """Bar chart of seconds per step, annotated with the ratio to plain training."""
    fig = go.Figure(go.Bar(x=[r["estimator"] for r in rows], y=[r["seconds"] * 1e3 for r in rows],
                           text=[f"{r['ratio']:.2f}x" for r in rows], textposition="outside"))
    dev = rows[0]["device"] if rows else ""
    fig.update_layout(height=height, yaxis_title=f"ms per step on {dev}",
                      margin={"l": 40, "r": 20, "t": 30, "b": 40})
    return fig
