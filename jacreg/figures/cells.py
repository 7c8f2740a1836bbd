"""Decision-cell figures (the paper's Fig. 1, S1, S2): plotly for the app, PNG for files.

Fill colour = predicted class (a fixed palette), fading to white as the top softmax falls; thin
iso-lines of the top softmax; the sample as a black dot; a black circle at the in-plane distance to
the nearest boundary, and a dashed one at the distance the Jacobian predicts (the logits linearised
at the sample, :mod:`jacreg.cells.linear`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import plotly.graph_objects as go
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from PIL import Image
from plotly.subplots import make_subplots

from ..cells import CrossSection, radius_label
from ..errors import ShapeError
from .style import class_color, class_label, new_figure, png_bytes, rgb

__all__ = ["CONFIDENCE_LEVELS", "MEASURED_LINE", "PREDICTED_LINE", "cell_figure", "cell_rgb", "cells_figure",
           "cells_matplotlib", "cells_png",
           "confidence_alpha"]


#: Unselected points keep their look when a point of a figure is selected (clicked).
_KEEP: dict[str, Any] = {"marker": {"opacity": 1}}


#: Iso-lines of the top softmax drawn on decision-cell maps.
CONFIDENCE_LEVELS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def confidence_alpha(confidence: np.ndarray, num_classes: int) -> np.ndarray:
    """Opacity from the top softmax: 0 at chance (1/C), 1 at certainty, linear in between."""
    c = max(2, int(num_classes))
    return np.clip((np.asarray(confidence, dtype=np.float64) - 1.0 / c) / (1.0 - 1.0 / c), 0.0, 1.0)


def cell_rgb(labels: np.ndarray, confidence: np.ndarray, num_classes: int) -> np.ndarray:
    """(R, R, 3) uint8 colours of a decision-cell map: the class colour, faded to white as the top
    softmax falls (the paper's Fig. 1 shading). Row 0 is the bottom row (v = -extent)."""
    labels = np.asarray(labels)
    lut = np.array([rgb(class_color(k)) for k in range(max(int(num_classes), int(labels.max()) + 1))],
                   dtype=np.float64)
    base = lut[labels]
    a = confidence_alpha(confidence, num_classes)[..., None]
    return np.round(255.0 - a * (255.0 - base)).astype(np.uint8)


#: Line styles of the two circles: measured (solid) and predicted by the linearised logits (dashed).
MEASURED_LINE: dict[str, Any] = {"color": "black", "width": 1.5}
PREDICTED_LINE: dict[str, Any] = {"color": "black", "width": 1.2, "dash": "dash"}


def _radius_text(r: float, searched: float, predicted: float = math.nan) -> str:
    """The circle's radius; "r > R" when no boundary was met up to the radius R searched."""
    label = radius_label(r, searched)
    if math.isfinite(r):
        text = f"r = {label}"
    else:
        text = f"r {label} (no boundary found)" if label else "no boundary found"
    if math.isfinite(predicted):
        text += f", linearised {predicted:.3g}"
    elif math.isinf(predicted):
        text += ", linearised: none"
    return text


def _predicted(cs: CrossSection, k: int) -> float:
    return float(cs.predicted_distance[k]) if k < cs.predicted_distance.size else math.nan


def _model_names(cs: CrossSection, names: Sequence[str] | None) -> list[str]:
    m = cs.labels.shape[0]
    if names is None:
        return [f"model {k + 1}" for k in range(m)]
    names = [str(n) for n in names]
    if len(names) != m:
        raise ShapeError(f"{len(names)} names for {m} models")
    return names


def cells_figure(cs: CrossSection, names: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None, *, title: str | None = None,
                 hover_points: int = 61, height: int = 460) -> go.Figure:
    """Decision-cell maps of all models of a cross section, side by side, one shared legend.

    Per model: fill colour = predicted class (fixed palette), opacity rising with the top softmax
    (white near boundaries), thin iso-lines of the top softmax, the sample as a black dot, a black
    circle of radius ``cs.boundary_distance[m]`` with a cross at the nearest point of another
    class, a dashed circle of radius ``cs.predicted_distance[m]`` (the linearised logits), marks of
    the plane (e.g. the other samples), axes in input-space L2 units. Hovering shows
    coordinates, class and confidence on a grid of up to ``hover_points`` x ``hover_points`` points;
    those points are also selectable (``st.plotly_chart(..., on_select="rerun")`` reports clicks as
    points with ``x``, ``y`` and ``curve_number``).
    """
    names = _model_names(cs, names)
    m_count = cs.labels.shape[0]
    coords = cs.coords
    dx = float(coords[1] - coords[0])
    lo, hi = float(coords[0]) - dx / 2, float(coords[-1]) + dx / 2
    radii = [_radius_text(float(cs.boundary_distance[k]), float(cs.boundary_searched[k]), _predicted(cs, k))
             for k in range(m_count)]
    titles = [f"{n}<br><sub>{radius}</sub>" for n, radius in zip(names, radii, strict=True)]
    fig = make_subplots(rows=1, cols=m_count, subplot_titles=titles, horizontal_spacing=0.06)
    stride = max(1, math.ceil(coords.size / max(2, hover_points)))
    idx = np.arange(0, coords.size, stride)
    if idx[-1] != coords.size - 1:
        idx = np.append(idx, coords.size - 1)
    gi, gj = np.meshgrid(idx, idx, indexing="ij")
    for k in range(m_count):
        col = k + 1
        xref = "x" if k == 0 else f"x{col}"
        yref = "y" if k == 0 else f"y{col}"
        rgb = cell_rgb(cs.labels[k], cs.confidence[k], cs.num_classes)
        fig.add_layout_image(
            source=Image.fromarray(np.flipud(rgb)), xref=xref, yref=yref, x=lo, y=hi,
            sizex=hi - lo, sizey=hi - lo, sizing="stretch", layer="below", xanchor="left", yanchor="top",
        )
        conf = cs.confidence[k].astype(np.float64)
        if float(conf.max() - conf.min()) > 1e-6:
            fig.add_trace(go.Contour(
                x=coords, y=coords, z=conf, showscale=False, hoverinfo="skip", name="top softmax",
                contours={"coloring": "lines", "start": CONFIDENCE_LEVELS[0], "end": CONFIDENCE_LEVELS[-1],
                          "size": 0.1},
                colorscale=[[0, "rgba(0,0,0,0.45)"], [1, "rgba(0,0,0,0.45)"]], line={"width": 0.6},
                showlegend=False,
            ), row=1, col=col)
        lab = cs.labels[k][gi, gj].ravel()
        cf = cs.confidence[k][gi, gj].ravel()
        text = [class_label(v, class_names) for v in lab]
        fig.add_trace(go.Scatter(
            x=coords[gj.ravel()], y=coords[gi.ravel()], mode="markers", name=names[k],
            marker={"size": 6, "color": "rgba(0,0,0,0)"}, customdata=np.stack([lab, cf], axis=1), text=text,
            selected={"marker": {"color": "black", "size": 9}}, unselected=_KEEP,
            hovertemplate="u=%{x:.3f}, v=%{y:.3f}<br>class %{text}<br>p=%{customdata[1]:.3f}"
                          f"<extra>{names[k]}</extra>",
            showlegend=False,
        ), row=1, col=col)
        r = float(cs.boundary_distance[k])
        if math.isfinite(r):
            fig.add_shape(type="circle", xref=xref, yref=yref, x0=-r, y0=-r, x1=r, y1=r,
                          line=MEASURED_LINE, name="measured")
        rp = _predicted(cs, k)
        if math.isfinite(rp):
            fig.add_shape(type="circle", xref=xref, yref=yref, x0=-rp, y0=-rp, x1=rp, y1=rp,
                          line=PREDICTED_LINE, name="predicted")
            ang = float(cs.boundary_angle[k])
            if math.isfinite(ang):
                fig.add_trace(go.Scatter(
                    x=[r * math.cos(ang)], y=[r * math.sin(ang)], mode="markers", showlegend=False,
                    marker={"symbol": "x-thin", "size": 9, "line": {"width": 2, "color": "black"}},
                    unselected=_KEEP,
                    hovertemplate=f"nearest other class<br>r={r:.4g}<extra>{names[k]}</extra>",
                ), row=1, col=col)
        if cs.plane.marks:
            fig.add_trace(go.Scatter(
                x=[mk[1] for mk in cs.plane.marks], y=[mk[2] for mk in cs.plane.marks],
                mode="markers+text", text=[mk[0] for mk in cs.plane.marks], textposition="top center",
                marker={"symbol": "diamond", "size": 8, "color": "black"}, showlegend=False, unselected=_KEEP,
                hovertemplate="%{text}: u=%{x:.3f}, v=%{y:.3f}<extra></extra>",
            ), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=[0.0], y=[0.0], mode="markers", showlegend=False,
            marker={"size": 8, "color": "black", "line": {"width": 1, "color": "white"}}, unselected=_KEEP,
            hovertemplate=(f"sample: class {class_label(int(cs.origin_label[k]), class_names)}, "
                           f"p={float(cs.origin_confidence[k]):.3f}<extra>{names[k]}</extra>"),
        ), row=1, col=col)
        fig.update_xaxes(range=[lo, hi], showgrid=False, zeroline=False, constrain="domain",
                         title_text="u (L2 units)", row=1, col=col)
        fig.update_yaxes(range=[lo, hi], showgrid=False, zeroline=False, scaleanchor=xref,
                         scaleratio=1, constrain="domain", title_text="v (L2 units)" if k == 0 else None,
                         row=1, col=col)
    for c in np.unique(cs.labels):
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"class {class_label(int(c), class_names)}",
            marker={"symbol": "square", "size": 12, "color": class_color(int(c))}, showlegend=True,
        ), row=1, col=1)
    for name, line in (("measured radius", MEASURED_LINE), ("linearised (Jacobian)", PREDICTED_LINE)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=line, showlegend=True),
                      row=1, col=1)
    fig.update_layout(
        title=title, height=height, margin={"l": 50, "r": 20, "t": 80 if title else 60, "b": 90},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.5, "xanchor": "center",
                "title": {"text": "class "}},
        plot_bgcolor="white", clickmode="event+select", hovermode="closest",
    )
    return fig


