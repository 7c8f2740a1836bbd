"""Predicted against measured cell radius: the scatter of :func:`jacreg.cells.theory.radius_theory`.

One panel per kind of plane (random, adversarial); x = the measured in-plane radius, y = the radius
the linearised logits predict, both on log axes; the diagonal (exact prediction) and the band
within a factor 3; colour = ||J(x)||_F of the sample, symbol = model. Samples whose boundary was not
found within the search are drawn at the search limit with an open symbol.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from ..cells.theory import FACTOR, RadiusTheory
from .style import new_figure, png_bytes

__all__ = ["theory_figure", "theory_matplotlib", "theory_png"]

_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "star", "hexagon", "x")
_MPL_MARKERS = ("o", "D", "s", "^", "P", "*", "h", "X")


def _points(res: RadiusTheory, plane: str, model: str) -> dict[str, np.ndarray]:
    rows = [r for r in res.select(model, plane) if math.isfinite(r["predicted"])]
    meas = np.array([r["measured"] for r in rows], dtype=float)
    limit = 4 * res.extents.get(plane, 1.0)
    return {"measured": np.where(np.isfinite(meas), meas, limit), "found": np.isfinite(meas),
            "predicted": np.array([r["predicted"] for r in rows], dtype=float),
            "norm": np.array([r["jacobian_norm"] for r in rows], dtype=float),
            "sample": np.array([r["sample"] for r in rows], dtype=int)}


def _panel_title(res: RadiusTheory, plane: str) -> str:
    rows = [s for s in res.summary() if s["plane"] == plane]
    total = next((s for s in rows if s["model"] == "all models"), rows[0] if rows else None)
    if total is None:
        return f"{plane} planes"
    rho = total["spearman"]
    rho_text = f"{rho:.2f}" if math.isfinite(rho) else "n/a"
    return f"{plane} planes: Spearman ρ = {rho_text} ({total['finite']} pairs)"


def _range(res: RadiusTheory) -> tuple[float, float]:
    vals = [v for r in res.rows for v in (r["measured"], r["predicted"]) if math.isfinite(v) and v > 0]
    vals += [4 * e for e in res.extents.values()]
    lo, hi = (min(vals), max(vals)) if vals else (1e-2, 1e2)
    return lo / 1.5, hi * 1.5


def theory_figure(res: RadiusTheory, *, height: int = 460) -> go.Figure:
    """The scatter of predicted against measured radius, a panel per kind of plane."""
    planes = [p for p in ("random", "adversarial") if res.select(plane=p)]
    fig = make_subplots(rows=1, cols=max(1, len(planes)), horizontal_spacing=0.08,
                        subplot_titles=[_panel_title(res, p) for p in planes])
    norms = [r["jacobian_norm"] for r in res.rows if math.isfinite(r["jacobian_norm"])]
    cmin, cmax = (min(norms), max(norms)) if norms else (0.0, 1.0)
    lo, hi = _range(res)
    first = True
    for c, plane in enumerate(planes, start=1):
        diag = [lo, hi]
        fig.add_trace(go.Scatter(x=diag, y=diag, mode="lines", line={"color": "black", "width": 1},
                                 name="predicted = measured", showlegend=c == 1, hoverinfo="skip"),
                      row=1, col=c)
        for f in (FACTOR, 1 / FACTOR):
            fig.add_trace(go.Scatter(x=diag, y=[v * f for v in diag], mode="lines", hoverinfo="skip",
                                     line={"color": "grey", "width": 1, "dash": "dot"},
                                     name=f"within {FACTOR:g}x", showlegend=c == 1 and f > 1), row=1, col=c)
        for m, model in enumerate(res.names):
            pts = _points(res, plane, model)
            symbol = _SYMBOLS[m % len(_SYMBOLS)]
            for found in (True, False):
                sel = pts["found"] == found
                if not sel.any():
                    continue
                marker: dict[str, Any] = {
                    "symbol": symbol if found else f"{symbol}-open", "size": 9, "color": pts["norm"][sel],
                    "colorscale": "Viridis", "cmin": cmin, "cmax": cmax,
                    "line": {"width": 0.5, "color": "black"},
                    "showscale": first, "colorbar": {"title": {"text": "‖J‖_F"}, "len": 0.8}}
                first = False
                where = "" if found else f" (none found up to {4 * res.extents.get(plane, 1.0):g})"
                fig.add_trace(go.Scatter(
                    x=pts["measured"][sel], y=pts["predicted"][sel], mode="markers", marker=marker,
                    name=model if found else f"{model}: no boundary found", showlegend=c == 1,
                    legendgroup=f"{model}-{found}",
                    customdata=np.stack([pts["sample"][sel], pts["norm"][sel]], 1),
                    hovertemplate=f"{model}, sample %{{customdata[0]}}<br>measured %{{x:.4g}}{where}<br>"
                                  "predicted %{y:.4g}<br>‖J‖_F %{customdata[1]:.4g}<extra></extra>"),
                    row=1, col=c)
        span = [math.log10(lo), math.log10(hi)]
        fig.update_xaxes(type="log", range=span, title_text="measured radius (L2)", row=1, col=c)
        fig.update_yaxes(type="log", range=span, scaleanchor="x" if c == 1 else f"x{c}",
                         title_text="predicted radius (linearised)" if c == 1 else None, row=1, col=c)
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60, "b": 40}, plot_bgcolor="white",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0.5,
                              "xanchor": "center"})
    return fig


def theory_matplotlib(res: RadiusTheory, *, dpi: int = 110) -> Figure:
    """The matplotlib twin of :func:`theory_figure` (for PNG export)."""
    planes = [p for p in ("random", "adversarial") if res.select(plane=p)]
    fig = new_figure(4.4 * max(1, len(planes)) + 1.0, 4.6, dpi=dpi)
    axes = fig.subplots(1, max(1, len(planes)), squeeze=False)[0]
    norms = [r["jacobian_norm"] for r in res.rows if math.isfinite(r["jacobian_norm"])]
    vmin, vmax = (min(norms), max(norms)) if norms else (0.0, 1.0)
    lo, hi = _range(res)
    scatter = None
    for ax, plane in zip(axes, planes, strict=False):
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="predicted = measured")
        ax.plot([lo, hi], [lo * FACTOR, hi * FACTOR], color="grey", lw=0.8, ls=":",
                label=f"within {FACTOR:g}x")
        ax.plot([lo, hi], [lo / FACTOR, hi / FACTOR], color="grey", lw=0.8, ls=":")
        for m, model in enumerate(res.names):
            pts = _points(res, plane, model)
            marker = _MPL_MARKERS[m % len(_MPL_MARKERS)]
            sel = pts["found"]
            scatter = ax.scatter(pts["measured"][sel], pts["predicted"][sel], c=pts["norm"][sel],
                                 cmap="viridis", vmin=vmin, vmax=vmax, marker=marker, edgecolors="k",
                                 linewidths=0.4, label=model)
            if (~sel).any():
                ax.scatter(pts["measured"][~sel], pts["predicted"][~sel], facecolors="none", edgecolors="k",
                           marker=marker, linewidths=0.8, label=f"{model}: none found")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(_panel_title(res, plane), fontsize=9)
        ax.set_xlabel("measured radius (L2)")
        ax.set_ylabel("predicted radius (linearised)")
        ax.legend(fontsize=7, loc="upper left")
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label="‖J(x)‖_F (pixels)", shrink=0.8)
    return fig


def theory_png(res: RadiusTheory, *, dpi: int = 110) -> bytes:
    """PNG bytes of :func:`theory_matplotlib`."""
    return png_bytes(theory_matplotlib(res, dpi=dpi))
