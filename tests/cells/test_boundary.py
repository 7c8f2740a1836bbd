"""jacreg.cells.boundary: the in-plane distance to the nearest boundary, against exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacreg import cells
from tests.helpers import Affine, D, analytic_distance, halfplane_model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_distance_matches_an_analytic_linear_classifier(digits, seed):
    g = torch.Generator().manual_seed(seed)
    p = cells.random_plane(digits[0][0], seed=seed)
    w = torch.randn(4, D, generator=g) * 0.5 + 0.5 * p.u.reshape(1, -1) * torch.randn(4, 1, generator=g)
    b = torch.tensor([1.0, 0.0, 0.2, -0.4])  # the origin is class 0
    model = Affine(w, b, p.origin)
    exact = analytic_distance(model, p)
    assert 0.05 < exact < 4.0  # within the search range of extent 1
    d, angle = cells.boundary_distance(model, p, extent=1.0, return_angle=True)
    assert abs(d - exact) / exact < 0.005, (d, exact)
    with torch.no_grad():  # just past the nearest point along the angle found: another class
        pt = p.point(1.01 * d * math.cos(angle), 1.01 * d * math.sin(angle)).unsqueeze(0)
        assert int(model(pt).argmax()) != 0


def test_boundary_distance_is_inf_when_there_is_none(digits):
    p = cells.random_plane(digits[0][0], seed=0)
    flat = Affine(torch.zeros(3, D), torch.tensor([1.0, 0.0, 0.0]), p.origin)
    assert math.isinf(cells.boundary_distance(flat, p, extent=1.0))
    far = halfplane_model(p, p.u, 4.5)  # beyond 4 * extent
    assert math.isinf(cells.boundary_distance(far, p, extent=1.0))
    near = halfplane_model(p, p.u, 3.5)  # beyond the window but within 4 * extent
    assert cells.boundary_distance(near, p, extent=1.0) == pytest.approx(3.5, rel=0.005)
    cs = cells.cross_section(far, p, 1.0, 21)
    assert math.isinf(cs.boundary_distance[0]) and math.isnan(cs.boundary_angle[0])


def test_rings_just_inside_and_just_outside_the_radius(lenet, digits):
    """On a trained LeNet': a dense ring at 0.99 r is all the sample's class, one at 1.01 r is not."""
    x, y = digits
    for plane, extent in ((cells.random_plane(x[3], seed=2), 10.0),
                          (cells.adversarial_plane(x[3], int(y[3]), lenet, None), 2.0)):
        cs = cells.cross_section(lenet, plane, extent=extent, resolution=61)
        r, y0 = float(cs.boundary_distance[0]), int(cs.origin_label[0])
        assert math.isfinite(r)
        t = np.linspace(0, 2 * np.pi, 3000, endpoint=False) + 0.001
        with torch.no_grad():
            inside = lenet(plane.points(0.99 * r * np.cos(t), 0.99 * r * np.sin(t))).argmax(1)
            outside = lenet(plane.points(1.01 * r * np.cos(t), 1.01 * r * np.sin(t))).argmax(1)
        assert bool((inside == y0).all())
        assert bool((outside != y0).any())
