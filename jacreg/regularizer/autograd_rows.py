"""Jacobian rows ``v^T J`` through PyTorch's autograd: networks the traced tape does not take, and graphs
the caller built.

:func:`reverse` is the general path of :mod:`jacreg.regularizer.reverse_mode`: one forward pass of the
network as a whole, then one ``autograd.grad(..., create_graph=True)`` per direction (or, for exact
norms without a graph, ``torch.func.vjp`` vectorised over the directions). :func:`rows_on_graph` is
the same product on a graph the caller built (:class:`jacreg.JacobianReg`, the paper's Algorithm 1 on
``reg(x, logits)``): one backward pass per direction, as the official code does, except that when the
input feeds a single convolution the passes stop at that convolution's output and its input gradient
uses :mod:`jacreg.regularizer.kernels`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge

from . import kernels
from .traced import functorch_ok

__all__ = ["RowsFn", "grad_rows", "reverse", "rows_on_graph"]

RowsFn = Callable[[Tensor], Tensor]  # cotangents (K, B, C) -> rows v_k^T J of shape (K, *input_shape)
# torch.func.vjp without has_aux: (output, vjp_fn); its annotation also allows the 3-tuple with aux.
_Vjp = tuple[Any, Callable[[Tensor], tuple[Tensor, ...]]]

# Networks that torch.func cannot transform (e.g. batch norm updating its running statistics in place).
_NO_FUNC: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def grad_rows(logits: Tensor, x: Tensor, cotangents: Tensor, create_graph: bool = True) -> Tensor | None:
    """``cotangents[k]^T J`` on an existing graph, one backward pass per direction: (K, *x.shape).

    None when the logits do not depend on ``x``.
    """
    parts = [torch.autograd.grad(logits, x, c, retain_graph=True, create_graph=create_graph,
                                 allow_unused=True)[0] for c in cotangents]
    return None if parts[0] is None else torch.stack(parts)


def _vjp_rows(vjp_fn: Callable[[Tensor], tuple[Tensor, ...]], cotangents: Tensor) -> Tensor:
    """``vjp_fn`` applied to each ``cotangents[k]``: shape (K, *input_shape). Vectorised with vmap."""
    if cotangents.shape[0] == 1:
        return vjp_fn(cotangents[0])[0].unsqueeze(0)
    try:
        return torch.func.vmap(vjp_fn)(cotangents)[0]
    except (RuntimeError, NotImplementedError):  # an op without a batching rule: loop instead
        return torch.stack([vjp_fn(c)[0] for c in cotangents])


def reverse(body: Callable[[Tensor], Tensor], z: Tensor, *, create_graph: bool) -> tuple[Any, RowsFn]:
    """One forward pass of ``body`` at ``z``: (logits, function giving v^T J for cotangent batches).

    With ``create_graph`` (the rows stay differentiable in the parameters): autograd, one backward pass
    per direction. Without (exact norms): torch.func.vjp + vmap where torch.func can transform the
    network, autograd otherwise (batch norm updating its statistics, DataParallel/DDP).
    """
    key = body if isinstance(body, nn.Module) else None
    if not create_graph and functorch_ok(body) and (key is None or key not in _NO_FUNC):
        try:
            logits, vjp_fn = cast(_Vjp, torch.func.vjp(body, z))
        except RuntimeError:  # e.g. in-place buffer updates; autograd below re-raises a genuine error
            if key is not None:
                _NO_FUNC.add(key)
        else:
            return logits, lambda cot: _vjp_rows(vjp_fn, cot)
    zz = z if z.requires_grad else z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = body(zz)

    def rows(cotangents: Tensor) -> Tensor:
        r = None
        if isinstance(logits, Tensor) and logits.requires_grad:
            with torch.enable_grad():
                r = grad_rows(logits, zz, cotangents, create_graph=create_graph)
        return zz.new_zeros((cotangents.shape[0], *zz.shape)) if r is None else r

    return logits, rows


def _first_conv(logits: Tensor, x: Tensor) -> tuple[Any, Tensor, tuple] | None:
    """The autograd node of the one 2-D convolution that consumes ``x``, its weight and configuration,
    when ``x`` feeds nothing else; None otherwise."""
    edge = get_gradient_edge(x)
    consumers: list[Any] = []
    seen: set[Any] = set()
    stack = [logits.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, nr in node.next_functions:
            if nxt is edge.node and nr == edge.output_nr:
                consumers.append((node, node.next_functions.index((nxt, nr))))
            elif nxt is not None:
                stack.append(nxt)
    if len(consumers) != 1 or consumers[0][1] != 0:
        return None
    if type(consumers[0][0]).__name__ != "ConvolutionBackward0":
        return None
    node = consumers[0][0]
    try:
        weight, transposed = node._saved_weight, node._saved_transposed
        conf = (tuple(node._saved_stride), tuple(node._saved_padding), tuple(node._saved_dilation),
                int(node._saved_groups))
    except (AttributeError, RuntimeError):
        return None
    if transposed or weight.dim() != 4 or x.dim() != 4:
        return None
    return node, weight, conf


def rows_on_graph(logits: Tensor, x: Tensor, cotangents: Tensor) -> Tensor | None:
    """``cotangents[k]^T J`` with J = d logits / d x on the caller's graph, differentiable
    (``create_graph``): shape (K, *x.shape), or None when the logits do not depend on ``x``.

    One backward pass per direction; when ``x`` feeds a single convolution the passes stop at its
    output and the convolution's input gradient is formed with the kernels of
    :mod:`jacreg.regularizer.kernels`. The same values as ``autograd.grad(logits, x, v, create_graph=True)``.
    """
    first = _first_conv(logits, x) if x.requires_grad else None
    if first is None:
        return grad_rows(logits, x, cotangents)
    node, weight, conf = first
    out = GradientEdge(node, 0)
    rows = []
    for c in cotangents:  # one direction at a time: batch-sized kernels stay in cache
        g = torch.autograd.grad(logits, out, c, retain_graph=True, create_graph=True)[0]
        rows.append(kernels.conv2d_input_grad(g, weight, x.shape[2:], *conf))
    return torch.stack(rows)
