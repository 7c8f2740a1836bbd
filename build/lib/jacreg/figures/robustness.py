"""Figures of robustness curves (accuracy against epsilon): plotly for the app, PNG for exports.

Both take the result dicts of :func:`jacreg.robustness.curve` (with an optional ``"model"`` key):
one panel per attack, one line per model, as the paper's Fig. 3.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ..fileio import atomic_write_bytes, finite_or_none
from .style import model_colors, new_figure, png_bytes

__all__ = ["curve_figure", "curves_png", "group_by_attack", "save_curves_png"]

_NORM_LABEL = {"linf": "L∞", "l2": "L2"}


def _attack_title(result: Mapping[str, Any]) -> str:
    return str(result.get("title") or result.get("attack", "attack"))


def _x_label(result: Mapping[str, Any]) -> str:
    return f"epsilon ({_NORM_LABEL.get(str(result.get('norm')), '')} distance, pixels in [0, 1])"


def group_by_attack(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Results grouped by attack name, in first-seen order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        out.setdefault(str(r.get("attack")), []).append(r)
    return out


def curve_figure(results: Sequence[Mapping[str, Any]], *, title: str | None = None,
                 partial: Mapping[str, Any] | None = None, show_raw: bool = True,
                 colors: Mapping[str, str] | None = None) -> go.Figure:
    """A plotly figure: accuracy against epsilon, one line per result (model) of one attack.

    Args:
        results: finished curves of the same attack (``curve`` results, with ``"model"``).
        title: figure title (default: the attack's title).
        partial: a curve still being computed (``{"model", "epsilons", "accuracy", "samples"}``),
            drawn dashed so the line grows live.
        show_raw: for white noise, also draw the raw (not made monotone) accuracy, dotted.
        colors: model label -> colour (default: :func:`model_colors` of these results).
    """
    fig = go.Figure()
    ref = results[0] if results else (partial or {})
    names = [str(r.get("model") or r.get("attack")) for r in results]
    if partial:
        names.append(str(partial.get("model") or "running"))
    colors = dict(colors) if colors else model_colors(names)
    for r in results:
        name = str(r.get("model") or r.get("attack"))
        color = colors.get(name)
        fig.add_trace(go.Scatter(
            x=list(r["epsilons"]), y=finite_or_none(r["accuracy"]), mode="lines+markers", name=name,
            line={"color": color}, marker={"color": color},
            hovertemplate=f"{name}<br>epsilon %{{x:g}}<br>accuracy %{{y:.1%}}"
                          f"<extra>{r.get('samples')} samples</extra>"))
        if show_raw and r.get("raw_accuracy"):
            fig.add_trace(go.Scatter(
                x=list(r["epsilons"]), y=finite_or_none(r["raw_accuracy"]), mode="lines",
                name=f"{name} (one draw)",
                line={"dash": "dot", "color": color}, opacity=0.6,
                hovertemplate=f"{name}, one noise draw<br>epsilon %{{x:g}}<br>accuracy %{{y:.1%}}"
                              "<extra></extra>"))
    if partial:
        name = str(partial.get("model") or "running")
        fig.add_trace(go.Scatter(
            x=list(partial["epsilons"]), y=finite_or_none(partial["accuracy"]), mode="lines+markers",
            name=f"{name} (running, {partial.get('samples', 0)} samples)",
            line={"dash": "dash", "color": colors.get(name)}, marker={"color": colors.get(name)}))
    fig.update_layout(
        title=title or (_attack_title(ref) if ref else None),
        xaxis_title=_x_label(ref) if ref else "epsilon", yaxis_title="accuracy",
        yaxis={"range": [-0.02, 1.02], "tickformat": ".0%"}, showlegend=True,
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 50, "r": 10, "t": 50, "b": 10}, height=380)
    return fig


def curves_png(results: Sequence[Mapping[str, Any]], *, dpi: int = 120) -> bytes:
    """A PNG with one panel per attack and one line per model."""
    groups = group_by_attack(results)
    n = max(1, len(groups))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure(4.6 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (_, rs) in zip(axes.flat, groups.items(), strict=False):
        for r in rs:
            acc = [math.nan if v is None else v for v in finite_or_none(list(r["accuracy"]))]
            ax.plot(r["epsilons"], acc, marker="o", label=str(r.get("model") or r.get("attack")))
        ax.set_title(_attack_title(rs[0]))
        ax.set_xlabel(_x_label(rs[0]))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    return png_bytes(fig, dpi=dpi)


def save_curves_png(results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write :func:`curves_png` to ``path`` atomically."""
    atomic_write_bytes(path, curves_png(results))
