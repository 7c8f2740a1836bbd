"""Figures of robustness curves (accuracy against epsilon): plotly for the app, PNG for exports.

Both take the result dicts of :func:`jacreg.robustness.curve` (with an optional ``"model"`` key):
one panel per attack, one line per model, as the paper's Fig. 3.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .fileio import atomic_write_bytes

_NORM_LABEL = {"linf": "L∞", "l2": "L2"}
#: Colours given to models in order, so a model has the same colour in every panel.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def model_colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable colour per model label (in first-seen order)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = PALETTE[len(out) % len(PALETTE)]
    return out


def _attack_title(result: Mapping[str, Any]) -> str:
    return str(result.get("title") or result.get("attack", "attack"))


def _x_label(result: Mapping[str, Any]) -> str:
    return f"epsilon ({_NORM_LABEL.get(str(result.get('norm')), '')} distance, pixels in [0, 1])"


def _finite(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
            for v in values]


def group_by_attack(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Results grouped by attack name, in first-seen order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        out.setdefault(str(r.get("attack")), []).append(r)
    return out


def curve_figure(results: Sequence[Mapping[str, Any]], *, title: str | None = None,
                 partial: Mapping[str, Any] | None = None, show_raw: bool = True,
                 colors: Mapping[str, str] | None = None) -> Any:
    """A plotly figure: accuracy against epsilon, one line per result (model) of one attack.

    Args:
        results: finished curves of the same attack (``curve`` results, with ``"model"``).
        title: figure title (default: the attack's title).
        partial: a curve still being computed (``{"model", "epsilons", "accuracy", "samples"}``),
            drawn dashed so the line grows live.
        show_raw: for white noise, also draw the raw (not made monotone) accuracy, dotted.
        colors: model label -> colour (default: :func:`model_colors` of these results).
    """
    import plotly.graph_objects as go

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
            x=list(r["epsilons"]), y=_finite(r["accuracy"]), mode="lines+markers", name=name,
            line={"color": color}, marker={"color": color},
            hovertemplate=f"{name}<br>epsilon %{{x:g}}<br>accuracy %{{y:.1%}}"
                          f"<extra>{r.get('samples')} samples</extra>"))
        if show_raw and r.get("raw_accuracy"):
            fig.add_trace(go.Scatter(
                x=list(r["epsilons"]), y=_finite(r["raw_accuracy"]), mode="lines", name=f"{name} (one draw)",
                line={"dash": "dot", "color": color}, opacity=0.6,
                hovertemplate=f"{name}, one noise draw<br>epsilon %{{x:g}}<br>accuracy %{{y:.1%}}"
                              "<extra></extra>"))
    if partial:
        name = str(partial.get("model") or "running")
        fig.add_trace(go.Scatter(
            x=list(partial["epsilons"]), y=_finite(partial["accuracy"]), mode="lines+markers",
            name=f"{name} (running, {partial.get('samples', 0)} samples)",
            line={"dash": "dash", "color": colors.get(name)}, marker={"color": colors.get(name)}))
    fig.update_layout(
        title=title or (_attack_title(ref) if ref else None),
        xaxis_title=_x_label(ref) if ref else "epsilon", yaxis_title="accuracy",
        yaxis={"range": [-0.02, 1.02], "tickformat": ".0%"}, showlegend=True,
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 50, "r": 10, "t": 50, "b": 10}, height=380)
    return fig


def png_bytes(results: Sequence[Mapping[str, Any]], *, dpi: int = 120) -> bytes:
    """A PNG (matplotlib) with one panel per attack and one line per model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = group_by_attack(results)
    n = max(1, len(groups))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    try:
        for ax, (_, rs) in zip(axes.flat, groups.items(), strict=False):
            for r in rs:
                acc = [math.nan if v is None else v for v in _finite(r["accuracy"])]
                ax.plot(r["epsilons"], acc, marker="o", label=str(r.get("model") or r.get("attack")))
            ax.set_title(_attack_title(rs[0]))
            ax.set_xlabel(_x_label(rs[0]))
            ax.set_ylabel("accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def save_png(results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write :func:`png_bytes` to ``path`` atomically."""
    atomic_write_bytes(path, png_bytes(results))
