"""Jacobian regularizer: every estimator against a brute-force Jacobian, unbiasedness (value and
parameter gradient), dropout consistency, dtypes, errors, and exact per-sample norms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacreg.architectures import Normalized, create, split_normalization
from jacreg.errors import ConfigError, ShapeError
from jacreg.regularizer import JacobianReg, forward_mode, jacobian_norms, jacobian_penalty, traced

D64 = torch.float64

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread (two threads spin-wait for each other when other work shares the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


pytestmark = [
    pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),  # torch.func import
]


# ---------------------------------------------------------------------------------------------
# tiny models and the brute-force reference
# ---------------------------------------------------------------------------------------------


def _conv_body(classes: int = 5) -> nn.Module:
    """conv -> tanh -> max-pool -> linear: the layer types of LeNet', 8x8 single-channel input."""
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 6), nn.Tanh(), nn.Linear(6, classes))


class _Residual(nn.Module):
    """Functional calls, a residual add, batch norm, ReLU, average pooling, x.view(x.size(0), -1),
    and an ELU (no dedicated forward-mode rule: the generic one)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.act = nn.ELU()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = h + 0.5 * torch.sigmoid(self.conv2(h))
        h = self.pool(h)
        return self.fc(self.act(h.view(h.size(0), -1)))


def _lenet_like(seed: int = 0) -> Normalized:
    torch.manual_seed(seed)
    return Normalized(_conv_body(), mean=(0.3,), std=(0.4,)).to(D64).eval()


def _brute_jacobians(fn, z: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians (B, C, D) from torch.autograd.functional.jacobian (cross terms dropped)."""
    full = torch.autograd.functional.jacobian(fn, z)  # (B, C, B, *sample)
    b = z.shape[0]
    return torch.stack([full[i, :, i].reshape(full.shape[1], -1) for i in range(b)])


def _brute_r(fn, z: torch.Tensor) -> float:
    return float(0.5 * _brute_jacobians(fn, z).pow(2).sum() / z.shape[0])


def _param_grad(model: nn.Module, r: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(r, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads])


# ---------------------------------------------------------------------------------------------
# exact values
# ---------------------------------------------------------------------------------------------


def test_exact_penalty_equals_brute_force_wrt_normalised_input():
    model = _lenet_like()
    x = torch.rand(4, 1, 8, 8, dtype=D64)
    normalize, body = split_normalization(model)
    expected = _brute_r(body, normalize(x))
    for kwargs in ({"n_proj": 0}, {"n_proj": 0, "method": "vjp"}, {"n_proj": 3, "method": "exact"},
                   {"n_proj": 0, "method": "jvp"}):
        logits, r = jacobian_penalty(model, x, **kwargs)
        assert r.dtype == D64
        assert abs(float(r) - expected) <= 1e-5 * max(1.0, expected), kwargs
        torch.testing.assert_close(logits, model(x))


def test_jacobian_reg_exact_is_wrt_given_x():
    model = _lenet_like()
    x = torch.rand(3, 1, 8, 8, dtype=D64, requires_grad=True)
    r = JacobianReg(n_proj=0)(x, model(x))
    assert abs(float(r) - _brute_r(model, x.detach())) <= 1e-5
    # J w.r.t. the [0, 1] pixels is the normalised-input Jacobian divided by std.
    _, r_norm = jacobian_penalty(model, x.detach(), n_proj=0)
    std = float(model.std.flatten()[0])  # 0.4 as stored (float32 buffer)
    assert float(r) == pytest.approx(float(r_norm) / std**2, rel=1e-9)


