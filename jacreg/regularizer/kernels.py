"""Convolution kernels for the Jacobian regularizer, chosen per shape by timing on the CPU.

Algorithm 1 of Hoffman, Roberts & Yaida (2019) differentiates the input gradient ``v^T J`` of a
network with respect to its parameters. For a convolution ``h = conv(x, W)`` that means, beyond the
forward pass, the input gradient ``conv^T(g, W)`` (a transposed convolution) and, in the parameter
backward, two weight gradients: of the forward convolution (``x`` against the gradient of ``h``) and
of the transposed one (the cotangent of the input gradient against ``g``). oneDNN, PyTorch's CPU
backend, runs some of these shapes slowly -- above all the first layer of an image network, whose
input gradient has one or three output channels. Every operation here has exact alternatives (the
same linear map computed another way):

* input gradient (stride 1, dilation 1, one group, float32, one thread): oneDNN's transposed
  convolution, or NNPACK's convolution with the flipped, channel-swapped kernel (LeNet''s first layer:
  6 -> 1 channels, about 3x faster on the development machine);
* weight gradient (one group): oneDNN's, or a convolution with batch and channels swapped,
  ``conv2d(x^T, g^T)`` (LeNet''s first layer: about 2x faster).

:func:`max_pool2d_with_indices` is ``F.max_pool2d_with_indices`` with a faster path for 2x2 windows of
stride 2 on one CPU thread (elementwise maxima and comparisons: about 2x faster for LeNet''s first
pooling).

On the CPU the first use of a shape times the candidates (interleaved, fastest of 5, like
``torch.backends.cudnn.benchmark``) and keeps an alternative only if it beats oneDNN by 25%. All
candidates compute the same map, so results agree to float rounding, but two processes can pick
differently; ``JACREG_CONV_AUTOTUNE=0`` (or :func:`set_autotune`) keeps oneDNN everywhere.
:func:`choices` lists what was picked. On other devices the standard kernels are used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["choices", "conv2d", "conv2d_input_grad", "max_pool2d_with_indices", "set_autotune"]

Pair = tuple[int, int]
# What the backward of the autograd Functions below returns: a gradient (or None) per input.
_Grads = tuple[Tensor | None, Tensor | None, Tensor | None, None, None, None, None]

_CHOICE: dict[tuple, str] = {}
_AUTOTUNE: list[bool] = [os.environ.get("JACREG_CONV_AUTOTUNE", "1").strip().lower() not in ("0", "off")]
_MARGIN = 1.25  # an alternative must be this much faster than the default to be chosen
_MIN_MACS = 2_000_000  # smaller operations keep the default (their timings are mostly overhead)
_NNPACK: list[bool | None] = [None]


def set_autotune(enabled: bool) -> None:
    """Turn the timing of alternative kernels on or off (off: oneDNN everywhere); clears the choices."""
    _AUTOTUNE[0] = bool(enabled)
    _CHOICE.clear()


def choices() -> dict[str, str]:
    """The kernel picked for each shape timed so far: ``{"input_grad (100, 6, 28, 28) ...": "nnpack"}``."""
    return {" ".join(str(k) for k in key): name for key, name in _CHOICE.items()}


def _pair(v: int | Sequence[int]) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _nnpack() -> bool:
    if _NNPACK[0] is None:
        try:
            _NNPACK[0] = bool(torch._nnpack_available())  # also initialises NNPACK
        except (AttributeError, RuntimeError):
            _NNPACK[0] = False
    return bool(_NNPACK[0])


def _pick(key: tuple, candidates: dict[str, Callable[[], object]]) -> str:
    """The fastest of ``candidates`` (the first is the default) for ``key``, timed once per process."""
    name = _CHOICE.get(key)
    if name is not None:
        return name
    names = list(candidates)
    if len(names) == 1 or not _AUTOTUNE[0]:
        return names[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for f in candidates.values():
            f()  # warm-up (and any allocation)
        for _ in range(5):
            for n, f in candidates.items():
                t0 = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t0)
    fastest = {n: min(t) for n, t in times.items()}  # the least disturbed by other work on the machine
    best = min(fastest, key=fastest.__getitem__)
    name = best if fastest[best] * _MARGIN < fastest[names[0]] else names[0]
    _CHOICE[key] = name
    return name


def _tunable(w: Tensor, g: Tensor, *others: Tensor) -> bool:
    """CPU tensors, and enough multiply-adds (weight size x output positions) to be worth timing."""
    macs = w.numel() * g.shape[0] * g.shape[2] * g.shape[3]
    return macs >= _MIN_MACS and all(t.device.type == "cpu" for t in (w, g, *others))


# --------------------------------------------------------------------------------------------------
# Weight gradient: d/dW <g, conv2d(x, W)>
# --------------------------------------------------------------------------------------------------


def _wgrad_onednn(x: Tensor, g: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                  groups: int) -> Tensor:
    out = torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, dilation, False, [0, 0],
                                              groups, [False, True, False])
    return out[1]


def _wgrad_swapped(x: Tensor, g: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair) -> Tensor:
    """The weight gradient as one convolution over the batch: channels and batch swapped (one group).

    ``dW[o, c, a, b] = sum_{n,i,j} g[n, o, i, j] x_pad[n, c, s i + d a, s j + d b]``, a convolution
    of ``x_pad^T`` (C, N, H, W) with the kernel ``g^T`` (O, N, Ho, Wo), stride d and dilation s.
    """
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
    out = F.conv2d(xp.transpose(0, 1), g.transpose(0, 1), stride=dilation, dilation=stride)
    return out[:, :, : w.shape[2], : w.shape[3]].transpose(0, 1)


def _wgrad(x: Tensor, g: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair,
           groups: int) -> Tensor:
    if groups != 1 or not _tunable(w, g, x):
        return _wgrad_onednn(x, g, w, stride, padding, dilation, groups)
    key = ("wgrad", tuple(x.shape), tuple(g.shape), tuple(w.shape), stride, padding, dilation, x.dtype,
           torch.get_num_threads())
    name = _pick(key, {
        "onednn": lambda: _wgrad_onednn(x, g, w, stride, padding, dilation, groups),
        "swapped": lambda: _wgrad_swapped(x, g, w, stride, padding, dilation),
    })
    if name == "swapped":
        return _wgrad_swapped(x, g, w, stride, padding, dilation)
    return _wgrad_onednn(x, g, w, stride, padding, dilation, groups)


# --------------------------------------------------------------------------------------------------
# Input gradient: conv2d^T(g, W), the transposed convolution
# --------------------------------------------------------------------------------------------------


def _input_grad_onednn(g: Tensor, w: Tensor, size: Pair, stride: Pair, padding: Pair, dilation: Pair,
                       groups: int) -> Tensor:
    extra = tuple(size[i] - ((g.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                             + dilation[i] * (w.shape[2 + i] - 1) + 1) for i in range(2))
    return F.conv_transpose2d(g, w, None, stride, padding, extra, groups, dilation)


def _input_grad_nnpack(g: Tensor, w: Tensor, padding: Pair) -> Tensor:
    """Stride 1: the transposed convolution is a convolution with the flipped, channel-swapped kernel."""
    flipped = w.flip(-1, -2).transpose(0, 1).contiguous()
    pad = [w.shape[2] - 1 - padding[0], w.shape[3] - 1 - padding[1]]
    return torch._nnpack_spatial_convolution(g.contiguous(), flipped, None, pad)


def _nnpack_fits(g: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> bool:
    """NNPACK applies (stride 1, one group, float32 on the CPU), and runs with one thread only: with more,
    its own thread pool competes with OpenMP's (LeNet' on 2 cores: a JR step 10-15% slower with it)."""
    return (torch.get_num_threads() == 1 and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and g.dtype == torch.float32
            and w.dtype == torch.float32 and padding[0] < w.shape[2] and padding[1] < w.shape[3]
            and _tunable(w, g) and _nnpack())


def _input_grad_raw(g: Tensor, w: Tensor, size: Pair, stride: Pair, padding: Pair, dilation: Pair,
                    groups: int) -> Tensor:
    if not _nnpack_fits(g, w, stride, padding, dilation, groups):
        return _input_grad_onednn(g, w, size, stride, padding, dilation, groups)
    key = ("input_grad", tuple(g.shape), tuple(w.shape), size, padding, g.dtype, torch.get_num_threads())
    name = _pick(key, {
        "onednn": lambda: _input_grad_onednn(g, w, size, stride, padding, dilation, groups),
        "nnpack": lambda: _input_grad_nnpack(g, w, padding),
    })
    if name == "nnpack":
        return _input_grad_nnpack(g, w, padding)
    return _input_grad_onednn(g, w, size, stride, padding, dilation, groups)


# --------------------------------------------------------------------------------------------------
# The differentiable operations
# --------------------------------------------------------------------------------------------------


class _Conv2d(torch.autograd.Function):
    """``conv2d(x, W, b)`` whose backward uses the tuned weight gradient (twice differentiable)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, stride: Pair, padding: Pair, dilation: Pair,
                groups: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = b is not None
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g: Tensor) -> _Grads:
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dw = db = None
        if need_x:
            dx = _ConvInputGrad.apply(g, w, (x.shape[2], x.shape[3]), stride, padding, dilation, groups)
        if need_w:
            dw = _ConvWeightGrad.apply(x, g, w, stride, padding, dilation, groups)
        if need_b and ctx.has_bias:
            db = g.sum((0, 2, 3))
        return dx, dw, db, None, None, None, None


