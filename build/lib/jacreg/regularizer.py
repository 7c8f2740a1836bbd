"""Jacobian regularization (Hoffman, Roberts & Yaida, "Robust Learning with Jacobian Regularization", 2019).

The regularizer of the paper is

    R = 1/2 * (1/B) * sum_b ||J(x_b)||_F^2,      J(x_b) = d logits(x_b) / d x_b   (a C x D matrix),

added to the loss as ``CE + lambda_JR * R``. Three estimators of R are available, all unbiased:

* ``"vjp"`` -- the paper's Algorithm 1 (reverse mode): for every sample draw ``v`` uniformly on the unit
  sphere S^(C-1) and use ``C * ||v^T J||^2``, whose expectation is ``||J||_F^2`` because
  ``E[v v^T] = I / C``. ``n_proj`` projections are averaged (not summed).
* ``"jvp"`` -- forward mode: ``||J||_F^2 = E_u ||J u||^2`` for ``u ~ N(0, I_D)`` in input space.
  Same cost structure as one extra forward pass of the linear parts of the network plus its backward,
  and no input-gradient of the first layer is ever formed, which is what makes it the fastest
  estimator on CPU (see ``benchmarks/jr_step.py``).
* ``"exact"`` (or ``n_proj=0``) -- all C rows of J, vectorised over the classes (torch.func.vjp +
  vmap). C reverse passes and their second derivatives: about 15x a plain step for LeNet' on CPU
  (the paper's Algorithm 1 looping over the classes: about 17x).

:class:`JacobianReg` is the paper's module interface (``reg(x, logits)``, Algorithm 1, J with respect
to whatever ``x`` is). :func:`jacobian_penalty` is what training uses: one forward pass that returns
the logits (the same graph, the same dropout mask) together with R taken with respect to the
*normalised* input, the paper's convention. :func:`jacobian_norms` gives exact per-sample norms
for evaluation.

Variance: for one sample and one projection the relative variance is ``2 (C q - 1) / (C + 2)`` for
``"vjp"`` and ``2 q`` for ``"jvp"``, with ``q = ||J J^T||_F^2 / ||J||_F^4`` in [1/C, 1]; so at most
``2 (C - 1) / (C + 2)`` (1.5 for C = 10) and 2, and always ``var_jvp = ((C + 2) var_vjp + 2) / C``:
forward mode is somewhat noisier per projection (for C = 10 by 20% plus 0.2). Averaging ``n_proj``
independent projections divides either by ``n_proj``, and the batch mean by B.
"""

from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad as fwAD
from torch.fx import Node, Tracer
from torch.fx.node import map_arg
from torch.utils._pytree import tree_map

from .architectures import _BodyThroughWrapper, split_normalization
from .errors import ConfigError, ShapeError

__all__ = ["METHODS", "JacobianReg", "jacobian_norms", "jacobian_penalty"]

Method = Literal["auto", "vjp", "jvp", "exact"]
METHODS: tuple[str, ...] = ("auto", "vjp", "jvp", "exact")

# Reverse-mode rows (classes x samples) evaluated in one vectorised call. The batched backward of
# small convolutions slows down more than linearly beyond a few hundred rows on CPU (measured on
# LeNet': 2 x 100 rows per call is about 1.6x faster per row than 10 x 100), so the classes are
# processed in chunks of at most this many rows.
_MAX_ROWS = 256


# --------------------------------------------------------------------------------------------------
# Validation and random projections
# --------------------------------------------------------------------------------------------------


def _check_n_proj(n_proj: Any) -> int:
    if isinstance(n_proj, bool):
        raise ConfigError(f"n_proj must be an integer >= 0 (0 = exact), got {n_proj!r}")
    try:
        n = operator.index(n_proj)
    except TypeError:
        raise ConfigError(f"n_proj must be an integer >= 0 (0 = exact), got {n_proj!r}") from None
    if n < 0:
        raise ConfigError(f"n_proj must be >= 0 (0 = exact, >= 1 random projections), got {n}")
    return n