def test_single_class_projection_is_exact_and_n_proj_averages():
    """With C = 1 the sphere is {-1, +1}: every projection gives ||J||^2 exactly, so averaging n
    projections must give it too (a sum, as in the official PR #5, would give n times it)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)).to(D64)
    x = torch.randn(5, 2, 3, dtype=D64)
    expected = _brute_r(model, x)
    xg = x.clone().requires_grad_(True)
    for n in (1, 3):
        assert float(JacobianReg(n)(xg, model(xg))) == pytest.approx(expected, rel=1e-9)
        _, r = jacobian_penalty(model, x, n_proj=n, method="vjp")
        assert float(r) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_mode_tangents_are_exact(k, mode):
    """J u from the traced forward-mode evaluator and from torch's forward AD equal the brute-force J u."""
    torch.manual_seed(2)
    cases = [(_conv_body().to(D64), torch.randn(3, 1, 8, 8, dtype=D64)),
             (_Residual().to(D64), torch.randn(3, 2, 5, 5, dtype=D64))]
    for body, z in cases:
        getattr(body, mode)()
        u = torch.randn(k, *z.shape, dtype=D64)
        if mode == "train":  # batch norm with batch statistics couples the samples: use the full J
            full = torch.autograd.functional.jacobian(body, z).reshape(z.shape[0], -1, z.numel())
            expected = torch.einsum("bcd,kd->kbc", full, u.reshape(k, -1))
        else:
            jac = _brute_jacobians(body, z)
            expected = torch.einsum("bcd,kbd->kbc", jac, u.reshape(k, z.shape[0], -1))
        assert traced.program_for(body, "forward", forward_mode._DualProgram) is not None
        logits, tan = forward_mode.jvp_forward(body, z, u)
        torch.testing.assert_close(tan, expected, rtol=1e-9, atol=1e-12)
        if mode == "eval":
            torch.testing.assert_close(logits, body(z), rtol=1e-12, atol=1e-12)
        if mode == "eval" or k == 1:  # torch.func cannot vmap over in-place running-statistics updates
            _, tan = forward_mode.jvp_generic(body, z, u)
            torch.testing.assert_close(tan, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_forward_mode_parameter_gradients_match_torch(k):
    """The evaluator's fused backward rules give the same parameter gradient of ||J u||^2 (and of
    the logits) as torch's own forward mode, for fixed tangents u."""
    torch.manual_seed(7)
    cases = [(_conv_body().to(D64), torch.randn(3, 1, 8, 8, dtype=D64)),
             (_Residual().to(D64).eval(), torch.randn(3, 2, 5, 5, dtype=D64))]
    for body, z in cases:
        u = torch.randn(k, *z.shape, dtype=D64)
        w = torch.randn(z.shape[0], 5 if isinstance(body, nn.Sequential) else 3, dtype=D64)
        grads = []
        for fn in (forward_mode.jvp_forward, forward_mode.jvp_generic):
            logits, tan = fn(body, z, u)
            grads.append(_param_grad(body, tan.pow(2).sum() + (w * logits).sum()))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_models_the_tracer_does_not_take_still_work():
    """Hooks (and other untraceable networks) go through torch's forward AD; values stay exact."""
    body = _conv_body().to(D64).eval()
    body.register_forward_hook(lambda m, i, o: None)
    assert traced.program_for(body, "forward", forward_mode._DualProgram) is None
    x = torch.rand(3, 1, 8, 8, dtype=D64)
    u = torch.randn(1, *x.shape, dtype=D64)
    _, tan = forward_mode.jvp_forward(body, x, u)
    expected = torch.einsum("bcd,bd->bc", _brute_jacobians(body, x), u[0].reshape(3, -1))
    torch.testing.assert_close(tan[0], expected)


def test_forward_mode_follows_changes_to_the_network():
    torch.manual_seed(8)
    body = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(D64)
    z, u = torch.randn(3, 4, dtype=D64), torch.randn(1, 3, 4, dtype=D64)
    forward_mode.jvp_forward(body, z, u)
    body.append(nn.Tanh())  # a layer added after the first call
    body.register_forward_hook(lambda m, i, o: o * 3.0)  # and a hook that changes the output
    logits, tan = forward_mode.jvp_forward(body, z, u)
    torch.testing.assert_close(logits, body(z))
    expected = torch.einsum("bcd,bd->bc", _brute_jacobians(body, z), u[0])
    torch.testing.assert_close(tan[0], expected)


def test_auto_falls_back_to_reverse_mode_without_forward_ad():
    class Square(torch.autograd.Function):  # no jvp, no setup_context: forward mode is impossible
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 2 * a * g

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, z):
            if z.sum() > 1e9:  # data-dependent branch: not traceable, so torch's forward AD is used
                z = z * 2
            return self.fc(Square.apply(z))

    net = Net().to(D64)
    x = torch.randn(3, 4, dtype=D64)
    with pytest.raises(ConfigError, match="vjp"):
        jacobian_penalty(net, x, method="jvp")
    _, r = jacobian_penalty(net, x, method="auto")  # C = 1: the vjp estimate is exact
    assert float(r) == pytest.approx(_brute_r(net, x), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# unbiasedness: value and parameter gradient
# ---------------------------------------------------------------------------------------------


def _draws(model, x, method, n_proj, count, seed):
    gen = torch.Generator().manual_seed(seed)
    values, grads = [], []
    for _ in range(count):
        _, r = jacobian_penalty(model, x, n_proj=n_proj, method=method, generator=gen)
        values.append(r.detach())
        grads.append(_param_grad(model, r))
    return torch.stack(values), torch.stack(grads)


@pytest.mark.parametrize("method,n_proj", [("vjp", 1), ("vjp", 3), ("jvp", 1), ("jvp", 3)])
def test_estimators_are_unbiased_in_value_and_gradient(method, n_proj):
    model = _lenet_like(seed=3)
    x = torch.rand(4, 1, 8, 8, dtype=D64)
    _, r_exact = jacobian_penalty(model, x, n_proj=0)
    g_exact = _param_grad(model, r_exact)
    count = 600
    values, grads = _draws(model, x, method, n_proj, count, seed=10 + n_proj)
    se = values.std() / math.sqrt(count)
    assert abs(float(values.mean() - r_exact)) < 4 * float(se), (float(values.mean()), float(r_exact))
    g_mean, g_se = grads.mean(0), grads.std(0) / math.sqrt(count)
    random = g_se > 1e-12 * (1 + g_exact.abs())
    z_scores = (g_mean - g_exact)[random] / g_se[random]
    assert random.sum() > 50
    assert z_scores.abs().max() < 5.0, float(z_scores.abs().max())
    # coordinates without spread (e.g. the last bias, which J does not depend on) must be exact
    torch.testing.assert_close(g_mean[~random], g_exact[~random])
    # the n_proj estimates are averaged: the spread shrinks with n_proj, the mean does not move
    assert float(values.std()) < 2.0 * float(r_exact) / math.sqrt(n_proj)


def test_jacobian_reg_module_is_unbiased():
    model = _lenet_like(seed=4)
    x = torch.rand(3, 1, 8, 8, dtype=D64, requires_grad=True)
    exact = float(JacobianReg(0)(x, model(x)))
    gen = torch.Generator().manual_seed(0)
    reg = JacobianReg(n_proj=2, generator=gen)
    values = torch.stack([reg(x, model(x)).detach() for _ in range(400)])
    assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / 20


# ---------------------------------------------------------------------------------------------
# dropout: one forward pass, one mask
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "vjp", "jvp"])
def test_dropout_mask_is_shared_by_logits_and_jacobian(method):
    """Dropout as the last layer: logits = m * (W z + b), so the mask m is read off the logits and
    J_b = diag(m_b) W. Checked on R for exact and for vjp with C = 1 (where it is exact), and on the
    tangents J u for forward mode (the function jacobian_penalty's jvp uses)."""
    torch.manual_seed(5)
    classes = 1 if method == "vjp" else 4
    body = nn.Sequential(nn.Linear(6, classes), nn.Dropout(0.5)).to(D64).train()
    x = torch.randn(32, 6, dtype=D64)
    weight = body[0].weight.detach()
    if method == "jvp":
        for k in (1, 2):
            u = torch.randn(k, *x.shape, dtype=D64)
            logits, tan = forward_mode.jvp_forward(body, x, u)
            mask = (logits != 0).to(D64) * 2.0
            assert 0 < float((mask == 0).sum()) < mask.numel()
            torch.testing.assert_close(tan, mask * (u @ weight.T))
        return
    logits, r = jacobian_penalty(body, x, n_proj=1 if method != "exact" else 0, method=method)
    mask = (logits != 0).to(D64) * 2.0
    assert 0 < float((mask == 0).sum()) < mask.numel()
    expected = 0.5 * float((mask.pow(2) @ weight.pow(2).sum(1)).sum()) / x.shape[0]
    assert float(r) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", ["auto", "vjp", "jvp", "exact"])
