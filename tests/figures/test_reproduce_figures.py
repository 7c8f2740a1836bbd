"""jacreg.figures.reproduce: Fig. 2 and Fig. 3 as PNG, with short and long series."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from PIL import Image

from jacreg.figures.reproduce import DENSE, Series, _plot, fig2_png, fig3_png


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_fig2_draws_long_runs_as_lines_with_a_band():
    epochs = 150
    assert epochs > DENSE
    x = list(range(1, epochs + 1))
    acc = [Series("exact", x, [0.9 + 0.0005 * i for i in range(epochs)]),
           Series("n_proj = 1", x, [0.9 + 0.0005 * i for i in range(epochs)], [0.01] * epochs)]
    jac = [Series("exact", x, [2.0 - 0.01 * i for i in range(epochs)]),
           Series("n_proj = 1", x, [2.0 - 0.01 * i if i % 7 else None for i in range(epochs)],
                  [0.1] * epochs)]
    img = _image(fig2_png(acc, jac, epochs, dpi=60))
    assert img.shape[0] > 100 and img.shape[1] > 300
    assert (img.std(axis=(0, 1)) > 10).all()  # something was drawn, not a blank canvas


def test_fig3_keeps_markers_and_error_bars_for_short_curves():
    panels = {"noise": [Series("none", [0.0, 0.1, 0.2], [0.97, 0.9, 0.7], [0.01, 0.02, 0.1])],
              "fgsm": [Series("none", [0.0, 0.1], [0.97, 0.5])]}
    img = _image(fig3_png(panels, {"noise": "σ", "fgsm": "ε"}, dpi=60))
    assert img.shape[1] > img.shape[0]


def test_long_series_are_lines_with_bands_and_short_ones_error_bars():
    long_x = list(range(DENSE + 1))
    ax = Figure().subplots()
    _plot(ax, [Series("one seed", long_x, [1.0] * len(long_x)),
               Series("seeds", long_x, [2.0] * len(long_x), [0.5] * len(long_x))])
    assert [line.get_marker() for line in ax.lines] == ["None", "None"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1  # the band of "seeds" only
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    ax = Figure().subplots()
    _plot(ax, [Series("short", list(range(DENSE)), [1.0] * DENSE, [0.1] * DENSE)])
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 1
