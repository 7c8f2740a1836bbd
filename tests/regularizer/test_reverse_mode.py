"""The reverse-mode tape (v^T J and its parameter gradient against autograd's double backward), the
convolution kernels, JacobianReg's first-convolution path, and the choice ``method="auto"`` makes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jacreg.architectures import Normalized, create
from jacreg.regularizer import (
    autograd_rows,
    forward_mode,
    jacobian_penalty,
    kernels,
    method_choice,
    resolve_method,
    reverse_mode,
)

D64 = torch.float64

pytestmark = [
    pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Functional(nn.Module):
    """F.relu + F.max_pool2d (fused), a sigmoid, x.view(x.size(0), -1), a python scale, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, stride=1)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        h = h + 0.5 * torch.sigmoid(self.conv2(h))
        return self.fc(h.view(h.size(0), -1) / 2.0)


class _Block(nn.Module):
    """Batch norm, an in-place ReLU, a strided convolution with a downsampling branch, an ELU
    (generic rule), adaptive average pooling to 1x1, torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.down = nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
        self.act = nn.ELU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        out += self.down(x)  # as torchvision's residual blocks
        return self.fc(torch.flatten(self.pool(self.act(self.relu(out))), 1))


def _tanh_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 5), nn.Sigmoid(), nn.Linear(5, 4))


def _reference(body: nn.Module, z: torch.Tensor, v: torch.Tensor):
    """Rows v_k^T J and the parameter gradient of a test loss, with autograd's double backward."""
    zz = z.clone().requires_grad_(True)
    logits = body(zz)
    rows = torch.stack([torch.autograd.grad(logits, zz, c, retain_graph=True, create_graph=True)[0]
                        for c in v])
    return logits, rows


def _loss(logits, rows, w):
    return rows.pow(2).sum() + (w * logits).sum()