class _ConvInputGrad(torch.autograd.Function):
    """``conv2d^T(g, W)``: the input gradient of a convolution, with its own (tuned) backward."""

    @staticmethod
    def forward(ctx, g: Tensor, w: Tensor, size: Pair, stride: Pair, padding: Pair, dilation: Pair,
                groups: int) -> Tensor:
        ctx.save_for_backward(g, w)
        ctx.conf = (stride, padding, dilation, groups)
        return _input_grad_raw(g, w, size, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gg: Tensor) -> _Grads:
        g, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        dg = dw = None
        if ctx.needs_input_grad[0]:  # the adjoint of the transposed convolution is the convolution
            dg = _Conv2d.apply(gg, w, None, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:  # d/dW <gg, conv^T(g, W)> = d/dW <g, conv(gg, W)>
            dw = _ConvWeightGrad.apply(gg, g, w, stride, padding, dilation, groups)
        return dg, dw, None, None, None, None, None


class _ConvWeightGrad(torch.autograd.Function):
    """``d/dW <g, conv2d(x, W)>`` (bilinear in x and g), differentiable in both."""

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                groups: int) -> Tensor:
        ctx.save_for_backward(x, g, w)
        ctx.conf = (stride, padding, dilation, groups)
        return _wgrad(x, g, w, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gw: Tensor) -> _Grads:
        x, g, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        dx = dg = None
        if ctx.needs_input_grad[0]:  # <gw, dW(x, g)> = <g, conv(x, gw)> = <conv^T(g, gw), x>
            dx = _ConvInputGrad.apply(g, gw, (x.shape[2], x.shape[3]), stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            dg = _Conv2d.apply(x, gw, None, stride, padding, dilation, groups)
        return dx, dg, None, None, None, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1) -> Tensor:
    """``F.conv2d`` (same values) whose backward computes the weight gradient with the tuned kernel."""
    return _Conv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), int(groups))