def _check_input(x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise ShapeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ShapeError(f"x must be a batch with the samples along dim 0, e.g. (B, C, H, W); got shape "
                         f"{tuple(x.shape)} (use x.unsqueeze(0) for a single sample)")
    if not x.is_floating_point():
        raise ShapeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ShapeError("x is an empty batch")
    return x


def _check_logits(logits: Any, batch: int) -> tuple[int, int]:
    if not isinstance(logits, Tensor):
        raise ShapeError(f"the model must return a logits tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ShapeError(f"logits must have shape (B, C), got {tuple(logits.shape)}; flatten the extra "
                         "dimensions (e.g. logits.flatten(1)) before computing the Jacobian penalty")
    b, c = logits.shape
    if b != batch:
        raise ShapeError(f"logits have {b} rows but the input batch has {batch} samples")
    if c == 0:
        raise ShapeError("logits have zero columns")
    return int(b), int(c)


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws on ``like``'s device and dtype (from ``generator`` when given)."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    draw = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return draw.to(like.device)


def _sphere(n: int, batch: int, classes: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` independent unit vectors per sample, uniform on S^(C-1): shape (n, B, C) (Algorithm 1)."""
    v = _randn((n, batch, classes), like, generator)
    return v / v.norm(dim=-1, keepdim=True)


def _one_hots(classes: int, batch: int, like: Tensor, start: int, stop: int) -> Tensor:
    """Cotangents e_c for c in [start, stop), for every sample: shape (stop - start, B, C)."""
    eye = torch.eye(classes, device=like.device, dtype=like.dtype)[start:stop]
    return eye.unsqueeze(1).expand(stop - start, batch, classes)


# --------------------------------------------------------------------------------------------------
# JacobianReg: the paper's module, on an existing graph
# --------------------------------------------------------------------------------------------------


_NOT_DEPENDENT = "the logits do not depend on x: call x.requires_grad_() before logits = model(x)"


def _grad_rows(logits: Tensor, x: Tensor, cotangents: Tensor, create_graph: bool = True) -> Tensor | None:
    """``cotangents[k]^T J`` for every k (differentiable with ``create_graph``): shape (K, *x.shape).

    Vectorised with ``is_grads_batched``; a model whose backward cannot be batched falls back to a
    loop of K backward passes (same values). None when the logits do not depend on ``x``.
    """
    if cotangents.shape[0] == 1:
        rows = torch.autograd.grad(logits, x, cotangents[0], retain_graph=True, create_graph=create_graph,
                                   allow_unused=True)[0]
        rows = None if rows is None else rows.unsqueeze(0)
    else:
        try:
            rows = torch.autograd.grad(logits, x, cotangents, retain_graph=True, create_graph=create_graph,
                                       allow_unused=True, is_grads_batched=True)[0]
        except RuntimeError:
            parts = [torch.autograd.grad(logits, x, c, retain_graph=True, create_graph=create_graph,
                                         allow_unused=True)[0] for c in cotangents]
            rows = None if parts[0] is None else torch.stack(parts)
    return rows


class JacobianReg(nn.Module):
    """The Jacobian regularizer R of Algorithm 1 (Hoffman, Roberts & Yaida 2019).

    ``reg(x, logits)`` returns ``1/2 * mean_b ||J(x_b)||_F^2`` with ``J = d logits / d x``, estimated
    with ``n_proj`` random projections per sample, or exactly with ``n_proj=0``. The result is
    differentiable with respect to the model's parameters (``create_graph=True``), so
    ``(loss + lambda_jr * reg(x, logits)).backward()`` trains with Jacobian regularization.

    Estimator (Algorithm 1): for each projection, every sample gets its own ``v`` uniform on the unit
    sphere S^(C-1) (``randn`` then row-normalised); ``C * ||v^T J||^2`` is an unbiased estimate of
    ``||J||_F^2``. The ``n_proj`` estimates are averaged, then averaged over the batch and halved.
    ``n_proj=0`` uses the C one-hot directions instead (exact; C backward passes, vectorised with
    ``torch.autograd.grad(..., is_grads_batched=True)``; a model whose backward cannot be batched falls
    back to a Python loop over the directions, with the same result).

    The random directions are drawn on the logits' device and in their dtype, from ``generator`` when
    one is given (for reproducibility).

    Args:
        n_proj: number of random projections (>= 1), or 0 for the exact value.
        generator: default random generator for the projections (``forward`` can override it).

    Raises:
        ConfigError: ``n_proj`` is not an integer >= 0.

    Example::

        reg = JacobianReg(n_proj=1)
        x.requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + 0.01 * reg(x, logits)
        loss.backward()

    For training, :func:`jacobian_penalty` does the same with respect to the normalised input and
    picks the fastest estimator.
    """

    def __init__(self, n_proj: int = 1, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_proj = _check_n_proj(n_proj)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"n_proj={self.n_proj}" + (" (exact)" if self.n_proj == 0 else "")

    def forward(self, x: Tensor, logits: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return the scalar ``1/2 * mean_b ||J(x_b)||_F^2`` (estimated unless ``n_proj == 0``).

        Args:
            x: the input batch, with ``requires_grad=True``, from which ``logits`` were computed.
            logits: model output of shape (B, C).
            generator: random generator for this call (default: the one given at construction).

        Raises:
            ShapeError: ``logits`` is not (B, C) with B = ``x.shape[0]``, ``x`` does not require grad,
                or the logits do not depend on ``x``.
        """
        _check_input(x)
        if not x.requires_grad:
            raise ShapeError("x must require grad: call x.requires_grad_() before logits = model(x)")
        batch, classes = _check_logits(logits, x.shape[0])
        if not logits.requires_grad:
            raise ShapeError(_NOT_DEPENDENT)
        if self.n_proj == 0:
            cotangents, factor = _one_hots(classes, batch, logits, 0, classes), 1.0
        else:
            gen = generator if generator is not None else self.generator
            cotangents, factor = _sphere(self.n_proj, batch, classes, logits, gen), classes / self.n_proj
        rows = _grad_rows(logits, x, cotangents)
        if rows is None:
            raise ShapeError(_NOT_DEPENDENT)
        return 0.5 * factor * rows.pow(2).sum() / batch


# --------------------------------------------------------------------------------------------------
# Reverse mode after one forward pass: v^T J for batches of cotangents v
# --------------------------------------------------------------------------------------------------

RowsFn = Callable[[Tensor], Tensor]  # cotangents (K, B, C) -> rows v_k^T J of shape (K, *input_shape)

# Networks that torch.func cannot transform (e.g. batch norm updating its running statistics in place):
# they use autograd.grad (is_grads_batched) instead.
_NO_FUNC: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _functorch_ok(body: Any) -> bool:
    """False for DataParallel/DDP (their forward touches gradient buckets that torch.func transforms
    cannot see); those use plain autograd, and forward mode with a single tangent only."""
    if isinstance(body, _BodyThroughWrapper):
        return False
    if isinstance(body, nn.Module):
        return not any(isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel))
                       for m in body.modules())
    return True


def _vjp_rows(vjp_fn: Callable[[Tensor], tuple[Tensor, ...]], cotangents: Tensor) -> Tensor:
    """``vjp_fn`` applied to each ``cotangents[k]``: shape (K, *input_shape). Vectorised with vmap."""
    if cotangents.shape[0] == 1:
        return vjp_fn(cotangents[0])[0].unsqueeze(0)
    try:
        return torch.func.vmap(vjp_fn)(cotangents)[0]
    except (RuntimeError, NotImplementedError):  # an op without a batching rule: loop instead
        return torch.stack([vjp_fn(c)[0] for c in cotangents])


def _reverse(body: Callable[[Tensor], Tensor], z: Tensor, *, create_graph: bool) -> tuple[Any, RowsFn]:
    """One forward pass of ``body`` at ``z``: (logits, function giving v^T J for cotangent batches).

    torch.func.vjp + vmap batches the backward over the cotangents with proper batching rules (the
    legacy ``is_grads_batched`` path falls back to per-row loops for convolutions here). With
    ``create_graph`` the rows stay differentiable with respect to the parameters: torch.func
    transforms compose with ordinary autograd outside them.
    """
    key = body if isinstance(body, nn.Module) else None
    if _functorch_ok(body) and (key is None or key not in _NO_FUNC):
        try:
            logits, vjp_fn = torch.func.vjp(body, z)
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
        if logits.requires_grad:
            with torch.enable_grad():
                r = _grad_rows(logits, zz, cotangents, create_graph=create_graph)
        if r is None:  # the logits do not depend on the input: J = 0
            r = torch.zeros((cotangents.shape[0], *zz.shape), device=zz.device, dtype=zz.dtype)
        return r

    return logits, rows


def _exact_sq_norms(rows_fn: RowsFn, batch: int, classes: int, like: Tensor) -> Tensor:
    """Per-sample ``||J_b||_F^2`` (shape (B,)) from all C one-hot cotangents, in row chunks."""
    per_call = max(1, _MAX_ROWS // batch)
    total: Tensor | None = None
    for start in range(0, classes, per_call):
        stop = min(classes, start + per_call)
        rows = rows_fn(_one_hots(classes, batch, like, start, stop))
        sq = rows.pow(2).reshape(stop - start, batch, -1).sum(dim=(0, 2))
        total = sq if total is None else total + sq
    assert total is not None
    return total


def _penalty_exact(body: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    logits, rows_fn = _reverse(body, z, create_graph=True)
    batch, classes = _check_logits(logits, z.shape[0])
    return logits, 0.5 * _exact_sq_norms(rows_fn, batch, classes, logits).sum() / batch


def _penalty_vjp(body: Callable[[Tensor], Tensor], z: Tensor, n_proj: int,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Algorithm 1 after one forward: v per sample on S^(C-1), C * ||v^T J||^2, averaged."""
    if n_proj == 1:
        # Plain reverse mode: the same graph the paper's code builds.
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        logits = body(zz)
        batch, classes = _check_logits(logits, z.shape[0])
        v = _sphere(1, batch, classes, logits, generator)
        rows = _grad_rows(logits, zz, v) if logits.requires_grad else None
        if rows is None:  # the logits do not depend on the input: J = 0
            rows = torch.zeros_like(zz).unsqueeze(0)
    else:
        logits, rows_fn = _reverse(body, z, create_graph=True)
        batch, classes = _check_logits(logits, z.shape[0])
        rows = rows_fn(_sphere(n_proj, batch, classes, logits, generator))
    return logits, 0.5 * classes * rows.pow(2).sum() / (n_proj * batch)


# --------------------------------------------------------------------------------------------------
# Forward mode: an fx-traced dual-number evaluator with cheap rules for common layers
# --------------------------------------------------------------------------------------------------
#
# torch.autograd.forward_ad is exact and general, but for a layer whose weight carries no tangent its
# rules still evaluate (and later differentiate) the weight-tangent term with a zero tensor: every
# convolution and linear layer runs twice in the tangent pass (LeNet' on CPU: a JR step through
# forward_ad takes about 2.0x a plain step, through this evaluator about 1.7x; benchmarks/jr_step.py).
# The evaluator below walks the traced graph of the network once, computing each node's primal
# value with the layer itself and its tangent with the layer's linear part (convolution without
# bias, max-pooling by gathering at the primal's argmax, tanh' from the primal output, the primal's
# dropout mask, ...). Tangents carry a leading projection dimension K so that ``n_proj`` input-space
# directions share the single primal forward pass. Any node without a rule goes through
# torch.func.jvp (exact, just not specialised), and a network that cannot be traced uses
# forward_ad / torch.func.jvp as a whole.


class _NotHandled(Exception):
    """A rule declines a node; the generic rule (torch.func.jvp) takes it."""


_NO_TANGENT_METHODS = frozenset({"size", "dim", "numel", "nelement", "get_device", "is_contiguous",
                                 "element_size", "stride", "type", "is_floating_point"})
_NO_TANGENT_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"})


def _shift_dim(d: int) -> int:
    return d + 1 if d >= 0 else d


def _fold(t: Tensor) -> Tensor:
    """(K, B, ...) -> (K*B, ...) so that a batched layer treats the K tangents as more samples."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _unary(node: Node, env: dict[Node, tuple[Any, Any]]) -> tuple[Tensor, Tensor]:
    """The (primal, tangent) of a node's single tensor input, or _NotHandled."""
    if not node.args or not isinstance(node.args[0], Node):
        raise _NotHandled
    others = list(node.args[1:]) + list(node.kwargs.values())
    if any(isinstance(a, Node) and env[a][1] is not None for a in others):
        raise _NotHandled
    p, t = env[node.args[0]]
    if not isinstance(p, Tensor) or t is None:
        raise _NotHandled
    return p, t


def _conv_rule(mod: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]]) -> tuple[Tensor, Tensor]:
    p, t = _unary(node, env)
    dims = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}[type(mod)]
    if len(node.args) != 1 or node.kwargs or p.dim() != dims:
        raise _NotHandled
    out = mod(p)
    tan = mod._conv_forward(_fold(t), mod.weight, None)  # the linear part: no bias
    return out, tan.view(t.shape[0], *out.shape)


def _linear_rule(mod: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]]) -> tuple[Tensor, Tensor]:
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise _NotHandled
    return mod(p), F.linear(t, mod.weight)


def _pointwise(t: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` on the tangents, which broadcast against primal-shaped tensors. With one tangent the
    leading dimension is squeezed away first: broadcasting would make the backward reduce over it
    (an extra full-size fill and sum per layer)."""
    if t.shape[0] == 1:
        return fn(t.squeeze(0)).unsqueeze(0)
    return fn(t)


def _tanh(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.tanh(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.tanh_backward(u, y))  # u * (1 - y^2), one kernel


def _sigmoid(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.sigmoid(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.sigmoid_backward(u, y))  # u * y * (1 - y)


def _relu(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.relu(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.threshold_backward(u, y, 0))  # u where y > 0


def _activation_rule(fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]):
    def rule(target: Any, node: Node, env: dict[Node, tuple[Any, Any]]) -> tuple[Tensor, Tensor]:
        p, t = _unary(node, env)
        return fn(p, t)
    return rule


def _max_pool2d(p: Tensor, t: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """Max pooling's tangent: the tangent read at the primal's argmax (the same indices)."""
    if p.dim() != 4:
        raise _NotHandled
    out, idx = F.max_pool2d_with_indices(p, kernel_size, stride if stride else kernel_size, padding, dilation,
                                         ceil_mode)
    k, index = t.shape[0], idx.flatten(-2)
    if k == 1:
        return out, t.squeeze(0).flatten(-2).gather(-1, index).view(1, *out.shape)
    gathered = t.flatten(-2).gather(-1, index.unsqueeze(0).expand(k, -1, -1, -1))
    return out, gathered.view(k, *out.shape)


def _max_pool_module_rule(mod: nn.MaxPool2d, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    if mod.return_indices or len(node.args) != 1 or node.kwargs:
        raise _NotHandled
    return _max_pool2d(p, t, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)


def _max_pool_function_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    bound = dict(zip(names, [p, *(map_arg(node.args[1:], lambda n: env[n][0]))], strict=False))
    bound.update(map_arg(node.kwargs, lambda n: env[n][0]))
    if bound.get("return_indices", False) or "kernel_size" not in bound:
        raise _NotHandled
    return _max_pool2d(p, t, bound["kernel_size"], bound.get("stride"), bound.get("padding", 0),
                       bound.get("dilation", 1), bound.get("ceil_mode", False))


def _linear_module_rule(mod: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]]):
    """Layers that are linear in their input and act per sample (pooling by averaging)."""
    p, t = _unary(node, env)
    dims = {nn.AvgPool1d: 3, nn.AvgPool2d: 4, nn.AvgPool3d: 5, nn.AdaptiveAvgPool1d: 3,
            nn.AdaptiveAvgPool2d: 4, nn.AdaptiveAvgPool3d: 5}[type(mod)]
    if len(node.args) != 1 or node.kwargs or p.dim() != dims:
        raise _NotHandled
    out = mod(p)
    return out, mod(_fold(t)).view(t.shape[0], *out.shape)


def _dropout(p: Tensor, t: Tensor, prob: float, training: bool) -> tuple[Tensor, Tensor]:
    if not training or prob == 0.0:
        return p, t
    if prob == 1.0:
        return p * 0.0, t * 0.0
    # One mask for the primal and every tangent: the Jacobian of the very network that gave the logits.
    mask = torch.empty_like(p).bernoulli_(1.0 - prob).div_(1.0 - prob)
    return p * mask, _pointwise(t, lambda u: u * mask)


def _dropout_module_rule(mod: nn.Dropout, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise _NotHandled
    return _dropout(p, t, float(mod.p), mod.training)


def _dropout_function_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    names = ("input", "p", "training", "inplace")
    bound = dict(zip(names, [p, *(map_arg(node.args[1:], lambda n: env[n][0]))], strict=False))
    bound.update(map_arg(node.kwargs, lambda n: env[n][0]))
    prob, training = bound.get("p", 0.5), bound.get("training", True)
    if not isinstance(prob, (int, float)) or not isinstance(training, bool):
        raise _NotHandled
    return _dropout(p, t, float(prob), training)


def _batch_norm_rule(mod: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]]):
    """Batch norm: a per-channel affine map with running statistics (eval mode); with batch statistics
    (train mode) the linearisation of the normalisation, which couples the samples of the batch."""
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs or p.dim() < 2:
        raise _NotHandled
    out = mod(p)  # also updates the running statistics once, as a plain forward pass does
    shape = (-1, *([1] * (p.dim() - 2)))
    if not mod.training and mod.running_var is not None:
        scale = torch.rsqrt(mod.running_var + mod.eps)
        if mod.weight is not None:
            scale = scale * mod.weight
        return out, t * scale.view(shape)
    dims = [0, *range(2, p.dim())]
    mean = p.mean(dims, keepdim=True)
    inv = torch.rsqrt(p.var(dims, unbiased=False, keepdim=True) + mod.eps)
    xhat = (p - mean) * inv
    tdims = [d + 1 for d in dims]
    tan = (t - t.mean(tdims, keepdim=True) - xhat * (t * xhat).mean(tdims, keepdim=True)) * inv
    if mod.weight is not None:
        tan = tan * mod.weight.view(shape)
    return out, tan


def _flatten_module_rule(mod: nn.Flatten, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise _NotHandled
    return mod(p), t.flatten(_shift_dim(mod.start_dim), _shift_dim(mod.end_dim))


def _flatten_function_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    names = ("input", "start_dim", "end_dim")
    bound = dict(zip(names, [p, *(map_arg(node.args[1:], lambda n: env[n][0]))], strict=False))
    bound.update(map_arg(node.kwargs, lambda n: env[n][0]))
    start, end = bound.get("start_dim", 0), bound.get("end_dim", -1)
    if not isinstance(start, int) or not isinstance(end, int) or set(bound) - set(names):
        raise _NotHandled
    return torch.flatten(p, start, end), t.flatten(_shift_dim(start), _shift_dim(end))


def _identity_rule(mod: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]]):
    p, t = _unary(node, env)
    return mod(p), t


def _add_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    """a + b (and a - b) with tensors of the same shape, or a tensor and a constant."""
    if len(node.args) != 2 or node.kwargs:
        raise _NotHandled
    sign = -1.0 if fn in (operator.sub, operator.isub, torch.sub) else 1.0
    (pa, ta), (pb, tb) = (env[a] if isinstance(a, Node) else (a, None) for a in node.args)
    out = pa - pb if sign < 0 else pa + pb
    for p_in, t_in in ((pa, ta), (pb, tb)):
        if t_in is not None and (not isinstance(p_in, Tensor) or p_in.shape != out.shape):
            raise _NotHandled
    if ta is None:
        return out, tb if sign > 0 else -tb
    if tb is None:
        return out, ta
    return out, ta + tb if sign > 0 else ta - tb


def _scale_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    """a * s, s * a, a / s with a python number s."""
    if len(node.args) != 2 or node.kwargs:
        raise _NotHandled
    a, b = node.args
    if fn in (operator.mul, operator.imul) and isinstance(a, (int, float)) and isinstance(b, Node):
        a, b = b, a
    if not isinstance(a, Node) or not isinstance(b, (int, float)) or isinstance(b, bool):
        raise _NotHandled
    p, t = env[a]
    if t is None:
        raise _NotHandled
    if fn in (operator.truediv, operator.itruediv):
        return p / b, t / b
    return p * b, t * b


def _getitem_rule(fn: Any, node: Node, env: dict[Node, tuple[Any, Any]]):
    """Picking an element of a tuple/list output (tensor indexing is generic)."""
    src, idx = node.args
    if not isinstance(src, Node) or isinstance(idx, Node):
        raise _NotHandled
    p, t = env[src]
    if not isinstance(p, (tuple, list)):
        raise _NotHandled
    return p[idx], (None if t is None else t[idx])


_MODULE_RULES: dict[type, Callable[..., tuple[Any, Any]]] = {
    nn.Conv1d: _conv_rule, nn.Conv2d: _conv_rule, nn.Conv3d: _conv_rule,
    nn.Linear: _linear_rule,
    nn.Tanh: _activation_rule(_tanh), nn.Sigmoid: _activation_rule(_sigmoid),
    nn.ReLU: _activation_rule(_relu),
    nn.MaxPool2d: _max_pool_module_rule,
    nn.AvgPool1d: _linear_module_rule, nn.AvgPool2d: _linear_module_rule, nn.AvgPool3d: _linear_module_rule,
    nn.AdaptiveAvgPool1d: _linear_module_rule, nn.AdaptiveAvgPool2d: _linear_module_rule,
    nn.AdaptiveAvgPool3d: _linear_module_rule,
    nn.Dropout: _dropout_module_rule,
    nn.BatchNorm1d: _batch_norm_rule, nn.BatchNorm2d: _batch_norm_rule, nn.BatchNorm3d: _batch_norm_rule,
    nn.Flatten: _flatten_module_rule,
    nn.Identity: _identity_rule,
}

_FUNCTION_RULES: dict[Any, Callable[..., tuple[Any, Any]]] = {
    torch.tanh: _activation_rule(_tanh), F.tanh: _activation_rule(_tanh),
    torch.sigmoid: _activation_rule(_sigmoid), F.sigmoid: _activation_rule(_sigmoid),
    torch.relu: _activation_rule(_relu), F.relu: _activation_rule(_relu),
    F.max_pool2d: _max_pool_function_rule,
    F.dropout: _dropout_function_rule,
    torch.flatten: _flatten_function_rule,
    operator.add: _add_rule, operator.iadd: _add_rule, torch.add: _add_rule,
    operator.sub: _add_rule, operator.isub: _add_rule, torch.sub: _add_rule,
    operator.mul: _scale_rule, operator.imul: _scale_rule,
    operator.truediv: _scale_rule, operator.itruediv: _scale_rule,
    operator.getitem: _getitem_rule,
}
_METHOD_RULES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "tanh": _activation_rule(_tanh), "sigmoid": _activation_rule(_sigmoid), "relu": _activation_rule(_relu),
}


def _call(op: str, target: Any, args: Any, kwargs: Any) -> Any:
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    return target(*args, **kwargs)


class _DualProgram:
    """The traced graph of a network, evaluated on (primal, K tangents)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    def __call__(self, root: nn.Module, z: Tensor, tangents: Tensor) -> tuple[Any, Any]:
        env: dict[Node, tuple[Any, Any]] = {}
        first = True
        for node in self.nodes:
            if node.op == "placeholder":
                if first:
                    env[node], first = (z, tangents), False
                elif node.args:  # an optional argument left at its default
                    env[node] = (node.args[0], None)
                else:
                    raise _NotHandled
            elif node.op == "get_attr":
                value: Any = root
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                env[node] = (value, None)
            elif node.op == "output":
                out = node.args[0]
                if not isinstance(out, Node):
                    raise _NotHandled
                return env[out]
            else:
                env[node] = self._eval(root, node, env, tangents.shape[0])
        raise _NotHandled

    @staticmethod
    def _eval(root: nn.Module, node: Node, env: dict[Node, tuple[Any, Any]], k: int) -> tuple[Any, Any]:
        op = node.op
        target = root.get_submodule(str(node.target)) if op == "call_module" else node.target
        active = [n for n in node.all_input_nodes if env[n][1] is not None]
        if (not active or (op == "call_method" and target in _NO_TANGENT_METHODS)
                or (target is getattr and len(node.args) == 2 and node.args[1] in _NO_TANGENT_ATTRS)):
            args = map_arg(node.args, lambda n: env[n][0])
            kwargs = map_arg(node.kwargs, lambda n: env[n][0])
            return _call(op, target, args, kwargs), None
        if op == "call_module":
            rule = _MODULE_RULES.get(type(target))
        elif op == "call_method":
            rule = _METHOD_RULES.get(target)
        else:
            try:
                rule = _FUNCTION_RULES.get(target)
            except TypeError:  # an unhashable callable
                rule = None
        if rule is not None:
            try:
                return rule(target, node, env)
            except _NotHandled:
                pass
        return _generic_jvp(op, target, node, env, active, k)


def _generic_jvp(op: str, target: Any, node: Node, env: dict[Node, tuple[Any, Any]], active: list[Node],
                 k: int) -> tuple[Any, Any]:
    """Any node, exactly, through torch.func.jvp (vmapped over the K tangents)."""
    primals = tuple(env[n][0] for n in active)

    def fn(*values: Tensor) -> Any:
        sub = dict(zip(active, values, strict=True))
        args = map_arg(node.args, lambda n: sub[n] if n in sub else env[n][0])
        kwargs = map_arg(node.kwargs, lambda n: sub[n] if n in sub else env[n][0])
        return _call(op, target, args, kwargs)

    if k == 1:
        out, tan = torch.func.jvp(fn, primals, tuple(env[n][1].squeeze(0) for n in active))
        return out, tree_map(lambda a: a.unsqueeze(0) if isinstance(a, Tensor) else a, tan)
    out, tan = torch.func.vmap(lambda *ts: torch.func.jvp(fn, primals, ts), randomness="same")(
        *(env[n][1] for n in active))
    return tree_map(lambda a: a[0] if isinstance(a, Tensor) else a, out), tan


# Traced graphs per network, keyed by its structure (submodule names, types and train/eval modes, in
# case the code branches on them). None marks a network the evaluator does not take.
_PROGRAMS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _DualProgram | None]] = (
    weakref.WeakKeyDictionary())
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _structure(body: nn.Module) -> tuple | None:
    """The cache key of ``body``, or None when its own forward must run: hooks (which the evaluator
    would skip), or a DataParallel/DDP wrapper (whose forward prepares the gradient all-reduce)."""
    from torch.nn.modules import module as module_mod

    if any(getattr(module_mod, f"_global{name}", None) for name in _HOOKS):
        return None
    key: list[Any] = []
    for name, m in body.named_modules():
        if isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel, _BodyThroughWrapper)):
            return None
        if any(getattr(m, h, None) for h in _HOOKS):
            return None
        key.append((name, type(m), m.training))
    return tuple(key)


