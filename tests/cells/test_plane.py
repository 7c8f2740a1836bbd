"""jacreg.cells.plane: random, sample and adversarial planes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from jacreg import architectures, cells
from jacreg.errors import ConfigError, ShapeError
from tests.helpers import SHAPE, Affine, D


def test_random_plane_is_orthonormal_and_seeded(digits):
    x0 = digits[0][0]
    p = cells.random_plane(x0, seed=3)
    assert p.u.shape == p.v.shape == p.origin.shape == x0.shape
    assert torch.equal(p.origin, x0)
    assert abs(float(p.u.norm()) - 1) < 1e-5 and abs(float(p.v.norm()) - 1) < 1e-5
    assert abs(float((p.u * p.v).sum())) < 1e-6
    assert p.kind == "random" and p.note == ""
    same = cells.random_plane(x0.unsqueeze(0), seed=3)  # (1, C, H, W) accepted
    assert torch.equal(same.u, p.u) and torch.equal(same.v, p.v)
    other = cells.random_plane(x0, seed=4)
    assert float((other.u - p.u).abs().max()) > 0.01


def test_plane_point_and_coordinates_round_trip(digits):
    p = cells.random_plane(digits[0][0], seed=0)
    a, b = p.coordinates(p.point(0.7, -1.3))
    assert a == pytest.approx(0.7, abs=1e-4) and b == pytest.approx(-1.3, abs=1e-4)
    pts = p.points(np.array([0.7, 0.0]), np.array([-1.3, 2.0]))
    assert pts.shape == (2, *SHAPE)
    assert torch.allclose(pts[0], p.point(0.7, -1.3), atol=1e-6)


def test_plane_rejects_directions_that_are_not_orthonormal(digits):
    x0 = digits[0][0]
    u = torch.zeros(SHAPE)
    u[0, 0, 0] = 1
    with pytest.raises(ConfigError, match="orthonormal"):
        cells.Plane(x0, u, u)
    with pytest.raises(ShapeError):
        cells.Plane(x0, u, torch.zeros(3, 2, 2))


def test_sample_plane_goes_through_the_three_samples(digits):
    x = digits[0]
    p = cells.sample_plane(x[0], x[1], x[2])
    assert p.kind == "samples"
    (n1, a1, b1), (n2, a2, b2) = p.marks
    assert (n1, n2) == ("x1", "x2")
    assert a1 == pytest.approx(float((x[1] - x[0]).norm()), rel=1e-5) and abs(b1) < 1e-4
    assert b2 > 0
    assert torch.allclose(p.point(a2, b2), x[2], atol=1e-4)  # x2 lies in the plane
    assert abs(float((p.u * p.v).sum())) < 1e-6


def test_degenerate_sample_planes_raise(digits):
    x = digits[0]
    with pytest.raises(ConfigError, match="identical"):
        cells.sample_plane(x[0], x[0], x[1])
    with pytest.raises(ConfigError, match="degenerate"):
        cells.sample_plane(x[0], x[1], x[0] + 2.0 * (x[1] - x[0]))  # collinear
    with pytest.raises(ConfigError, match="degenerate"):
        cells.plane_from_directions(x[0], torch.zeros(SHAPE), torch.ones(SHAPE))
    with pytest.raises(ShapeError):
        cells.sample_plane(x[0], x[1], torch.zeros(3, 28, 28))


def test_adversarial_plane_spans_the_fgsm_directions(lenet, digits):
    x, y = digits
    torch.manual_seed(1)
    other = architectures.create("lenet").eval()  # an untrained model: another direction
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    p = cells.adversarial_plane(x[0], int(y[0]), lenet, other)
    assert p.kind == "adversarial" and p.note == ""
    ga = cells.fgsm_direction(lenet, x[0], int(y[0]))
    gb = cells.fgsm_direction(other, x[0], int(y[0]))
    assert set(torch.unique(ga).tolist()) <= {-1.0, 0.0, 1.0}
    # u is model A's sign gradient, normalised
    assert torch.allclose(p.u, ga / ga.norm(), atol=1e-6)
    # v is the part of model B's sign gradient orthogonal to u: B's direction lies in span(u, v)
    gbn = (gb / gb.norm()).reshape(-1).double()
    u, v = p.u.reshape(-1).double(), p.v.reshape(-1).double()
    resid = gbn - (gbn @ u) * u - (gbn @ v) * v
    assert float(resid.norm()) < 1e-5 and float(gbn @ v) > 0
    assert abs(float(u @ v)) < 1e-6 and abs(float(v.norm()) - 1) < 1e-6
    # moving along +u increases model A's loss (the FGSM property)
    with torch.no_grad():
        loss = [float(nn.functional.cross_entropy(lenet(p.point(t, 0).unsqueeze(0)), y[:1]))
                for t in (0.0, 0.3)]
    assert loss[1] > loss[0]
    # nothing about the models changed
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())
    assert all(prm.grad is None for prm in lenet.parameters())


def test_adversarial_plane_with_parallel_directions_warns_and_completes(lenet, digits):
    x, y = digits
    with pytest.warns(UserWarning, match="parallel"):
        p = cells.adversarial_plane(x[1], int(y[1]), lenet, lenet, seed=5)
    assert "parallel" in p.note
    assert abs(float((p.u * p.v).sum())) < 1e-6 and abs(float(p.v.norm()) - 1) < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = cells.adversarial_plane(x[1], int(y[1]), lenet, None, seed=5)  # one model: no warning
    assert "random" in q.note and torch.allclose(q.u, p.u)


def test_adversarial_plane_without_any_gradient_is_an_error(digits):
    x, y = digits
    flat = Affine(torch.zeros(10, D), torch.arange(10.0), x[0])  # constant logits: zero gradient
    with pytest.raises(ConfigError, match="gradient"):
        cells.adversarial_plane(x[0], int(y[0]), flat, flat)