def conv2d_input_grad(g: Tensor, weight: Tensor, size: Sequence[int], stride: int | Sequence[int] = 1,
                      padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                      groups: int = 1) -> Tensor:
    """``conv2d^T``: the gradient with respect to the input (spatial ``size``) of ``<g, conv2d(x, W)>``.

    Differentiable in ``g`` and ``weight`` (and twice), with the tuned kernels in both directions.
    """
    return _ConvInputGrad.apply(g, weight, _pair(tuple(size)), _pair(stride), _pair(padding), _pair(dilation),
                                int(groups))


# --------------------------------------------------------------------------------------------------
# Max pooling with indices
# --------------------------------------------------------------------------------------------------


def _max_pool2x2(p: Tensor) -> tuple[Tensor, Tensor] | None:
    """2x2 / stride 2 max pooling of an even-sized (B, C, H, W) tensor with max_pool2d's indices (the
    first maximum in row-major order, flat within each plane); None when a window holds a NaN."""
    b, c, h, w = p.shape
    with torch.no_grad():
        v = p.detach().view(b, c, h // 2, 2, w // 2, 2)
        a, r, d, e = v[:, :, :, 0, :, 0], v[:, :, :, 0, :, 1], v[:, :, :, 1, :, 0], v[:, :, :, 1, :, 1]
        top = torch.maximum(torch.maximum(a, r), torch.maximum(d, e))
        if bool(torch.isnan(top).any()):
            return None
        not_a, not_r, not_d = (a != top).long(), (r != top).long(), (d != top).long()
        offset = not_a * (not_r * (not_d + w) + (1 - not_r))  # 0, 1, w or w + 1: the first maximum
        rows, cols = torch.arange(h // 2, device=p.device), torch.arange(w // 2, device=p.device)
        corner = rows.view(-1, 1) * (2 * w) + cols * 2
        idx = offset + corner
    out = p.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)  # differentiable in p
    return out, idx


def max_pool2d_with_indices(p: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                            dilation: list[int], ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """``F.max_pool2d_with_indices`` (same values, same indices), faster for 2x2 windows of stride 2 on
    one CPU thread (its dozen elementwise operations lose to the parallel kernel with more)."""
    if (list(kernel_size) == [2, 2] and list(stride) == [2, 2] and not any(padding)
            and list(dilation) == [1, 1] and p.dim() == 4 and p.shape[2] % 2 == 0 and p.shape[3] % 2 == 0
            and p.device.type == "cpu" and torch.get_num_threads() == 1):
        fast = _max_pool2x2(p)
        if fast is not None:
            return fast
    return F.max_pool2d_with_indices(p, kernel_size, stride, padding, dilation, ceil_mode)
