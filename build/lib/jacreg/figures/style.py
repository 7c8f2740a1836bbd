"""One figure style for every page and export: colours, labels and the one PNG path.

Interactive figures are plotly (the app); files are PNG drawn with matplotlib's object API
(:class:`matplotlib.figure.Figure` with the Agg canvas, never ``pyplot``), which is thread-safe: the
app draws from several threads at once.

Why matplotlib for PNG export, not kaleido: plotly >= 6.1 exports images only through kaleido >= 1,
which drives a separately installed Chrome/Chromium (``kaleido.get_chrome()`` downloads one). That
fails offline, in slim containers and on CI machines without a browser. matplotlib renders headless
in-process, deterministically; what its PNG lacks is interactivity, which a file has not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from ..fileio import atomic_write_bytes

__all__ = ["CLASS_COLORS", "MODEL_COLORS", "class_color", "class_label", "model_colors", "new_figure",
           "palette", "png_bytes", "rgb", "save_png"]


#: The fixed 10-class palette (matplotlib's tab10): class k always has colour CLASS_COLORS[k].
CLASS_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


#: Extra colours for classes 10 and up (cycled).
_EXTRA_COLORS: tuple[str, ...] = (
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
    "#756bb1", "#636363", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#969696", "#9c9ede",
)


def class_color(k: int) -> str:
    """Hex colour of class ``k`` (fixed: the same class has the same colour in every figure)."""
    k = int(k)
    if 0 <= k < len(CLASS_COLORS):
        return CLASS_COLORS[k]
    return _EXTRA_COLORS[(k - len(CLASS_COLORS)) % len(_EXTRA_COLORS)]


def palette(num_classes: int) -> list[str]:
    """Colours of classes 0..num_classes-1."""
    return [class_color(k) for k in range(int(num_classes))]


def rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def class_label(k: int, class_names: Sequence[str] | None = None) -> str:
    """``"3"`` or ``"3 cat"`` when class names are known."""
    if class_names is not None and 0 <= int(k) < len(class_names):
        name = str(class_names[int(k)])
        return str(int(k)) if name == str(int(k)) else f"{int(k)} {name}"
    return str(int(k))


#: Colours given to models in order, so a model has the same colour in every panel.
MODEL_COLORS: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def model_colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable colour per model label (in first-seen order)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = MODEL_COLORS[len(out) % len(MODEL_COLORS)]
    return out


def new_figure(width: float, height: float, dpi: int = 100, **kwargs: Any) -> Figure:
    """A matplotlib Figure of ``width`` x ``height`` inches with a constrained layout (thread-safe:
    no pyplot, no global state)."""
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained", **kwargs)


def png_bytes(fig: Figure, dpi: int | None = None) -> bytes:
    """A matplotlib Figure as PNG bytes (Agg, no display, no browser)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int | None = None) -> None:
    """Write the figure as PNG to ``path`` atomically."""
    atomic_write_bytes(path, png_bytes(fig, dpi=dpi))
