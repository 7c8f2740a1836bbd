"""jacreg.robustness.minimal: the full-space distance to the nearest adversarial example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jacreg import cells
from jacreg.errors import ConfigError
from tests.helpers import SHAPE, Affine, D


def test_minimal_adversarial_distance_against_a_hyperplane(digits):
    """Full space: the nearest point of the other class is at |margin| / ||w|| (inside [0, 1])."""
    x0 = torch.full(SHAPE, 0.5)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g)
    w = w / w.norm()
    model = Affine(torch.stack([torch.zeros(D), 10 * w]), torch.tensor([0.0, -10 * 0.8]), x0).eval()
    exact = 0.8  # class 1 where (x - x0) . w > 0.8; max |w_i| * 0.8 < 0.5 keeps the point in the box
    assert float(w.abs().max()) * 0.8 < 0.5
    d_fmn = cells.minimal_adversarial_distance(model, x0, attack="fmn", steps=50)
    d_df = cells.minimal_adversarial_distance(model, x0, attack="deepfool")
    assert exact * 0.999 <= d_fmn <= exact * 1.01
    assert exact * 0.999 <= d_df <= exact * 1.05 and d_fmn <= d_df
    both = cells.minimal_adversarial_distance(model, torch.stack([x0, x0]), attack="fmn", steps=20)
    assert both.shape == (2,) and np.allclose(both, d_fmn, rtol=0.01)
    p = cells.random_plane(x0, seed=0)  # a 2-D slice is never nearer than the full space
    assert cells.boundary_distance(model, p, extent=10.0) >= exact * 0.995
    with pytest.raises(ConfigError):
        cells.minimal_adversarial_distance(model, x0, attack="pgd")  # type: ignore[arg-type]
