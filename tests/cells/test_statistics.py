"""jacreg.cells.metrics and statistics: cell area, fragmentation and radii over samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jacreg import architectures, cells
from jacreg.errors import ConfigError


def test_cell_metrics_count_regions_and_area():
    lab = np.zeros((11, 11), dtype=np.int64)
    lab[:, 8:] = 1          # a band of class 1
    lab[0:2, 0:2] = 2       # an island of class 2
    lab[9:, 0:2] = 2        # another island of class 2
    m = cell_m = cells.cell_metrics(lab, (5, 5))
    assert m["regions"] == 4 and m["classes"] == 3
    assert cell_m["area_fraction"] == pytest.approx((121 - 33 - 8) / 121)
    frag = np.indices((11, 11)).sum(0) % 2  # checkerboard: every pixel its own region
    assert cells.cell_metrics(frag)["regions"] == 121


def test_cell_statistics(lenet, digits):
    x, y = digits
    torch.manual_seed(3)
    weak = architectures.create("lenet").eval()
    for kind in ("random", "adversarial"):
        stats = cells.cell_statistics([lenet, weak], x, y, 2, kind, extent=2.0, resolution=21,
                                      names=["trained", "untrained"])
        assert [s["name"] for s in stats] == ["trained", "untrained"]
        for s in stats:
            assert s["planes"] == kind and s["samples"] == 2 and len(s["radius"]) == 2
            assert 0 < s["area_fraction_mean"] <= 1 and s["regions_mean"] >= 1
            assert s["radius_median"] > 0
    with pytest.raises(ConfigError):
        cells.cell_statistics([lenet], x, y, 100)
    with pytest.raises(ConfigError):
        cells.cell_statistics([lenet], x, y, 2, "sideways")  # type: ignore[arg-type]
