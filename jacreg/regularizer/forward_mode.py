"""Forward-mode Jacobian-vector products J u of a network, for the ``"jvp"`` estimator.

The ``"jvp"`` estimator of the Jacobian regularizer uses ``||J||_F^2 = E_u ||J u||^2`` for
``u ~ N(0, I_D)`` in input space (Hoffman, Roberts & Yaida 2019 project in output space instead, their
Algorithm 1; both are unbiased). J u is a forward-mode derivative: one pass of the network on
(primal, tangent) pairs.

torch.autograd.forward_ad is exact and general, but for a layer whose weight carries no tangent its
rules still evaluate (and later differentiate) the weight-tangent term with a zero tensor: every
convolution and linear layer runs twice in the tangent pass (LeNet' on CPU: a JR step through
forward_ad takes about 2.0x a plain step, through this evaluator about 1.7x; benchmarks/jr_step.py).
The evaluator here walks the traced graph of the network once (:mod:`jacreg.regularizer.traced`),
computing each node's primal value with the layer itself and its tangent with the layer's linear part
(convolution without bias, max-pooling by gathering at the primal's argmax, tanh' from the primal
output, the primal's dropout mask, ...). Tangents carry a leading projection dimension K so that
``n_proj`` input-space directions share the single primal forward pass. Any node without a rule goes
through ``torch.func.jvp`` (exact, just not specialised), and a network that cannot be traced uses
forward_ad / ``torch.func.jvp`` as a whole.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any, SupportsIndex, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad as fwAD
from torch.fx import Node
from torch.fx.node import map_arg
from torch.utils._pytree import tree_map

from . import kernels
from .traced import (
    NotHandled,
    activations_before_max_pool,
    bind,
    call,
    find_rule,
    fold,
    forget,
    functorch_ok,
    no_derivative,
    pair,
    pool_arguments,
    program_for,
    shift_dim,
)

__all__ = ["is_forward_ad_gap", "jvp_forward", "jvp_generic"]

Env = dict[Node, tuple[Any, Any]]  # node -> (primal, tangents with a leading dimension K, or None)
Dual = tuple[Tensor, Tensor]  # a rule's (primal, tangents) for a node with a tensor output
Rule = Callable[[Any, Node, Env], tuple[Any, Any]]  # (module, function or method name, node, env)
# torch.func.jvp without has_aux: (output, tangents); its annotation also allows the 3-tuple with aux.
_Pair = tuple[Any, Any]


def _unary(node: Node, env: Env) -> tuple[Tensor, Tensor]:
    """The (primal, tangent) of a node's single tensor input, or NotHandled."""
    if not node.args or not isinstance(node.args[0], Node):
        raise NotHandled
    others = list(node.args[1:]) + list(node.kwargs.values())
    if any(isinstance(a, Node) and env[a][1] is not None for a in others):
        raise NotHandled
    p, t = env[node.args[0]]
    if not isinstance(p, Tensor) or t is None:
        raise NotHandled
    return p, t


def _conv_rule(mod: nn.Conv1d | nn.Conv2d | nn.Conv3d, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    dims = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}[type(mod)]
    if len(node.args) != 1 or node.kwargs or p.dim() != dims:
        raise NotHandled
    if dims == 4 and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
        conf = (mod.stride, mod.padding, mod.dilation, mod.groups)
        out = kernels.conv2d(p, mod.weight, mod.bias, *conf)
        tan = kernels.conv2d(fold(t), mod.weight, None, *conf)  # the linear part: no bias
    else:
        out = mod(p)
        tan = mod._conv_forward(fold(t), mod.weight, None)
    return out, tan.view(t.shape[0], *out.shape)