def cell_figure(cs: CrossSection, m: int = 0, name: str | None = None,
                class_names: Sequence[str] | None = None, **kwargs: Any) -> go.Figure:
    """The decision-cell map of one model (model ``m`` of the cross section)."""
    one = replace(cs, labels=cs.labels[m:m + 1], confidence=cs.confidence[m:m + 1],
                  boundary_distance=cs.boundary_distance[m:m + 1], boundary_angle=cs.boundary_angle[m:m + 1],
                  predicted_distance=cs.predicted_distance[m:m + 1],
                  origin_label=cs.origin_label[m:m + 1], origin_confidence=cs.origin_confidence[m:m + 1],
                  evaluations=cs.evaluations[m:m + 1])
    return cells_figure(one, [name or f"model {m + 1}"], class_names, **kwargs)


def cells_matplotlib(cs: CrossSection, names: Sequence[str] | None = None,
                     class_names: Sequence[str] | None = None, *, title: str | None = None,
                     dpi: int = 120) -> Figure:
    """The matplotlib twin of :func:`cells_figure` (same colours, shading, contours, dot, circle)."""
    names = _model_names(cs, names)
    m_count = cs.labels.shape[0]
    coords = cs.coords
    dx = float(coords[1] - coords[0])
    lo, hi = float(coords[0]) - dx / 2, float(coords[-1]) + dx / 2
    fig = new_figure(3.4 * m_count + 0.4, 4.4, dpi=dpi)
    axes = fig.subplots(1, m_count, squeeze=False)[0]
    for k, ax in enumerate(axes):
        ax.imshow(cell_rgb(cs.labels[k], cs.confidence[k], cs.num_classes), origin="lower",
                  extent=(lo, hi, lo, hi), interpolation="nearest")
        conf = cs.confidence[k].astype(np.float64)
        if float(conf.max() - conf.min()) > 1e-6:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax.contour(coords, coords, conf, levels=list(CONFIDENCE_LEVELS), colors="k",
                           linewidths=0.4, alpha=0.5)
        rp = _predicted(cs, k)
        if math.isfinite(rp):
            ax.add_patch(Circle((0, 0), rp, fill=False, color="k", lw=1.0, ls="--"))
        r = float(cs.boundary_distance[k])
        if math.isfinite(r):
            ax.add_patch(Circle((0, 0), r, fill=False, color="k", lw=1.2))
            ang = float(cs.boundary_angle[k])
            if math.isfinite(ang):
                ax.plot([r * math.cos(ang)], [r * math.sin(ang)], "kx", ms=6, mew=1.5)
        for mk in cs.plane.marks:
            ax.plot([mk[1]], [mk[2]], "kD", ms=4)
            ax.annotate(mk[0], (mk[1], mk[2]), textcoords="offset points", xytext=(0, 5), ha="center",
                        fontsize=8)
        ax.plot([0], [0], "o", color="k", ms=5, mec="white", mew=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(f"{names[k]}\n{_radius_text(r, float(cs.boundary_searched[k]), rp)}", fontsize=10)
        ax.set_xlabel("u (L2 units)")
        if k == 0:
            ax.set_ylabel("v (L2 units)")
    handles: list[Artist] = [Patch(color=class_color(int(c)), label=class_label(int(c), class_names))
                             for c in np.unique(cs.labels)]
    handles += [Line2D([], [], marker="o", color="k", ls="", label="sample"),
                Line2D([], [], color="k", lw=1.2, label="distance to boundary"),
                Line2D([], [], color="k", lw=1.0, ls="--", label="linearised (Jacobian)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4 * m_count), fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def cells_png(cs: CrossSection, names: Sequence[str] | None = None,
              class_names: Sequence[str] | None = None, *, title: str | None = None, dpi: int = 120) -> bytes:
    """PNG bytes of the side-by-side decision-cell maps (matplotlib; no browser needed)."""
    return png_bytes(cells_matplotlib(cs, names, class_names, title=title, dpi=dpi))
