"""jacreg.figures.theory: the scatter of predicted against measured radius, and its PNG."""

from __future__ import annotations

import io
import json
import math

import torch
from PIL import Image

from jacreg import cells
from jacreg.figures import theory as theory_figures
from tests.helpers import Affine


def test_theory_scatter(digits):
    x, y = digits
    torch.manual_seed(0)
    model = Affine(0.05 * torch.randn(10, 28 * 28), torch.randn(10), x[:4].mean(0))
    res = cells.radius_theory([model], x, y, 2, extent=4.0, adversarial_extent=1.0, names=["affine"])
    fig = theory_figures.theory_figure(res)
    spec = json.loads(fig.to_json())
    assert spec["layout"]["xaxis"]["type"] == "log" and spec["layout"]["xaxis2"]["type"] == "log"
    points = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in points) == sum(math.isfinite(r["predicted"]) for r in res.rows)
    assert [bool(t.marker.showscale) for t in points].count(True) == 1         # one colour bar: ||J||_F
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles[0].startswith("random planes") and "Spearman" in titles[0]
    png = theory_figures.theory_png(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).width > 400
