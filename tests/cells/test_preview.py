"""jacreg.cells.preview: the cost estimate of a map and the coarse first picture for slow models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from jacreg import cells
from jacreg.errors import ShapeError


class Slow(nn.Module):
    """A linear classifier that sleeps a fixed time per image (a stand-in for a big model)."""

    def __init__(self, per_image: float) -> None:
        super().__init__()
        self.per_image = per_image
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.per_image * x.shape[0])
        return self.fc(x.flatten(1))


def test_seconds_per_point_measures_the_models(digits):
    x0 = digits[0][0]
    slow = Slow(0.03).eval()
    spp = cells.seconds_per_point(slow, x0)
    assert 0.03 <= spp < 0.06
    both = cells.seconds_per_point([slow, Slow(0.04).eval()], x0)
    assert 0.07 <= both < 0.12                                     # the models' costs add up
    assert cells.map_seconds(slow, x0, 31) == pytest.approx(spp * 31 ** 2, rel=0.5)
    fast = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
    assert cells.seconds_per_point(fast, x0) < 0.005
    with pytest.raises(ShapeError):
        cells.seconds_per_point(nn.Linear(3, 10), x0)


def test_preview_resolution():
    assert [cells.preview_resolution(r) for r in (11, 21, 31, 101, 1001)] == [11, 11, 11, 33, 333]


def test_preview_threshold_from_the_environment(monkeypatch):
    monkeypatch.delenv("JACREG_PREVIEW_SECONDS", raising=False)
    assert cells.preview_after() == cells.PREVIEW_AFTER_SECONDS == 5.0
    for value, expected in (("0", 0.0), ("2.5", 2.5), ("-1", 5.0), ("nan", 5.0), ("soon", 5.0)):
        monkeypatch.setenv("JACREG_PREVIEW_SECONDS", value)
        assert cells.preview_after() == expected


def test_preview_section_is_coarse_and_has_no_circle(lenet, digits):
    plane = cells.random_plane(digits[0][0], seed=0)
    full = cells.cross_section(lenet, plane, extent=10.0, resolution=61)
    pre = cells.preview_section(lenet, plane, extent=10.0, resolution=61)
    assert pre.resolution == 20 and pre.extent == 10.0
    assert math.isinf(pre.boundary_distance[0]) and pre.boundary_searched[0] == 0
    assert math.isnan(pre.predicted_distance[0]) and pre.boundary_evaluations[0] == 0
    assert pre.evaluations[0] <= 20 ** 2 < 61 ** 2 / 9
    # the preview agrees with the full map at the points both have (every third one, nearly)
    idx = np.round(np.interp(pre.coords, full.coords, np.arange(61))).astype(int)
    agree = (pre.labels[0] == full.labels[0][np.ix_(idx, idx)]).mean()
    assert agree > 0.9
