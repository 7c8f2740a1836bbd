"""jacreg.plots: decision-cell figures (plotly) and their PNG twin (matplotlib)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from jacreg import cells
from jacreg.errors import ShapeError
from jacreg.figures import cells as plots
from jacreg.figures import style

D = 28 * 28


class Quadrants(nn.Module):
    """Three classes on a plane: 0 near the origin, 1 where a > 0.4, 2 where b > 0.6."""

    def __init__(self, plane: cells.Plane, scale: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("x0", plane.origin.reshape(-1))
        self.register_buffer("u", plane.u.reshape(-1))
        self.register_buffer("v", plane.v.reshape(-1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.flatten(1) - self.x0
        a, b = d @ self.u, d @ self.v
        return self.scale * torch.stack([torch.zeros_like(a), a - 0.4, b - 0.6], dim=1)


@pytest.fixture(scope="module")
def section() -> cells.CrossSection:
    plane = cells.random_plane(torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0)), seed=0)
    soft = Quadrants(plane, scale=2.0)  # same regions, lower confidence
    return cells.cross_section([Quadrants(plane), soft], plane, extent=1.0, resolution=41)


def test_palette_is_fixed():
    assert style.class_color(0) == "#1f77b4" and style.class_color(3) == "#d62728"
    assert len(set(style.palette(10))) == 10
    assert style.class_color(10) != style.class_color(0) and style.class_color(10) == style.class_color(26)
    assert style.class_label(3, ["zero", "one", "two", "three"]) == "3 three"
    assert style.class_label(3, [str(i) for i in range(10)]) == "3"


def test_cell_rgb_fades_to_white_at_chance():
    lab = np.array([[0, 1], [2, 3]])
    rgb = plots.cell_rgb(lab, np.array([[1.0, 0.1], [0.55, 1.0]]), 10)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == style.rgb(style.CLASS_COLORS[0])   # certain: the class colour
    assert tuple(rgb[0, 1]) == (255, 255, 255)                      # chance: white
    assert tuple(rgb[1, 1]) == style.rgb(style.CLASS_COLORS[3])
    half = rgb[1, 0].astype(int)
    full = np.array(style.rgb(style.CLASS_COLORS[2]))
    assert np.all(half >= full) and np.all(half < 255)               # in between: paler


def test_cells_figure_side_by_side(section):
    fig = plots.cells_figure(section, ["a", "b"], class_names=["zero", "one", "two"])
    layout = fig.layout
    assert len(layout.images) == 2                                  # one map per model
    measured = [s for s in layout.shapes if s.type == "circle" and s.line.dash is None]
    predicted = [s for s in layout.shapes if s.type == "circle" and s.line.dash == "dash"]
    assert len(measured) == len(predicted) == 2                     # solid: measured, dashed: linearised
    r = float(section.boundary_distance[0])
    assert r == pytest.approx(0.4, rel=0.005)
    assert measured[0].x0 == pytest.approx(-r) and measured[0].x1 == pytest.approx(r)
    # the models are linear in the plane: the linearised radius is exact
    assert predicted[0].x1 == pytest.approx(float(section.predicted_distance[0]))
    assert predicted[0].x1 == pytest.approx(0.4, rel=1e-4)
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["class 0 zero", "class 1 one", "class 2 two",   # one shared legend
                      "measured radius", "linearised (Jacobian)"]
    assert layout.xaxis.range[0] < -1.0 < 1.0 < layout.xaxis.range[1]
    assert layout.yaxis2.scaleanchor == "x2"                        # square, L2 units on both axes
    assert "L2" in layout.xaxis.title.text and "L2" in layout.yaxis.title.text
    assert f"r = {r:.3g}" in layout.annotations[0].text


def test_hover_points_carry_class_and_confidence_in_the_right_place(section):
    fig = plots.cells_figure(section, ["a", "b"], hover_points=41)
    grid = [t for t in fig.data if t.type == "scatter" and t.customdata is not None and len(t.x) > 100]
    assert len(grid) == 2
    c = section.coords
    for m, tr in enumerate(grid):
        xs, ys, cd = np.asarray(tr.x), np.asarray(tr.y), np.asarray(tr.customdata, dtype=float)
        j = np.searchsorted(c, xs - 1e-9)
        i = np.searchsorted(c, ys - 1e-9)
        assert np.array_equal(cd[:, 0].astype(int), section.labels[m, i, j])
        assert np.allclose(cd[:, 1], section.confidence[m, i, j])
        assert "class" in tr.hovertemplate and "p=" in tr.hovertemplate
        # the model's classes where the hover says so: class 1 right of a = 0.4, class 2 above b = 0.6
        assert set(cd[(xs > 0.45) & (ys < 0.55), 0].astype(int)) == {1}
        assert set(cd[(ys > 0.65) & (xs < 0.35), 0].astype(int)) == {2}


def test_layout_image_is_upright(section):
    """The picture's top row is v = +extent (plotly images are drawn top-down)."""
    fig = plots.cells_figure(section, ["a", "b"])
    img = fig.layout.images[0]
    assert img.yanchor == "top" and img.y > 1.0
    src = img.source
    assert src.startswith("data:image/png;base64,")
    import base64

    pix = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
    rgb = plots.cell_rgb(section.labels[0], section.confidence[0], section.num_classes)
    assert np.array_equal(pix[0], rgb[-1]) and np.array_equal(pix[-1], rgb[0])


def test_single_model_figure_and_no_boundary(section):
    fig = plots.cell_figure(section, 1, name="only")
    assert len(fig.layout.images) == 1 and fig.layout.annotations[0].text.startswith("only")
    inf = cells.CrossSection(**{**section.__dict__, "boundary_distance": np.array([math.inf, math.inf]),
                                "boundary_angle": np.array([math.nan, math.nan])})
    fig = plots.cells_figure(inf)
    circles = [s.line.dash for s in fig.layout.shapes if s.type == "circle"]
    assert circles == ["dash", "dash"]  # the linearised circles only
    assert "no boundary" in fig.layout.annotations[0].text
    searched = cells.CrossSection(**{**inf.__dict__, "boundary_searched": np.array([5.86, 0.0])})
    titles = [a.text for a in plots.cells_figure(searched).layout.annotations]
    assert "r > 5.86 (no boundary found)" in titles[0]  # the radius searched, not a nominal limit
    assert "r >" not in titles[1] and "no boundary found" in titles[1]  # nothing searched: no number
    none = cells.CrossSection(**{**inf.__dict__, "predicted_distance": np.array([math.inf, math.nan])})
    fig = plots.cells_figure(none)
    assert not [s for s in fig.layout.shapes if s.type == "circle"]
    assert "linearised: none" in fig.layout.annotations[0].text
    assert "linearised" not in fig.layout.annotations[1].text


def test_png_export_without_a_browser(section):
    data = plots.cells_png(section, ["a", "b"], title="test")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.width > img.height > 200
    arr = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in arr[::7]}
    assert style.rgb(style.CLASS_COLORS[1]) in colours  # the class colours are drawn
    with pytest.raises(ShapeError):
        plots.cells_png(section, ["just one name"])
