"""The circle of jacreg.cells.cross_section on an nn.Linear classifier, against the exact distance; its
evaluation budget; stopping it from the progress callback."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jacreg import cells
from jacreg.events import Stopped


def _linear(seed: int, scale: float = 0.2) -> nn.Sequential:
    """nn.Linear on flattened digits, each class's weight row of norm ``scale``."""
    torch.manual_seed(seed)
    fc = nn.Linear(28 * 28, 10)
    with torch.no_grad():
        fc.weight.mul_(scale / fc.weight.norm(dim=1, keepdim=True))
    return nn.Sequential(nn.Flatten(), fc).eval()


def _exact(net: nn.Sequential, plane: cells.Plane) -> float:
    """In-plane distance from the origin to the nearest point of another class: the origin's cell of an
    affine classifier is the convex polygon {z_y0 >= z_k for all k}, so it is the nearest of its edges,
    min over k of (z_y0 - z_k) / ||in-plane gradient of z_k - z_y0||."""
    fc = net[1]
    assert isinstance(fc, nn.Linear)
    w, b = fc.weight.detach().double(), fc.bias.detach().double()
    z = w @ plane.origin.reshape(-1).double() + b
    y0 = int(z.argmax())
    basis = torch.stack([plane.u.reshape(-1), plane.v.reshape(-1)]).double()
    g = (w - w[y0]) @ basis.T                                  # (10, 2) in-plane gradients of z_k - z_y0
    gap, norm = (z[y0] - z), g.norm(dim=1)
    return min(float(gap[k] / norm[k]) for k in range(10) if k != y0 and norm[k] > 0)


@pytest.mark.parametrize("seed, window", [(0, 2.0), (1, 2.0), (2, 0.4)])
def test_circle_of_a_linear_model_is_the_exact_distance(digits, seed, window):
    """window: the extent in units of the exact radius (0.4: the boundary lies beyond the window, found by
    the search outside it)."""
    net = _linear(seed)
    plane = cells.random_plane(digits[0][seed], seed=seed)
    exact = _exact(net, plane)
    assert 0.01 < exact < 100
    cs = cells.cross_section(net, plane, extent=window * exact, resolution=41, circle_budget=None)
    assert cs.boundary_distance[0] == pytest.approx(exact, rel=0.005)
    assert cs.predicted_distance[0] == pytest.approx(exact, rel=1e-3)    # linearisation is exact here


def test_a_circle_budget_too_small_gives_inf_and_how_far_it_searched(digits):
    net = _linear(3)
    plane = cells.random_plane(digits[0][3], seed=3)
    exact = _exact(net, plane)
    extent = exact / 3                                         # the boundary is outside the window
    cs = cells.cross_section(net, plane, extent=extent, resolution=21, circle_budget=1e-9)
    assert math.isinf(cs.boundary_distance[0]) and math.isnan(cs.boundary_angle[0])
    assert 0 < cs.boundary_searched[0] < exact                 # a lower bound of the true radius
    full = cells.cross_section(net, plane, extent=extent, resolution=21, circle_budget=None)
    assert full.boundary_distance[0] == pytest.approx(exact, rel=0.005)
    assert full.boundary_evaluations[0] > cs.boundary_evaluations[0]


@pytest.mark.parametrize("stage", ["map", "boundary"])
def test_a_progress_callback_returning_false_stops_it(digits, stage):
    net = _linear(4)
    plane = cells.random_plane(digits[0][4], seed=4)
    seen = []

    def on_event(ev: dict) -> bool:
        seen.append(ev["stage"])
        return ev["stage"] != stage

    with pytest.raises(Stopped):
        cells.cross_section(net, plane, extent=1.0, resolution=21, on_event=on_event)
    assert seen[-1] == stage and seen.count(stage) == 1


def test_radius_label_says_how_far_an_unfound_boundary_was_searched():
    assert cells.radius_label(2.4913, 2.4913) == "2.49"
    assert cells.radius_label(2.4913, 2.4913, ".2f") == "2.49"
    assert cells.radius_label(math.inf, 5.8612) == "> 5.86"  # the budget ended the search here
    assert cells.radius_label(math.inf, 0.0) is None  # nothing searched: no bound to state
