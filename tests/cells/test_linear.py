"""jacreg.cells.linear: the cell radius the linearised logits predict, exact for a linear model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from jacreg import architectures, cells
from jacreg.cells.linear import in_plane_jacobian, linear_prediction
from jacreg.data import load_dataset
from jacreg.errors import ConfigError, ShapeError
from tests.helpers import Affine, analytic_distance, quick_lenet


@pytest.fixture(scope="module")
def softmax_regression() -> nn.Module:
    """A linear classifier (multinomial logistic regression) trained 2 epochs on mnist-5k."""
    torch.manual_seed(0)
    x, y = load_dataset("mnist-5k", split="train")
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        for i in range(0, len(x), 100):
            loss = nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_exact_for_an_affine_model(digits):
    torch.manual_seed(0)
    x, _ = digits
    model = Affine(0.05 * torch.randn(10, 28 * 28), torch.randn(10), x[0])
    for seed in range(4):
        plane = cells.random_plane(x[0], seed=seed)
        pred = cells.predicted_distance(model, plane)
        assert pred.distance == pytest.approx(analytic_distance(model, plane), rel=1e-5)
        assert pred.label == int(torch.argmax(model.b)) and pred.rival != pred.label
        # the nearest point of the linearised boundary lies on it: there the two logits tie
        a, b = pred.distance * math.cos(pred.angle), pred.distance * math.sin(pred.angle)
        with torch.no_grad():
            z = model(plane.point(a, b).unsqueeze(0))[0].double()
        assert float(z[pred.label] - z[pred.rival]) == pytest.approx(0.0, abs=1e-4)


def test_equals_the_measured_circle_on_a_linear_model(softmax_regression):
    """On a linear model the prediction equals the measured circle within 2% (10 digits, random planes)."""
    x, _ = load_dataset("mnist-5k", split="test", limit=10)
    ratios = []
    for k in range(10):
        plane = cells.random_plane(x[k], seed=k)
        pred = cells.predicted_distance(softmax_regression, plane).distance
        meas = cells.boundary_distance(softmax_regression, plane, extent=pred / 2)
        ratios.append(pred / meas)
    assert np.allclose(ratios, 1.0, atol=0.02), ratios


@pytest.mark.slow
def test_within_3x_of_the_measured_circle_on_a_plain_lenet():
    """LeNet' trained 3 epochs on mnist-5k: within 3x of the measured radius on >= 7 of 10 digits."""
    net = quick_lenet(0, epochs=3)
    x, _ = load_dataset("mnist-5k", split="test", limit=10)
    ratios = []
    for k in range(10):
        plane = cells.random_plane(x[k], seed=k)
        measured = cells.boundary_distance(net, plane, 10.0, n_directions=60)  # 3x: 60 rays suffice
        ratios.append(cells.predicted_distance(net, plane).distance / measured)
    r = np.array(ratios)
    assert int(((r >= 1 / 3) & (r <= 3)).sum()) >= 7, r


def test_forward_and_reverse_mode_agree(lenet, digits):
    # Off the data's exact ties (max-pooling over equal background values is not differentiable
    # there), so that a finite difference checks the derivative.
    noisy = digits[0][2] + 0.01 * torch.randn(digits[0][2].shape, generator=torch.Generator().manual_seed(0))
    plane = cells.random_plane(noisy, seed=5)
    zf, gf = in_plane_jacobian(lenet, plane, mode="forward")
    zr, gr = in_plane_jacobian(lenet, plane, mode="reverse")
    assert gf.shape == gr.shape == (10, 2) and gf.dtype == torch.float64
    torch.testing.assert_close(zf, zr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-6)
    # J u against a finite difference along u
    eps = 1e-3
    with torch.no_grad():
        up = lenet(plane.point(eps, 0).unsqueeze(0))[0].double()
        dn = lenet(plane.point(-eps, 0).unsqueeze(0))[0].double()
    torch.testing.assert_close((up - dn) / (2 * eps), gf[:, 0], rtol=2e-2, atol=1e-3)


def test_flat_logits_predict_no_boundary_and_bad_input_is_refused(digits):
    plane = cells.random_plane(digits[0][0], seed=0)
    flat = linear_prediction(torch.tensor([1.0, 0.0, -1.0]), torch.zeros(3, 2))
    assert math.isinf(flat.distance) and math.isnan(flat.angle) and flat.rival == -1
    tie = linear_prediction(torch.tensor([1.0, 1.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert tie.distance == 0.0
    with pytest.raises(ConfigError, match="mode"):
        in_plane_jacobian(architectures.create("lenet"), plane, mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="cannot take inputs"):
        cells.predicted_distance(architectures.create("lenet", input_shape=(3, 32, 32)), plane)


def test_cross_section_carries_the_prediction(lenet, digits):
    plane = cells.random_plane(digits[0][1], seed=3)
    cs = cells.cross_section(lenet, plane, extent=4.0, resolution=31)
    expect = cells.predicted_distance(lenet, plane).distance
    assert cs.predicted_distance.shape == (1,)
    assert cs.predicted_distance[0] == pytest.approx(expect, rel=1e-6)
    assert cs.metrics(0)["predicted_radius"] == pytest.approx(expect, rel=1e-6)
    off = cells.cross_section(lenet, plane, extent=4.0, resolution=31, predict=False, boundary=False)
    assert np.isnan(off.predicted_distance).all()