def test_lenet_trains_in_train_mode_with_dropout(method):
    model = create("lenet", dropout=0.5).train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logits, r = jacobian_penalty(model, x, n_proj=1 if method != "exact" else 0, method=method)
    assert logits.shape == (8, 10) and r.dim() == 0 and float(r) > 0 and math.isfinite(float(r))
    (F.cross_entropy(logits, y) + 0.01 * r).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.training is True
    # the JR term alone reaches the first layer (through J)
    model.zero_grad()
    _, r = jacobian_penalty(model.eval(), x, n_proj=1, method=method)
    r.backward()
    assert float(model.body.features[0].weight.grad.abs().sum()) > 0
    # LeNet' takes the fast forward-mode path
    assert traced.program_for(model.body, "forward", forward_mode._DualProgram) is not None


def test_distributed_data_parallel_model(tmp_path):
    """DDP (gloo, one process): every method trains over several steps (DDP rebuilds its gradient
    buckets on the second forward, which torch.func transforms must not see)."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(9)
        inner = create("lenet", dropout=0.5)
        model = nn.parallel.DistributedDataParallel(inner)
        x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
        for _ in range(2):
            for n_proj, method in ((1, "auto"), (3, "auto"), (3, "vjp"), (0, "exact")):
                model.zero_grad()
                logits, r = jacobian_penalty(model, x, n_proj=n_proj, method=method)
                (F.cross_entropy(logits, y) + r).backward()
                grad = inner.body.features[0].weight.grad
                assert grad is not None and torch.isfinite(grad).all() and float(r) > 0
        norms = jacobian_norms(model.eval(), x, normalized=True)
        torch.testing.assert_close(norms, jacobian_norms(inner, x, normalized=True))
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# dtype, device, generator, errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["vjp", "jvp", "exact"])
def test_result_follows_input_dtype_and_device(dtype, method):
    model = _lenet_like().to(dtype)
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    logits, r = jacobian_penalty(model, x, method=method)
    assert r.dtype == dtype and logits.dtype == dtype and r.device == x.device
    xg = x.clone().requires_grad_(True)
    assert JacobianReg(1)(xg, model(xg)).dtype == dtype
    assert jacobian_norms(model, x).dtype == dtype


@pytest.mark.parametrize("method", ["vjp", "jvp"])
def test_seeded_generator_reproduces(method):
    model = _lenet_like()
    x = torch.rand(3, 1, 8, 8, dtype=D64)
    runs = [float(jacobian_penalty(model, x, 2, method, torch.Generator().manual_seed(s))[1])
            for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    xg = x.clone().requires_grad_(True)
    a = JacobianReg(1, generator=torch.Generator().manual_seed(3))(xg, model(xg))
    b = JacobianReg(1)(xg, model(xg), generator=torch.Generator().manual_seed(3))
    assert float(a) == float(b)


def test_shape_and_config_errors():
    model = _lenet_like()
    x = torch.rand(3, 1, 8, 8, dtype=D64, requires_grad=True)
    logits = model(x)
    reg = JacobianReg(1)
    with pytest.raises(ShapeError, match=r"\(B, C\)"):
        reg(x, logits.reshape(-1))
    with pytest.raises(ShapeError, match=r"\(B, C\)"):
        reg(x, logits.unsqueeze(-1))
    with pytest.raises(ShapeError, match="rows"):
        reg(x, logits[:2])
    with pytest.raises(ShapeError, match="requires_grad_"):
        reg(x.detach(), model(x.detach()))
    with pytest.raises(ShapeError, match="depend"):
        xd = x.detach().requires_grad_(True)
        reg(xd, model(x))
    for bad in (-2, 1.5, "1", True):
        with pytest.raises(ConfigError):
            JacobianReg(bad)
        with pytest.raises(ConfigError):
            JacobianReg(n=bad)
        with pytest.raises(ConfigError):
            jacobian_penalty(model, x.detach(), n_proj=bad)
    with pytest.raises(ConfigError):
        jacobian_penalty(model, x.detach(), n_proj=-1)  # -1 = exact is the official class's spelling only
    with pytest.raises(ConfigError, match="one of them"):
        JacobianReg(2, n=3)
    with pytest.raises(ConfigError, match="logits once"):
        reg(x)
    with pytest.raises(ConfigError, match="logits once"):
        reg(x, logits, logits=logits)
    with pytest.raises(ConfigError, match="method"):
        jacobian_penalty(model, x.detach(), method="forward")
    three_d = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Unflatten(1, (2, 3))).to(D64)
    for method in ("vjp", "jvp", "exact", "auto"):
        with pytest.raises(ShapeError, match=r"\(B, C\)"):
            jacobian_penalty(three_d, x.detach(), method=method)
    with pytest.raises(ShapeError, match=r"\(B, C\)"):
        jacobian_norms(three_d, x.detach())
    with pytest.raises(ShapeError, match="batch"):
        jacobian_penalty(model, torch.rand(8, dtype=D64))
    with pytest.raises(ShapeError, match="floating"):
        jacobian_norms(model, torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ConfigError, match="batch_size"):
        jacobian_norms(model, x.detach(), batch_size=0)


# ---------------------------------------------------------------------------------------------
# jacobian_norms
# ---------------------------------------------------------------------------------------------


def test_jacobian_norms_exact_with_and_without_grad_mode():
    model = _lenet_like()
    model.body[0].bias.requires_grad_(False)
    x = torch.rand(5, 1, 8, 8, dtype=D64)
    expected = _brute_jacobians(model, x).pow(2).sum((1, 2)).sqrt()
    with_grad = jacobian_norms(model, x)
    with torch.no_grad():
        without = jacobian_norms(model, x, batch_size=2)
    torch.testing.assert_close(with_grad, expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(without, with_grad, rtol=1e-12, atol=0)
    assert not with_grad.requires_grad and not without.requires_grad and with_grad.shape == (5,)
    assert model.training is False
    assert model.body[0].bias.requires_grad is False and model.body[0].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
    model.train()
    jacobian_norms(model, x)
    assert model.training is True


def test_jacobian_norms_normalized_is_the_body_at_normalised_input():
    model = _lenet_like()
    x = torch.rand(4, 1, 8, 8, dtype=D64)
    normalize, body = split_normalization(model)
    normed = jacobian_norms(model, x, normalized=True)
    torch.testing.assert_close(normed, jacobian_norms(body, normalize(x)))
    torch.testing.assert_close(normed, _brute_jacobians(body, normalize(x)).pow(2).sum((1, 2)).sqrt())
    std = float(model.std.flatten()[0])
    torch.testing.assert_close(jacobian_norms(model, x), normed / std)  # d z / d x = 1 / std
    # the penalty's exact value is the same quantity
    _, r = jacobian_penalty(model, x, n_proj=0)
    assert float(r) == pytest.approx(0.5 * float(normed.pow(2).mean()), rel=1e-9)


def test_jacobian_norms_with_train_mode_batch_norm():
    """torch.func cannot transform in-place running-statistics updates: autograd is used instead."""
    torch.manual_seed(6)
    body = _Residual().to(D64).train()
    x = torch.randn(3, 2, 5, 5, dtype=D64)
    norms = jacobian_norms(body, x)
    assert norms.shape == (3,) and torch.isfinite(norms).all()
    _, r = jacobian_penalty(body, x, n_proj=0)
    assert float(r) == pytest.approx(0.5 * float(norms.pow(2).mean()), rel=1e-9)