def _program_for(body: Any) -> _DualProgram | None:
    if not isinstance(body, nn.Module):
        return None
    key = _structure(body)
    if key is None:
        return None
    try:
        entry = _PROGRAMS.setdefault(body, {})
    except TypeError:  # not weak-referenceable
        return None
    if key not in entry:
        try:
            graph = Tracer().trace(body)
            entry[key] = _DualProgram(list(graph.nodes))
        except Exception:  # untraceable forward (data-dependent control flow, ...): use forward_ad
            entry[key] = None
    return entry[key]


def _jvp_generic(body: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor) -> tuple[Any, Any]:
    """J u for the K tangents with PyTorch's own forward mode (forward_ad, or torch.func for K > 1)."""
    if tangents.shape[0] == 1:
        with fwAD.dual_level():
            out = body(fwAD.make_dual(z, tangents[0]))
            if not isinstance(out, Tensor):
                return out, None
            primal, tangent = fwAD.unpack_dual(out)
        return primal, None if tangent is None else tangent.unsqueeze(0)
    if not _functorch_ok(body):
        raise NotImplementedError("forward mode with several tangents uses torch.func, which does not "
                                  "support DataParallel/DistributedDataParallel")
    out, tangent = torch.func.vmap(lambda u: torch.func.jvp(body, (z,), (u,)), randomness="same")(tangents)
    return (out[0] if isinstance(out, Tensor) else out), tangent


