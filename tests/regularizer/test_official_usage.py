"""``from jacreg import JacobianReg`` as a drop-in for the official class, used as its README documents:
``JacobianReg()``, ``JacobianReg(n=3)``, ``JacobianReg(n=-1)`` (exact), ``R = reg(data, output)`` or
``reg(data, y=output)``, ``loss = loss_super + lambda_JR * R``; R = 1/2 mean_b ||J_b||_F^2 with J
taken with respect to the data given. The usage below is written from that documentation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jacreg import JacobianReg

D64 = torch.float64

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, 5)).to(D64)


def _cnn(seed: int = 0) -> nn.Module:
    """The data feeds a convolution directly (JacobianReg's faster first-layer path)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(27, 4)).to(D64)


def _exact_r(model: nn.Module, data: torch.Tensor) -> float:
    """1/2 mean_b ||J_b||_F^2 from a brute-force Jacobian of the outputs with respect to the data."""
    full = torch.autograd.functional.jacobian(model, data)  # (B, C, B, *sample)
    per_sample = [full[b, :, b].reshape(full.shape[1], -1) for b in range(data.shape[0])]
    return float(0.5 * sum(j.pow(2).sum() for j in per_sample) / data.shape[0])


def _batches(n: int, batch: int = 8, shape=(1, 6, 6), classes: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, *shape, generator=gen, dtype=D64),
             torch.randint(0, classes, (batch,), generator=gen)) for _ in range(n)]


def test_readme_training_loop_runs_unchanged():
    model = _mlp()
    criterion = nn.CrossEntropyLoss()  # supervised classification loss
    reg = JacobianReg()  # Jacobian regularization
    lambda_JR = 0.01  # hyperparameter
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    device = torch.device("cpu")
    losses = []
    for _ in range(3):
        for _idx, (data, target) in enumerate(_batches(4)):
            data, target = data.to(device), target.to(device)
            data.requires_grad = True  # this is essential!
            optimizer.zero_grad()
            output = model(data)  # forward pass
            loss_super = criterion(output, target)  # supervised loss
            R = reg(data, output)  # Jacobian regularization
            loss = loss_super + lambda_JR * R  # full loss
            loss.backward()  # computes gradients
            optimizer.step()
            assert R.dim() == 0 and math.isfinite(float(R)) and float(R) > 0
            losses.append(float(loss))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_n_minus_one_is_the_exact_value_and_keyword_y_works(make):
    model = make()
    data = _batches(1, shape=(1, 6, 6))[0][0].requires_grad_(True)
    output = model(data)
    reg_full = JacobianReg(n=-1)
    expected = _exact_r(model, data.detach())
    assert float(reg_full(data, output)) == pytest.approx(expected, rel=1e-9)
    assert float(reg_full(data, y=output)) == pytest.approx(expected, rel=1e-9)
    assert float(JacobianReg(-1)(data, output)) == pytest.approx(expected, rel=1e-9)
    assert reg_full.n == -1 and JacobianReg(n=3).n == 3 and JacobianReg().n == 1


def test_exact_value_is_differentiable_like_a_brute_force_jacobian():
    model = _cnn(1)
    data = _batches(1, shape=(1, 6, 6), seed=3)[0][0].requires_grad_(True)
    r = JacobianReg(n=-1)(data, model(data))
    grads = torch.autograd.grad(r, list(model.parameters()), allow_unused=True, materialize_grads=True)

    def r_of(params):
        def f(x):
            return torch.func.functional_call(model, params, (x,))
        full = torch.autograd.functional.jacobian(f, data.detach(), create_graph=True)
        b = data.shape[0]
        return 0.5 * sum(full[i, :, i].pow(2).sum() for i in range(b)) / b

    params = dict(model.named_parameters())
    expected = torch.autograd.grad(r_of(params), list(params.values()), allow_unused=True,
                                   materialize_grads=True)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3])
def test_projections_are_unbiased_and_follow_the_documented_random_stream(n):
    model = _cnn(2)
    data = _batches(1, shape=(1, 6, 6), seed=5)[0][0].requires_grad_(True)
    output = model(data)
    exact = _exact_r(model, data.detach())
    reg = JacobianReg(n=n)
    torch.manual_seed(0)
    values = torch.tensor([float(reg(data, output)) for _ in range(300)], dtype=D64)
    assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / math.sqrt(len(values))
    # the random directions: per projection, torch.randn(B, C) from the global generator, rows normalised
    torch.manual_seed(42)
    got = float(reg(data, output))
    torch.manual_seed(42)
    b, c = output.shape
    total = 0.0
    for _ in range(n):
        v = torch.randn(b, c, dtype=output.dtype)
        v = v / v.norm(dim=1, keepdim=True)
        (jv,) = torch.autograd.grad(output, data, v, retain_graph=True)
        total += c * float(jv.pow(2).sum()) / (n * b)
    assert got == pytest.approx(0.5 * total, rel=1e-9)
