"""The film of the cells through training: an animated plotly figure, the radius per epoch, exports.

:func:`film_figure` plays in the browser by itself (a play button and an epoch slider, plotly
frames): per run, the decision-cell map of the epoch (colour = class, paler where the top softmax
is lower), the measured circle (solid) and the circle the Jacobian predicts (dashed).
:func:`radius_figure` is the radius per epoch under it. :func:`film_html` writes both into one
self-contained HTML file (plotly.js inline: it plays offline); :func:`film_gif` renders the frames
with matplotlib into an animated GIF (Pillow).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from ..cells.film import Film
from ..cells.section import CrossSection
from .cells import MEASURED_LINE, PREDICTED_LINE, cell_rgb, cells_matplotlib
from .style import class_color, class_label, model_colors, png_bytes

__all__ = ["FRAME_MS", "film_figure", "film_gif", "film_html", "radius_figure"]

#: Milliseconds per epoch when the film plays.
FRAME_MS = 700
_CIRCLE = np.linspace(0.0, 2 * np.pi, 121)


def _png_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _circle(r: float) -> tuple[list[float | None], list[float | None]]:
    if not math.isfinite(r):
        return [None], [None]
    return (r * np.cos(_CIRCLE)).tolist(), (r * np.sin(_CIRCLE)).tolist()


def _radius(r: float) -> str:
    return f"{r:.3g}" if math.isfinite(r) else "none found"


def _frame_traces(cs: CrossSection, k: int, name: str) -> list[Any]:
    """The four traces that change from frame to frame for one run: map, two circles, sample."""
    coords = cs.coords
    dx = float(coords[1] - coords[0])
    r, rp = float(cs.boundary_distance[k]), float(cs.predicted_distance[k])
    (mx, my), (px, py) = _circle(r), _circle(rp)
    return [
        # Row 0 of the map is v = -extent: with dy > 0 on an ascending axis it is drawn at the bottom.
        go.Image(source=_png_uri(cell_rgb(cs.labels[k], cs.confidence[k], cs.num_classes)),
                 x0=float(coords[0]), dx=dx, y0=float(coords[0]), dy=dx, hoverinfo="skip", name=name),
        go.Scatter(x=mx, y=my, mode="lines", line=MEASURED_LINE, showlegend=False, name="measured",
                   hovertemplate=f"measured radius {_radius(r)}<extra>{name}</extra>"),
        go.Scatter(x=px, y=py, mode="lines", line=PREDICTED_LINE, showlegend=False, name="linearised",
                   hovertemplate=f"linearised radius {_radius(rp)}<extra>{name}</extra>"),
        go.Scatter(x=[0.0], y=[0.0], mode="markers", showlegend=False, name="sample",
                   marker={"size": 8, "color": "black", "line": {"width": 1, "color": "white"}},
                   hovertemplate=f"sample: class {int(cs.origin_label[k])}, "
                                 f"p={float(cs.origin_confidence[k]):.3f}<extra>{name}</extra>"),
    ]


def _title(film: Film, epoch: int) -> str:
    cs = film.frame(epoch)
    parts = [f"{n}: r = {_radius(float(cs.boundary_distance[k]))}, linearised "
             f"{_radius(float(cs.predicted_distance[k]))}" for k, n in enumerate(film.names)]
    return f"epoch {epoch}<br><sub>" + " · ".join(parts) + "</sub>"


def film_figure(film: Film, class_names: Sequence[str] | None = None, *, start: int | None = None,
                height: int = 480, frame_ms: int = FRAME_MS) -> go.Figure:
    """The film as one plotly figure that plays by itself: a column per run, a frame per epoch.

    Args:
        film: from :func:`jacreg.cells.film`.
        class_names: for the legend.
        start: the epoch shown before playing (default: the first).
        frame_ms: milliseconds per epoch when playing.
    """
    epochs = film.epochs
    start = epochs[0] if start is None or start not in epochs else start
    lo = float(film.coords[0]) - float(film.coords[1] - film.coords[0]) / 2
    hi = -lo
    fig = make_subplots(rows=1, cols=len(film.reels), subplot_titles=film.names, horizontal_spacing=0.06)
    first = film.frame(start)
    for k, name in enumerate(film.names):
        for trace in _frame_traces(first, k, name):
            fig.add_trace(trace, row=1, col=k + 1)
        fig.update_xaxes(range=[lo, hi], showgrid=False, zeroline=False, constrain="domain",
                         title_text="u (L2 units)", row=1, col=k + 1)
        fig.update_yaxes(range=[lo, hi], autorange=False, showgrid=False, zeroline=False,
                         scaleanchor="x" if k == 0 else f"x{k + 1}", scaleratio=1, constrain="domain",
                         title_text="v (L2 units)" if k == 0 else None, row=1, col=k + 1)
    moving = list(range(len(fig.data)))
    classes = sorted({int(c) for r in film.reels for cs in r.sections for c in np.unique(cs.labels)})
    for c in classes:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers",
                                 name=f"class {class_label(c, class_names)}",
                                 marker={"symbol": "square", "size": 12, "color": class_color(c)}),
                      row=1, col=1)
    for name, line in (("measured radius", MEASURED_LINE), ("linearised (Jacobian)", PREDICTED_LINE)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=line), row=1, col=1)
    frames = []
    for e in epochs:
        cs = film.frame(e)
        data = [t for k, n in enumerate(film.names) for t in _frame_traces(cs, k, n)]
        frames.append(go.Frame(data=data, traces=moving, name=str(e),
                               layout={"title": {"text": _title(film, e)}}))
    fig.frames = frames
    still = {"frame": {"duration": 0, "redraw": True}, "mode": "immediate", "transition": {"duration": 0}}
    fig.update_layout(
        title={"text": _title(film, start)}, height=height, plot_bgcolor="white",
        margin={"l": 50, "r": 20, "t": 90, "b": 190},
        legend={"orientation": "h", "yanchor": "top", "y": -0.66, "x": 0.5, "xanchor": "center"},
        updatemenus=[{
            "type": "buttons", "direction": "left", "x": 0.0, "xanchor": "left", "y": -0.24, "yanchor": "top",
            "pad": {"r": 10, "t": 10}, "showactive": False,
            "buttons": [
                {"label": "▶ Play", "method": "animate",
                 "args": [None, {"frame": {"duration": int(frame_ms), "redraw": True}, "fromcurrent": True,
                                 "mode": "immediate", "transition": {"duration": 0}}]},
                {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]},
            ]}],
        sliders=[{
            "active": epochs.index(start), "x": 0.2, "len": 0.8, "y": -0.2, "yanchor": "top",
            "pad": {"t": 10}, "currentvalue": {"prefix": "epoch ", "visible": True},
            "steps": [{"label": str(e), "method": "animate", "args": [[str(e)], still]} for e in epochs],
        }],
    )
    return fig


def radius_figure(film: Film, *, height: int = 260, epoch: int | None = None) -> go.Figure:
    """The circle's radius per epoch, measured (solid) and linearised (dashed), one colour per run.
    Epochs without a boundary up to 4 x the extent are gaps; ``epoch`` draws a marker line."""
    colors = model_colors(film.names)
    fig = go.Figure()
    rows = film.radii()
    for name in film.names:
        mine = [r for r in rows if r["run"] == name]
        x = [r["epoch"] for r in mine]
        for key, dash, label in (("radius", None, "measured"), ("predicted_radius", "dash", "linearised")):
            y = [r[key] if math.isfinite(r[key]) else None for r in mine]
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=f"{name}: {label}",
                line={"color": colors[name], "dash": dash}, marker={"size": 5},
                hovertemplate=f"epoch %{{x}}: {label} radius %{{y:.4g}}<extra>{name}</extra>"))
    if epoch is not None:
        fig.add_vline(x=epoch, line_color="grey", line_width=1)
    fig.update_layout(height=height, xaxis_title="epoch", yaxis_title="radius (L2 units)",
                      margin={"l": 50, "r": 20, "t": 20, "b": 40}, plot_bgcolor="white",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0})
    fig.update_xaxes(showgrid=True, gridcolor="#eee", dtick=max(1, len(film.epochs) // 10))
    fig.update_yaxes(showgrid=True, gridcolor="#eee", rangemode="tozero")
    return fig


def film_html(film: Film, class_names: Sequence[str] | None = None, *, title: str = "Cells through training",
              frame_ms: int = FRAME_MS) -> bytes:
    """One self-contained HTML file (plotly.js inline, no network needed): the film and the radius
    per epoch."""
    body = film_figure(film, class_names, frame_ms=frame_ms).to_html(full_html=False, include_plotlyjs=True,
                                                                      auto_play=False)
    curve = radius_figure(film).to_html(full_html=False, include_plotlyjs=False)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body style=\"font-family: sans-serif\"><h2>{title}</h2>\n{body}\n"
            f"<h4>The circle's radius per epoch</h4>\n{curve}\n</body></html>\n")
    return page.encode()


def film_gif(film: Film, class_names: Sequence[str] | None = None, *, title: str | None = None,
             dpi: int = 80, frame_ms: int = FRAME_MS) -> bytes:
    """The film as an animated GIF: each epoch drawn as :func:`cells_matplotlib` draws a cross
    section (both circles), ``frame_ms`` per frame, looping; the last frame is held twice as long."""
    frames = []
    for e in film.epochs:
        head = f"{title} · epoch {e}" if title else f"epoch {e}"
        png = png_bytes(cells_matplotlib(film.frame(e), film.names, class_names, title=head, dpi=dpi))
        frames.append(Image.open(io.BytesIO(png)).convert("RGB"))
    size = frames[0].size
    frames = [f if f.size == size else f.resize(size) for f in frames]
    durations = [int(frame_ms)] * len(frames)
    durations[-1] *= 2
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False)
    return buf.getvalue()