def _grads(body, loss):
    return torch.autograd.grad(loss, list(body.parameters()), allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("make,shape", [(_tanh_net, (3, 2, 6, 6)), (_Functional, (3, 2, 6, 6)),
                                        (_Block, (4, 2, 6, 6))])
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("k", [1, 3])
def test_tape_rows_and_parameter_gradients_match_autograd(make, shape, mode, k):
    torch.manual_seed(0)
    body = make().to(D64)
    getattr(body, mode)()
    z = torch.randn(*shape, dtype=D64)
    state = {n: b.clone() for n, b in body.named_buffers()}
    tape = reverse_mode.tape_for(body, z)
    assert tape is not None
    logits = tape.logits
    v = torch.randn(k, shape[0], logits.shape[1], dtype=D64)
    rows = tape.rows(v)
    w = torch.randn_like(logits)
    got = _grads(body, _loss(logits, rows, w))
    body.load_state_dict(state, strict=False)  # the same batch-norm statistics for the reference
    ref_logits, ref_rows = _reference(body, z, v)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rows, ref_rows, rtol=1e-9, atol=1e-12)
    for a, b in zip(got, _grads(body, _loss(ref_logits, ref_rows, w)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


def test_resnet18_tape_matches_autograd():
    torch.manual_seed(1)
    model = create("resnet18", num_classes=4, input_shape=(3, 32, 32)).to(D64).train()
    body, z = model.body, torch.randn(2, 3, 32, 32, dtype=D64)
    state = {n: b.clone() for n, b in body.named_buffers()}
    tape = reverse_mode.tape_for(body, z)
    assert tape is not None
    v = torch.randn(1, 2, 4, dtype=D64)
    rows = tape.rows(v)
    got = _grads(body, rows.pow(2).sum())
    body.load_state_dict(state, strict=False)
    _, ref_rows = _reference(body, z, v)
    torch.testing.assert_close(rows, ref_rows, rtol=1e-8, atol=1e-11)
    for a, b in zip(got, _grads(body, ref_rows.pow(2).sum()), strict=True):
        assert float((a - b).abs().max()) <= 1e-9 * float(b.abs().max())  # rounding, relative to the scale


def test_forward_mode_fuses_the_activation_before_pooling_exactly():
    torch.manual_seed(2)
    for body in (_tanh_net().to(D64), _Functional().to(D64)):
        z = torch.randn(3, 2, 6, 6, dtype=D64)
        u = torch.randn(2, *z.shape, dtype=D64)
        logits, tan = forward_mode.jvp_forward(body, z, u)
        _, expected = forward_mode.jvp_generic(body, z, u)
        torch.testing.assert_close(tan, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(logits, body(z), rtol=1e-12, atol=1e-12)


def test_pooled_ties_pick_the_same_element_as_the_model():
    """Constant regions (MNIST's background) tie inside every window: pooling before the activation
    must pick the first element, as max-pooling the activations does."""
    torch.manual_seed(3)
    body = _tanh_net().to(D64)
    z = torch.zeros(2, 2, 6, 6, dtype=D64)
    z[1, :, :3, :3] = torch.randn(2, 3, 3, dtype=D64)
    tape = reverse_mode.tape_for(body, z)
    v = torch.randn(1, 2, 4, dtype=D64)
    torch.testing.assert_close(tape.rows(v), _reference(body, z, v)[1], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 1)])
def test_kernel_alternatives_compute_the_same_maps(stride, padding, dilation):
    torch.manual_seed(4)
    x = torch.randn(3, 2, 9, 8, dtype=D64)
    w = torch.randn(4, 2, 3, 3, dtype=D64)
    g = torch.randn_like(F.conv2d(x, w, None, stride, padding, dilation))
    conf = ((stride,) * 2, (padding,) * 2, (dilation,) * 2)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(g, x, w, None, *conf, False, [0, 0], 1,
                                                          [True, True, False])
    torch.testing.assert_close(kernels._wgrad_swapped(x, g, w, *conf), ref_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernels._input_grad_onednn(g, w, (9, 8), *conf, 1), ref_x, rtol=1e-12,
                               atol=1e-12)
    if stride == 1 and dilation == 1 and kernels._nnpack():
        nn_x = kernels._input_grad_nnpack(g.float(), w.float(), conf[1])
        torch.testing.assert_close(nn_x.double(), ref_x, rtol=1e-4, atol=1e-4)
    # the differentiable wrappers, twice, on a smaller problem
    xs = x[:2, :, :6, :5].clone().requires_grad_(True)
    ws = w[:2].clone().requires_grad_(True)
    b = torch.randn(2, dtype=D64, requires_grad=True)
    conv = (stride, padding, dilation)
    gs = torch.randn_like(F.conv2d(xs, ws, None, *conv)).requires_grad_(True)
    torch.autograd.gradgradcheck(lambda a, k, c: kernels.conv2d(a, k, c, *conv), (xs, ws, b))
    torch.autograd.gradgradcheck(lambda a, k: kernels.conv2d_input_grad(a, k, (6, 5), *conv), (gs, ws))


def test_kernels_are_timed_per_shape_and_can_be_switched_off():
    torch.manual_seed(5)
    g = torch.randn(24, 6, 28, 28)  # large enough to be timed
    w = torch.randn(6, 1, 5, 5)
    expected = F.conv_transpose2d(g, w, padding=2)
    got = kernels.conv2d_input_grad(g, w, (28, 28), 1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if kernels._nnpack():
        assert any(k.startswith("input_grad (24, 6, 28, 28)") for k in kernels.choices())
    kernels.set_autotune(False)
    try:
        assert kernels.choices() == {}
        torch.testing.assert_close(kernels.conv2d_input_grad(g, w, (28, 28), 1, 2), expected)
        assert kernels.choices() == {}
    finally:
        kernels.set_autotune(True)


def test_fast_max_pooling_gives_max_pool2d_values_indices_and_gradient():
    torch.manual_seed(11)
    cases = [torch.randn(3, 2, 6, 8, dtype=D64), torch.zeros(2, 2, 4, 4, dtype=D64),
             torch.randint(0, 3, (2, 3, 6, 6)).to(D64), torch.randn(2, 2, 5, 6, dtype=D64)]
    nan = torch.randn(2, 2, 4, 4, dtype=D64)
    nan[1, 0, 2, 3] = float("nan")
    for p in [*cases, nan]:
        p.requires_grad_(True)
        out, idx = kernels.max_pool2d_with_indices(p, [2, 2], [2, 2], [0, 0], [1, 1], False)
        ref, ref_idx = F.max_pool2d_with_indices(p, 2)
        torch.testing.assert_close(out, ref, equal_nan=True)
        assert torch.equal(idx, ref_idx)
        g = torch.randn_like(out)
        torch.testing.assert_close(torch.autograd.grad(out, p, g)[0], torch.autograd.grad(ref, p, g)[0])


# ---------------------------------------------------------------------------------------------
# JacobianReg on the caller's graph: stopping at the first convolution
# ---------------------------------------------------------------------------------------------


class _Skip(nn.Module):
    """The input feeds a convolution and a skip connection: no first-convolution shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x) + x).flatten(1))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)),
    lambda: nn.Sequential(nn.Conv2d(1, 3, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(108, 3)),
    _Skip,
])
def test_rows_on_graph_match_autograd(make):
    torch.manual_seed(6)
    body = make().to(D64)
    x = torch.randn(4, 1, 6, 6, dtype=D64, requires_grad=True)
    logits = body(x)
    assert (autograd_rows._first_conv(logits, x) is None) == isinstance(body, _Skip)
    v = torch.randn(3, 4, 3, dtype=D64)
    got = autograd_rows.rows_on_graph(logits, x, v)
    expected = autograd_rows.grad_rows(logits, x, v)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    w = list(body.parameters())
    ga = torch.autograd.grad(got.pow(2).sum(), w, retain_graph=True, allow_unused=True,
                             materialize_grads=True)
    gb = torch.autograd.grad(expected.pow(2).sum(), w, allow_unused=True, materialize_grads=True)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# method="auto"
# ---------------------------------------------------------------------------------------------


class _NoForwardAD(torch.autograd.Function):  # no jvp: forward mode is impossible
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g


class _NotTwiceDifferentiable(torch.autograd.Function):  # forward mode works, a second derivative does not
    @staticmethod
    def forward(a):
        return a * a * a

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # create_graph: this layer has no second derivative
            raise RuntimeError("the derivative of this layer's backward is not implemented")
        (a,) = ctx.saved_tensors
        return 3 * a * a * g

    @staticmethod
    def jvp(ctx, t):
        (a,) = ctx.saved_tensors
        return 3 * a * a * t


class _Custom(nn.Module):
    def __init__(self, fn, d: int = 6, c: int = 3) -> None:
        super().__init__()
        self.fn, self.fc1, self.fc2 = fn, nn.Linear(d, 4), nn.Linear(4, c)

    def forward(self, z):
        if z.sum() > 1e9:  # data-dependent: untraceable, so PyTorch's own AD runs the network
            z = z * 2
        return self.fc2(self.fn.apply(self.fc1(z)))


def test_auto_is_algorithm_1_for_image_networks_and_forward_mode_for_small_inputs():
    torch.manual_seed(7)
    lenet = create("lenet")
    x = torch.rand(4, 1, 28, 28)
    choice = resolve_method(lenet, x)
    assert choice.method == "vjp" and choice.input_size == 784 and choice.num_classes == 10
    assert "D = 784" in choice.reason and resolve_method(lenet, x) is choice  # cached
    assert resolve_method(lenet, x, 0).method == "exact"
    small = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 5)).to(D64)
    xs = torch.randn(6, 3, dtype=D64)
    assert resolve_method(small, xs).method == "jvp"
    gen = torch.Generator().manual_seed(0)
    _, r_auto = jacobian_penalty(small, xs, generator=gen)
    _, r_jvp = jacobian_penalty(small, xs, method="jvp", generator=torch.Generator().manual_seed(0))
    assert float(r_auto) == float(r_jvp)


def test_auto_falls_back_to_the_estimator_that_works():
    torch.manual_seed(8)
    no_fwd = _Custom(_NoForwardAD).to(D64)
    x = torch.randn(5, 6, dtype=D64)
    choice = resolve_method(no_fwd, x)
    assert choice.method == "vjp" and "jvp is not available" in choice.reason
    once = _Custom(_NotTwiceDifferentiable).to(D64)
    choice = resolve_method(once, x)
    assert choice.method == "jvp" and "vjp is not available" in choice.reason
    logits, r = jacobian_penalty(once, x)
    r.backward()  # the parameter gradient exists: forward mode needs no second derivative
    assert once.fc1.weight.grad is not None


def test_resolving_leaves_random_state_and_batch_norm_statistics_alone():
    torch.manual_seed(9)
    model = Normalized(_Block(), (0.5, 0.5), (0.2, 0.2)).to(D64).train()
    x = torch.rand(4, 2, 6, 6, dtype=D64)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    choice = resolve_method(model, x)
    assert choice.method == "vjp"
    assert torch.equal(torch.get_rng_state(), rng)
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, buffers[n], rtol=0, atol=0)


def test_calibration_measures_both_estimators():
    torch.manual_seed(10)
    model = create("lenet")
    x = torch.rand(8, 1, 28, 28)
    choice = resolve_method(model, x, calibrate=True, draws=3)
    assert set(choice.measured) == {"vjp", "jvp"} and choice.method in ("vjp", "jvp")
    for m in choice.measured.values():
        assert m["seconds"] > 0 and m["grad_variance"] > 0
        assert m["variance_x_time"] == pytest.approx(m["seconds"] * m["grad_variance"])
    assert resolve_method(model, x) is choice  # "auto" follows the calibration from now on
    assert isinstance(choice.to_dict()["reason"], str)
    assert method_choice.MethodChoice("vjp", "r", 1, 2).to_dict()["measured"] == {}