def _linear_rule(mod: nn.Linear, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    return mod(p), F.linear(t, mod.weight)



def _pointwise(t: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` on the tangents, which broadcast against primal-shaped tensors. With one tangent the
    leading dimension is squeezed away first: broadcasting would make the backward reduce over it
    (an extra full-size fill and sum per layer)."""
    if t.shape[0] == 1:
        return fn(t.squeeze(0)).unsqueeze(0)
    return fn(t)


def _tanh(p: Tensor, t: Tensor) -> Dual:
    y = torch.tanh(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.tanh_backward(u, y))  # u * (1 - y^2), one kernel


def _sigmoid(p: Tensor, t: Tensor) -> Dual:
    y = torch.sigmoid(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.sigmoid_backward(u, y))  # u * y * (1 - y)


def _relu(p: Tensor, t: Tensor) -> Dual:
    y = torch.relu(p)
    return y, _pointwise(t, lambda u: torch.ops.aten.threshold_backward(u, y, 0))  # u where y > 0


def _activation_rule(fn: Callable[[Tensor, Tensor], Dual]) -> Rule:
    def rule(target: Any, node: Node, env: Env) -> Dual:
        p, t = _unary(node, env)
        return fn(p, t)
    return rule


_ACTIVATIONS: dict[str, Callable[[Tensor, Tensor], Dual]] = {
    "tanh": _tanh, "sigmoid": _sigmoid, "relu": _relu}


def _max_pool2d(p: Tensor, t: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                ceil_mode: bool, activation: str | None = None) -> Dual:
    """Max pooling's tangent: the tangent read at the primal's argmax (the same indices). With
    ``activation`` (applied before the pooling in the network, see
    :func:`jacreg.regularizer.traced.activations_before_max_pool`) it is applied after, to the pooled
    values."""
    if p.dim() != 4:
        raise NotHandled
    out, idx = kernels.max_pool2d_with_indices(p, pair(kernel_size), pair(stride if stride else kernel_size),
                                               pair(padding), pair(dilation), ceil_mode)
    k, index = t.shape[0], idx.flatten(-2)
    if k == 1:
        tan = t.squeeze(0).flatten(-2).gather(-1, index).view(1, *out.shape)
    else:
        tan = t.flatten(-2).gather(-1, index.unsqueeze(0).expand(k, -1, -1, -1)).view(k, *out.shape)
    if activation is not None:
        return _ACTIVATIONS[activation](out, tan)
    return out, tan


def _max_pool_rule(target: Any, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    return _max_pool2d(p, t, *pool_arguments(target, node, p, lambda n: env[n][0]))


def _linear_module_rule(mod: nn.Module, node: Node, env: Env) -> Dual:
    """Layers that are linear in their input and act per sample (pooling by averaging)."""
    p, t = _unary(node, env)
    dims = {nn.AvgPool1d: 3, nn.AvgPool2d: 4, nn.AvgPool3d: 5, nn.AdaptiveAvgPool1d: 3,
            nn.AdaptiveAvgPool2d: 4, nn.AdaptiveAvgPool3d: 5}[type(mod)]
    if len(node.args) != 1 or node.kwargs or p.dim() != dims:
        raise NotHandled
    out = mod(p)
    return out, mod(fold(t)).view(t.shape[0], *out.shape)


def _dropout(p: Tensor, t: Tensor, prob: float, training: bool) -> Dual:
    if not training or prob == 0.0:
        return p, t
    if prob == 1.0:
        return p * 0.0, t * 0.0
    # One mask for the primal and every tangent: the Jacobian of the very network that gave the logits.
    mask = torch.empty_like(p).bernoulli_(1.0 - prob).div_(1.0 - prob)
    return p * mask, _pointwise(t, lambda u: u * mask)


def _dropout_module_rule(mod: nn.Dropout, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    return _dropout(p, t, float(mod.p), mod.training)


def _dropout_function_rule(fn: Any, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    bound = bind(node, p, ("input", "p", "training", "inplace"), lambda n: env[n][0])
    prob, training = bound.get("p", 0.5), bound.get("training", True)
    if not isinstance(prob, (int, float)) or not isinstance(training, bool):
        raise NotHandled
    return _dropout(p, t, float(prob), training)


def _batch_norm_rule(mod: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d, node: Node, env: Env) -> Dual:
    """Batch norm: a per-channel affine map with running statistics (eval mode); with batch statistics
    (train mode) the linearisation of the normalisation, which couples the samples of the batch."""
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs or p.dim() < 2:
        raise NotHandled
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


def _flatten_module_rule(mod: nn.Flatten, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    return mod(p), t.flatten(shift_dim(mod.start_dim), shift_dim(mod.end_dim))


def _flatten_function_rule(fn: Any, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    bound = bind(node, p, ("input", "start_dim", "end_dim"), lambda n: env[n][0])
    start, end = bound.get("start_dim", 0), bound.get("end_dim", -1)
    if not isinstance(start, int) or not isinstance(end, int):
        raise NotHandled
    return torch.flatten(p, start, end), t.flatten(shift_dim(start), shift_dim(end))


def _identity_rule(mod: nn.Module, node: Node, env: Env) -> Dual:
    p, t = _unary(node, env)
    return mod(p), t


def _add_rule(fn: Any, node: Node, env: Env) -> Dual:
    """a + b (and a - b) with tensors of the same shape, or a tensor and a constant."""
    if len(node.args) != 2 or node.kwargs:
        raise NotHandled
    sign = -1.0 if fn in (operator.sub, operator.isub, torch.sub) else 1.0
    operands: Iterator[tuple[Any, Any]] = (env[a] if isinstance(a, Node) else (a, None) for a in node.args)
    (pa, ta), (pb, tb) = operands
    out = pa - pb if sign < 0 else pa + pb
    for p_in, t_in in ((pa, ta), (pb, tb)):
        if t_in is not None and (not isinstance(p_in, Tensor) or p_in.shape != out.shape):
            raise NotHandled
    if ta is None:
        return out, tb if sign > 0 else -tb
    if tb is None:
        return out, ta
    return out, ta + tb if sign > 0 else ta - tb


def _scale_rule(fn: Any, node: Node, env: Env) -> Dual:
    """a * s, s * a, a / s with a python number s."""
    if len(node.args) != 2 or node.kwargs:
        raise NotHandled
    a, b = node.args
    if fn in (operator.mul, operator.imul) and isinstance(a, (int, float)) and isinstance(b, Node):
        a, b = b, a
    if not isinstance(a, Node) or not isinstance(b, (int, float)) or isinstance(b, bool):
        raise NotHandled
    p, t = env[a]
    if t is None:
        raise NotHandled
    if fn in (operator.truediv, operator.itruediv):
        return p / b, t / b
    return p * b, t * b


def _getitem_rule(fn: Any, node: Node, env: Env) -> tuple[Any, Any]:
    """Picking an element of a tuple/list output (tensor indexing is generic)."""
    src, idx = node.args
    if not isinstance(src, Node) or isinstance(idx, Node):
        raise NotHandled
    p, t = env[src]
    if not isinstance(p, (tuple, list)):
        raise NotHandled
    i = cast("SupportsIndex | slice", idx)  # a constant: an int or a slice in practice
    return p[i], (None if t is None else t[i])


_MODULE_RULES: dict[type, Rule] = {
    nn.Conv1d: _conv_rule, nn.Conv2d: _conv_rule, nn.Conv3d: _conv_rule,
    nn.Linear: _linear_rule,
    nn.Tanh: _activation_rule(_tanh), nn.Sigmoid: _activation_rule(_sigmoid),
    nn.ReLU: _activation_rule(_relu),
    nn.MaxPool2d: _max_pool_rule,
    nn.AvgPool1d: _linear_module_rule, nn.AvgPool2d: _linear_module_rule, nn.AvgPool3d: _linear_module_rule,
    nn.AdaptiveAvgPool1d: _linear_module_rule, nn.AdaptiveAvgPool2d: _linear_module_rule,
    nn.AdaptiveAvgPool3d: _linear_module_rule,
    nn.Dropout: _dropout_module_rule,
    nn.BatchNorm1d: _batch_norm_rule, nn.BatchNorm2d: _batch_norm_rule, nn.BatchNorm3d: _batch_norm_rule,
    nn.Flatten: _flatten_module_rule,
    nn.Identity: _identity_rule,
}

_FUNCTION_RULES: dict[Any, Rule] = {
    torch.tanh: _activation_rule(_tanh), F.tanh: _activation_rule(_tanh),
    torch.sigmoid: _activation_rule(_sigmoid), F.sigmoid: _activation_rule(_sigmoid),
    torch.relu: _activation_rule(_relu), F.relu: _activation_rule(_relu),
    F.max_pool2d: _max_pool_rule,
    F.dropout: _dropout_function_rule,
    torch.flatten: _flatten_function_rule,
    operator.add: _add_rule, operator.iadd: _add_rule, torch.add: _add_rule,
    operator.sub: _add_rule, operator.isub: _add_rule, torch.sub: _add_rule,
    operator.mul: _scale_rule, operator.imul: _scale_rule,
    operator.truediv: _scale_rule, operator.itruediv: _scale_rule,
    operator.getitem: _getitem_rule,
}
_METHOD_RULES: dict[str, Rule] = {
    "tanh": _activation_rule(_tanh), "sigmoid": _activation_rule(_sigmoid), "relu": _activation_rule(_relu),
}


class _DualProgram:
    """The traced graph of a network, evaluated on (primal, K tangents)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self._fusable: dict[Node, str] | None = None

    def __call__(self, root: nn.Module, z: Tensor, tangents: Tensor) -> tuple[Any, Any]:
        env: Env = {}
        first = True
        if self._fusable is None:
            self._fusable = activations_before_max_pool(root, self.nodes)
        fusions, deferred = self._fusable, {}
        for node in self.nodes:
            if node.op == "placeholder":
                if first:
                    env[node], first = (z, tangents), False
                elif node.args:  # an optional argument left at its default
                    env[node] = (node.args[0], None)
                else:
                    raise NotHandled
            elif node.op == "get_attr":
                value: Any = root
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                env[node] = (value, None)
            elif node.op == "output":
                out = node.args[0]
                if not isinstance(out, Node):
                    raise NotHandled
                return env[out]
            elif node in fusions and env[cast(Node, node.args[0])][1] is not None:
                env[node] = env[cast(Node, node.args[0])]  # the pre-activation, until the pooling
                deferred[node] = fusions[node]
            elif node.args and node.args[0] in deferred:
                act = cast(Node, node.args[0])
                target = root.get_submodule(str(node.target)) if node.op == "call_module" else node.target
                p, t = env[act]
                try:
                    env[node] = _max_pool2d(p, t, *pool_arguments(target, node, p, lambda n: env[n][0]),
                                            activation=deferred.pop(act))
                except NotHandled:  # apply the activation after all, then the pooling as usual
                    env[act] = _ACTIVATIONS[fusions[act]](p, t)
                    env[node] = self._eval(root, node, env, tangents.shape[0])
            else:
                env[node] = self._eval(root, node, env, tangents.shape[0])
        raise NotHandled

    @staticmethod
    def _eval(root: nn.Module, node: Node, env: Env, k: int) -> tuple[Any, Any]:
        op = node.op
        target = root.get_submodule(str(node.target)) if op == "call_module" else node.target
        active = [n for n in node.all_input_nodes if env[n][1] is not None]
        if not active or no_derivative(node):
            args = map_arg(node.args, lambda n: env[n][0])
            kwargs = map_arg(node.kwargs, lambda n: env[n][0])
            return call(op, target, args, kwargs), None
        rule = find_rule(op, target, _MODULE_RULES, _METHOD_RULES, _FUNCTION_RULES)
        if rule is not None:
            try:
                return rule(target, node, env)
            except NotHandled:
                pass
        return _generic_jvp(op, target, node, env, active, k)


def _generic_jvp(op: str, target: Any, node: Node, env: Env, active: list[Node],
                 k: int) -> tuple[Any, Any]:
    """Any node, exactly, through torch.func.jvp (vmapped over the K tangents)."""
    primals = tuple(env[n][0] for n in active)

    def fn(*values: Tensor) -> Any:
        sub = dict(zip(active, values, strict=True))
        args = map_arg(node.args, lambda n: sub[n] if n in sub else env[n][0])
        kwargs = map_arg(node.kwargs, lambda n: sub[n] if n in sub else env[n][0])
        return call(op, target, args, kwargs)

    if k == 1:
        out, tan = cast(_Pair, torch.func.jvp(fn, primals, tuple(env[n][1].squeeze(0) for n in active)))
        return out, tree_map(lambda a: a.unsqueeze(0) if isinstance(a, Tensor) else a, tan)
    out, tan = cast(_Pair, torch.func.vmap(lambda *ts: torch.func.jvp(fn, primals, ts), randomness="same")(
        *(env[n][1] for n in active)))
    return tree_map(lambda a: a[0] if isinstance(a, Tensor) else a, out), tan


def jvp_generic(body: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor) -> tuple[Any, Any]:
    """J u for the K tangents with PyTorch's own forward mode (forward_ad, or torch.func for K > 1)."""
    if tangents.shape[0] == 1:
        with fwAD.dual_level():
            out = body(fwAD.make_dual(z, tangents[0]))
            if not isinstance(out, Tensor):
                return out, None
            primal, tangent = fwAD.unpack_dual(out)
        return primal, None if tangent is None else tangent.unsqueeze(0)
    if not functorch_ok(body):
        raise NotImplementedError("forward mode with several tangents uses torch.func, which does not "
                                  "support DataParallel/DistributedDataParallel")
    out, tangent = cast(_Pair, torch.func.vmap(lambda u: torch.func.jvp(body, (z,), (u,)),
                                               randomness="same")(tangents))
    return (out[0] if isinstance(out, Tensor) else out), tangent


def jvp_forward(body: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor) -> tuple[Any, Any]:
    """One forward pass of ``body`` at ``z`` with K tangents (K, *z.shape): ``(output, J u)``.

    ``J u`` has shape (K, *output.shape), or is None when the output does not depend on ``z``. The
    traced evaluator is used when the network can be traced, torch's forward AD otherwise (and, with a
    warning, for good when a rule fails on it).
    """
    program = program_for(body, "forward", _DualProgram)
    if program is not None:
        try:
            return program(cast(nn.Module, body), z, tangents)  # program_for takes modules only
        except Exception as exc:  # a rule bug or an unusual layer: the exact generic path decides
            out = jvp_generic(body, z, tangents)  # raises the canonical error for a bad input
            forget(body, "forward")
            warnings.warn(f"jacreg: fast forward-mode path failed for {type(body).__name__} ({exc}); "
                          "using torch forward AD", RuntimeWarning, stacklevel=3)
            return out
    return jvp_generic(body, z, tangents)


def is_forward_ad_gap(exc: BaseException) -> bool:
    """An error saying that forward mode (or a torch.func transform) is not available for some layer."""
    text = str(exc).lower()
    words = ("forward ad", "forward-mode", "forward mode", "jvp", "transform", "storage")
    return isinstance(exc, NotImplementedError) or any(word in text for word in words)