def _jvp_forward(body: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass of ``body`` at ``z`` with K tangents (K, *z.shape): (logits, J u as (K, B, C))."""
    program = _program_for(body)
    out: Any = None
    if program is not None:
        try:
            out = program(body, z, tangents)  # type: ignore[arg-type]
        except Exception as exc:  # a rule bug or an unusual layer: the exact generic path decides
            out = _jvp_generic(body, z, tangents)  # raises the canonical error for a bad input
            _PROGRAMS[body][_structure(body)] = None  # type: ignore[index]
            warnings.warn(f"jacreg: fast forward-mode path failed for {type(body).__name__} ({exc}); "
                          "using torch forward AD", RuntimeWarning, stacklevel=3)
    if out is None:
        out = _jvp_generic(body, z, tangents)
    logits, tan = out
    _check_logits(logits, z.shape[0])
    if tan is None:
        tan = torch.zeros((tangents.shape[0], *logits.shape), device=logits.device, dtype=logits.dtype)
    return logits, tan


def _is_forward_ad_gap(exc: BaseException) -> bool:
    """An error saying that forward mode (or a torch.func transform) is not available for some layer."""
    text = str(exc).lower()
    words = ("forward ad", "forward-mode", "forward mode", "jvp", "transform", "storage")
    return isinstance(exc, NotImplementedError) or any(word in text for word in words)


def _penalty_jvp(body: Callable[[Tensor], Tensor], z: Tensor, n_proj: int,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """E_u ||J u||^2 with u ~ N(0, I) in input space, averaged over n_proj tangents."""
    u = _randn((n_proj, *z.shape), z, generator)
    logits, tan = _jvp_forward(body, z, u)
    return logits, 0.5 * tan.pow(2).sum() / (n_proj * z.shape[0])


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------

# Networks (and whether with one or several tangents) on which forward mode failed: "auto" uses vjp.
_NO_FORWARD_AD: weakref.WeakKeyDictionary[nn.Module, set[bool]] = weakref.WeakKeyDictionary()


def jacobian_penalty(model: nn.Module, x: Tensor, n_proj: int = 1, method: Method | str = "auto",
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One forward pass of ``model`` returning ``(logits, R)``, R the Jacobian regularizer.

    ``R = 1/2 * mean_b ||J(x_b)||_F^2`` with J the derivative of the logits with respect to the
    *normalised* input (the input of the network body, see
    :func:`jacreg.architectures.split_normalization`), the convention of the paper and its
    official code, so lambda_JR and ||J||_F compare with the paper's numbers. The logits are those
    of that same forward pass (same graph, same dropout mask), ready for the cross-entropy:
    ``loss = F.cross_entropy(logits, y) + lambda_jr * R; loss.backward()``.

    Methods (all unbiased for n_proj >= 1, and differentiable with respect to the parameters):

    * ``"vjp"``: Algorithm 1 -- per sample ``v`` uniform on S^(C-1), ``C * ||v^T J||^2``.
    * ``"jvp"``: forward mode -- per sample ``u ~ N(0, I)`` in input space, ``||J u||^2``; the
      ``n_proj`` tangents share the one forward pass.
    * ``"exact"``: all C rows of J (``n_proj`` is ignored), vectorised over the classes.
    * ``"auto"`` (default): ``"jvp"`` for every n_proj >= 1, falling back to ``"vjp"`` for a network
      on which forward mode fails (an op without a forward-mode formula). Chosen by measurement
      (``benchmarks/jr_step.py``, LeNet', batch 100, AMD EPYC CPU, torch 2.14, one thread, CPU time
      per SGD step relative to a plain step): jvp 1.7x against 3.1x for vjp with n_proj = 1, and
      2.9x against 5.3x with n_proj = 3. Reverse mode must form the input gradient of the first
      convolution (a 6 -> 1 channel transposed convolution, which oneDNN runs slowly in NCHW) and
      then differentiate it again; forward mode never forms it. Forward mode is somewhat noisier per
      projection (module docstring), far less than its cost advantage.

    ``n_proj = 0`` means exact whatever the method. The n_proj estimates are averaged, so R has the
    same expectation for every n_proj; only its variance shrinks (as 1/n_proj).

    Args:
        model: a network taking ``x`` and returning logits (B, C); a :class:`Normalized` model (also
            inside DDP) is split so that J is taken after its normalisation.
        x: input batch (B, ...) on the model's device.
        n_proj: random projections per sample (>= 1), or 0 for exact.
        method: ``"auto"``, ``"vjp"``, ``"jvp"`` or ``"exact"``.
        generator: random generator for the projections (dropout masks use the global generator,
            as in a plain forward pass).

    Returns:
        ``(logits, R)``: logits (B, C) and the scalar R, both attached to the parameters' graph.

    Raises:
        ConfigError: bad ``n_proj`` or ``method``.
        ShapeError: ``x`` is not a floating-point batch, or the model does not return (B, C) logits.
    """
    n = _check_n_proj(n_proj)
    if method not in METHODS:
        raise ConfigError(f"unknown Jacobian method {method!r}; choose one of {', '.join(METHODS)}")
    _check_input(x)
    normalize, body = split_normalization(model)
    z = normalize(x)
    if n == 0 or method == "exact":
        return _penalty_exact(body, z)
    if method == "vjp":
        return _penalty_vjp(body, z, n, generator)
    if method == "jvp":
        try:
            return _penalty_jvp(body, z, n, generator)
        except (RuntimeError, NotImplementedError) as exc:
            if not _is_forward_ad_gap(exc):
                raise
            raise ConfigError(f"forward mode (method='jvp', n_proj={n}) is not available for this model: "
                              f"{exc}. Use method='vjp', or 'auto', which falls back to it") from exc
    # auto: forward mode unless it failed on this network before
    several = n > 1
    key = body.wrapper if isinstance(body, _BodyThroughWrapper) else body  # stable across calls
    if not isinstance(key, nn.Module):
        key = None
    if key is None or several not in _NO_FORWARD_AD.get(key, ()):
        try:
            return _penalty_jvp(body, z, n, generator)
        except (RuntimeError, NotImplementedError):
            pass  # reverse mode below raises its own error if the input itself is at fault
        result = _penalty_vjp(body, z, n, generator)
        if key is not None:
            _NO_FORWARD_AD.setdefault(key, set()).add(several)
        return result
    return _penalty_vjp(body, z, n, generator)


def jacobian_norms(model: nn.Module, x: Tensor, *, normalized: bool = False,
                   batch_size: int | None = None) -> Tensor:
    """Exact per-sample Frobenius norms ``||J(x_b)||_F`` (not squared), shape (B,).

    J is the derivative of the logits with respect to the given ``x`` (pixels in [0, 1]) or, with
    ``normalized=True``, with respect to the normalised input (the paper's convention, the ||J||_F of
    its Table 1). All C rows of J are computed with one vectorised backward pass per chunk.

    Works with grad mode on or off, keeps no graph (the result is detached), and leaves the model's
    train/eval mode and its parameters' ``requires_grad`` untouched (put the model in eval mode first
    for deterministic norms with dropout).

    Args:
        model: a network returning logits (B, C).
        x: input batch (B, ...).
        normalized: differentiate with respect to the normalised input instead of ``x``.
        batch_size: samples per chunk (default 256).

    Raises:
        ConfigError: ``batch_size`` below 1.
        ShapeError: ``x`` is not a floating-point batch or the model does not return (B, C) logits.
    """
    _check_input(x)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if normalized:
        prep, fn = split_normalization(model)
    else:
        prep, fn = (lambda t: t), model
    chunks = x.split(256 if batch_size is None else int(batch_size))
    norms = []
    # torch.func transforms differentiate inside no_grad (they do not follow the outer grad mode);
    # no_grad keeps any graph to the parameters from being recorded.
    with torch.no_grad():
        for chunk in chunks:
            z = prep(chunk.detach())
            logits, rows_fn = _reverse(fn, z, create_graph=False)
            batch, classes = _check_logits(logits, z.shape[0])
            norms.append(_exact_sq_norms(rows_fn, batch, classes, logits).detach().sqrt())
    return torch.cat(norms)
