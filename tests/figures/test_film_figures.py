"""jacreg.figures.film: the film that plays by itself, the radius per epoch, HTML and GIF exports."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from jacreg import cells
from jacreg.figures import film as film_figures
from jacreg.figures.cells import cell_rgb
from tests.helpers import Affine


@pytest.fixture(scope="module")
def movie(digits) -> cells.Film:
    """Two runs of affine models whose margins grow with the epoch (the cell grows)."""
    x, _ = digits
    torch.manual_seed(0)
    w, b = 0.05 * torch.randn(10, 28 * 28), torch.randn(10)
    runs = {"small": [(e, Affine(w, b * 0.3 * e, x[0])) for e in (1, 2, 3)],
            "large": [(e, Affine(w, b * e, x[0])) for e in (1, 3)]}
    return cells.film(runs, cells.random_plane(x[0], seed=0), extent=3.0, resolution=21)


def test_the_film_figure_plays_every_epoch(movie):
    fig = film_figures.film_figure(movie, height=400)
    spec = json.loads(fig.to_json())
    assert [f["name"] for f in spec["frames"]] == ["1", "2", "3"]
    moving = spec["frames"][0]["traces"]
    assert len(moving) == 2 * 4                                     # per run: map, two circles, sample
    assert [spec["data"][i]["type"] for i in moving[:4]] == ["image", "scatter", "scatter", "scatter"]
    assert all(len(f["data"]) == len(moving) for f in spec["frames"])
    slider = spec["layout"]["sliders"][0]
    assert [s["label"] for s in slider["steps"]] == ["1", "2", "3"]
    assert slider["steps"][2]["args"][0] == ["3"] and slider["currentvalue"]["prefix"] == "epoch "
    play = spec["layout"]["updatemenus"][0]["buttons"][0]
    assert play["label"].endswith("Play") and play["args"][1]["frame"]["redraw"] is True
    # the measured circle grows with the margins, and equals the linearised one (affine models)
    radii = [max(spec["frames"][k]["data"][1]["x"]) for k in range(3)]
    assert radii[0] < radii[1] < radii[2]
    dashed = [max(spec["frames"][k]["data"][2]["x"]) for k in range(3)]
    assert dashed == pytest.approx(radii, rel=0.01)
    assert "epoch 3" in spec["frames"][2]["layout"]["title"]["text"]
    later = json.loads(film_figures.film_figure(movie, start=3).to_json())
    assert later["layout"]["sliders"][0]["active"] == 2


def test_the_map_image_is_upright(movie):
    """Row 0 of a map (v = -extent) is drawn at the bottom: y0 is the lowest coordinate, dy > 0."""
    fig = film_figures.film_figure(movie)
    img = fig.data[0]
    assert img.y0 == pytest.approx(-3.0) and img.dy > 0 and img.x0 == pytest.approx(-3.0)
    pix = np.asarray(Image.open(io.BytesIO(base64.b64decode(img.source.split(",", 1)[1]))))
    cs = movie.frame(1)
    assert np.array_equal(pix[..., :3], cell_rgb(cs.labels[0], cs.confidence[0], cs.num_classes))


def test_radius_curve_html_and_gif(movie):
    curve = film_figures.radius_figure(movie, epoch=2)
    names = [t.name for t in curve.data]
    assert names == ["small: measured", "small: linearised", "large: measured", "large: linearised"]
    assert list(curve.data[2].x) == [1, 3]
    html = film_figures.film_html(movie).decode()
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html and "plotly.js" in html.lower()
    assert "Plotly.addFrames" in html and "<script src=" not in html     # frames; plotly.js inline
    gif = Image.open(io.BytesIO(film_figures.film_gif(movie, title="test", dpi=50, frame_ms=100)))
    assert gif.format == "GIF" and gif.n_frames == 3
    assert gif.info.get("loop") == 0
