"""Reverse-mode rows ``v^T J`` of a network, differentiable in its parameters (Algorithm 1, exact mode).

Algorithm 1 of Hoffman, Roberts & Yaida (2019) needs, per sample, ``v^T J`` -- the gradient of
``v . logits`` with respect to the input -- as a differentiable function of the parameters; the paper's
code calls ``autograd.grad(logits, x, v, create_graph=True)``. That graph makes the final
``loss.backward()`` do work the penalty does not need: the input is a leaf that requires grad, so the
first convolution's input gradient is formed a second time, for ``x.grad``; and every kernel runs with
oneDNN's defaults, slow on the first layer's shapes (LeNet': the 6 -> 1 channel transposed convolution
is the costliest kernel of the step).

:func:`tape_for` runs the network's traced graph (:mod:`jacreg.regularizer.traced`) forward once and
records, for each node that depends on the input, a *pullback*: a function from the cotangent of the
node's output (with a leading dimension K of directions) to the cotangents of its inputs, written with
differentiable torch operations. :meth:`Tape.rows` runs the pullbacks backwards for any K cotangents,
as often as needed (exact mode: the C one-hot directions). The input needs no gradient; convolutions
use :mod:`jacreg.regularizer.kernels`; max-pooling, activations and dropout reuse what the forward pass
computed (indices, outputs, masks), and a tanh, sigmoid or ReLU before a max pooling is applied after
it (to a quarter of the values, :func:`jacreg.regularizer.traced.activations_before_max_pool`). A node
without a rule goes through autograd on its own piece of graph (exact); a network that cannot be
traced goes through autograd as a whole (:func:`jacreg.regularizer.autograd_rows.reverse`).
"""

from __future__ import annotations

import contextlib
import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node
from torch.fx.node import map_arg

from . import kernels
from .traced import (
    NotHandled,
    activations_before_max_pool,
    bind,
    call,
    find_rule,
    fold,
    forget,
    no_derivative,
    pair,
    pool_arguments,
    program_for,
)

__all__ = ["Tape", "tape_for"]

Pullback = Callable[[Tensor], list[tuple[Node, Tensor]]]  # output cotangents -> (input node, cotangents)
Env = dict[Node, Any]  # node -> its value in the forward pass
Step = tuple[Tensor, Pullback]  # a rule's value and pullback for a node with a tensor output
Rule = Callable[[Any, Node, Env, set[Node]], tuple[Any, Pullback]]  # (module, function or name, ...)


class _Unsupported(Exception):
    """A node the evaluator cannot take at all (not even generically): the network falls back."""


# --------------------------------------------------------------------------------------------------
# Rules: forward value and pullback of one node
# --------------------------------------------------------------------------------------------------


def _unary(node: Node, env: Env, active: set[Node]) -> tuple[Node, Tensor]:
    """The input node and its value for a node whose only input depending on z is its first argument."""
    if not node.args or not isinstance(node.args[0], Node) or node.args[0] not in active:
        raise NotHandled
    others = list(node.args[1:]) + list(node.kwargs.values())
    if any(isinstance(a, Node) and a in active for a in others):
        raise NotHandled
    p = env[node.args[0]]
    if not isinstance(p, Tensor):
        raise NotHandled
    return node.args[0], p


def _pointwise(c: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` on cotangents that broadcast against primal-shaped tensors; one direction is squeezed
    first, so that the parameter backward does not reduce over a broadcast dimension."""
    if c.shape[0] == 1:
        return fn(c.squeeze(0)).unsqueeze(0)
    return fn(c)


def _conv_rule(mod: nn.Conv2d, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    if (type(mod) is not nn.Conv2d or len(node.args) != 1 or node.kwargs or p.dim() != 4
            or mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
        raise NotHandled
    conf = (mod.stride, mod.padding, mod.dilation, mod.groups)
    out = kernels.conv2d(p, mod.weight, mod.bias, *conf)
    weight, size, shape = mod.weight, (p.shape[2], p.shape[3]), p.shape

    def pull(c: Tensor) -> list[tuple[Node, Tensor]]:
        g = kernels.conv2d_input_grad(fold(c), weight, size, *conf)
        return [(src, g.view(c.shape[0], *shape))]

    return out, pull


def _linear_rule(mod: nn.Linear, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    weight = mod.weight
    return mod(p), lambda c: [(src, c @ weight)]


def _summed_to(t: Tensor, like: Tensor) -> Tensor:
    """``t`` summed over its leading dimensions beyond ``like``'s (the directions K)."""
    return t.sum(tuple(range(t.dim() - like.dim()))) if t.dim() > like.dim() else t


class _TanhPullback(torch.autograd.Function):
    """``c * (1 - y^2)`` for ``y = tanh(p)``, with a backward that forms only what is needed: the
    cotangent's derivative (the same map) and the output's, ``-2 y c gg``, summed over directions."""

    @staticmethod
    def forward(ctx, c: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(c, y)
        return torch.ops.aten.tanh_backward(c, y)

    @staticmethod
    def backward(ctx, gg: Tensor) -> tuple[Tensor | None, Tensor | None]:
        c, y = ctx.saved_tensors
        dc = _TanhPullback.apply(gg, y) if ctx.needs_input_grad[0] else None
        dy = _summed_to(c * gg, y) * y * -2.0 if ctx.needs_input_grad[1] else None
        return dc, dy


class _SigmoidPullback(torch.autograd.Function):
    """``c * y * (1 - y)`` for ``y = sigmoid(p)``; the output's derivative is ``c gg (1 - 2 y)``."""

    @staticmethod
    def forward(ctx, c: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(c, y)
        return torch.ops.aten.sigmoid_backward(c, y)

    @staticmethod
    def backward(ctx, gg: Tensor) -> tuple[Tensor | None, Tensor | None]:
        c, y = ctx.saved_tensors
        dc = _SigmoidPullback.apply(gg, y) if ctx.needs_input_grad[0] else None
        dy = _summed_to(c * gg, y) * (1.0 - 2.0 * y) if ctx.needs_input_grad[1] else None
        return dc, dy


class _ReluPullback(torch.autograd.Function):
    """``c`` where ``y > 0``: piecewise constant in ``y``, so no derivative with respect to it (autograd's
    own double backward would fill and add a zero tensor of the activation's size)."""

    @staticmethod
    def forward(ctx, c: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(y)
        return torch.ops.aten.threshold_backward(c, y, 0)

    @staticmethod
    def backward(ctx, gg: Tensor) -> tuple[Tensor | None, None]:
        (y,) = ctx.saved_tensors
        return (_ReluPullback.apply(gg, y) if ctx.needs_input_grad[0] else None), None


_ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]] = {
    "tanh": (torch.tanh, _TanhPullback.apply),
    "sigmoid": (torch.sigmoid, _SigmoidPullback.apply),
    "relu": (torch.relu, _ReluPullback.apply),
}


def _activation_rule(kind: str) -> Rule:
    forward, backward = _ACTIVATIONS[kind]

    def rule(target: Any, node: Node, env: Env, active: set[Node]) -> Step:
        src, p = _unary(node, env, active)
        if len(node.args) > 1 or set(node.kwargs) - {"inplace"}:
            raise NotHandled
        y = forward(p)  # never in place: the evaluator keeps every value
        return y, lambda c: [(src, _pointwise(c, lambda u: backward(u, y)))]

    return rule


def _max_pool2d(src: Node, p: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                ceil_mode: bool, activation: str | None = None) -> Step:
    """Max pooling; its pullback sends each cotangent to the primal's argmax (scatter), linear in it.

    With ``activation`` (a monotone tanh, sigmoid or ReLU applied before the pooling in the network),
    ``pool(act(p)) = act(pool(p))`` exactly, argmax included, so the activation and its pullback run on
    the pooled tensor, a quarter of the size for 2x2 windows.
    """
    if p.dim() != 4:
        raise NotHandled
    ks, st = pair(kernel_size), pair(stride if stride else kernel_size)
    pad, dil = pair(padding), pair(dilation)
    out, idx = kernels.max_pool2d_with_indices(p, ks, st, pad, dil, ceil_mode)
    shape, held = p.shape, p.detach()
    pre = None
    if activation is not None:
        forward, backward = _ACTIVATIONS[activation]
        y = forward(out)
        pre = lambda c: _pointwise(c, lambda u: backward(u, y))  # noqa: E731
        out = y

    def pull(c: Tensor) -> list[tuple[Node, Tensor]]:
        if pre is not None:
            c = pre(c)
        if c.shape[0] == 1:
            g = torch.ops.aten.max_pool2d_with_indices_backward(c[0], held, ks, st, pad, dil, ceil_mode, idx)
            return [(src, g.unsqueeze(0))]
        flat = c.flatten(-2)
        index = idx.flatten(-2).unsqueeze(0).expand_as(flat)
        g = flat.new_zeros(*flat.shape[:-1], shape[2] * shape[3]).scatter_add(-1, index, flat)
        return [(src, g.view(c.shape[0], *shape))]

    return out, pull


def _max_pool_rule(target: Any, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    return _max_pool2d(src, p, *pool_arguments(target, node, p, env.__getitem__))


def _global_avg_pool_rule(mod: nn.AdaptiveAvgPool2d, node: Node, env: Env, active: set[Node]) -> Step:
    """Adaptive average pooling to 1x1 (ResNet's head); other sizes are generic."""
    src, p = _unary(node, env, active)
    if len(node.args) != 1 or node.kwargs or p.dim() != 4 or pair(mod.output_size) != [1, 1]:
        raise NotHandled
    shape, area = p.shape, p.shape[2] * p.shape[3]
    return mod(p), lambda c: [(src, (c / area).expand(c.shape[0], *shape))]


def _dropout(src: Node, p: Tensor, prob: float, training: bool) -> Step:
    if not training or prob == 0.0:
        return p, lambda c: [(src, c)]
    if prob == 1.0:
        return p * 0.0, lambda c: [(src, c * 0.0)]
    # One mask for the logits and every direction: the Jacobian of the very network that gave the logits.
    mask = torch.empty_like(p).bernoulli_(1.0 - prob).div_(1.0 - prob)
    return p * mask, lambda c: [(src, _pointwise(c, lambda u: u * mask))]


def _dropout_module_rule(mod: nn.Dropout, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    return _dropout(src, p, float(mod.p), mod.training)


def _dropout_function_rule(fn: Any, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    b = bind(node, p, ("input", "p", "training", "inplace"), lambda n: env[n])
    prob, training = b.get("p", 0.5), b.get("training", True)
    if not isinstance(prob, (int, float)) or not isinstance(training, bool):
        raise NotHandled
    return _dropout(src, p, float(prob), training)


def _batch_norm_rule(mod: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d, node: Node, env: Env,
                     active: set[Node]) -> Step:
    """Batch norm: a per-channel scale with running statistics; with batch statistics (train mode)
    the pullback of the normalisation, which couples the samples of the batch."""
    src, p = _unary(node, env, active)
    if len(node.args) != 1 or node.kwargs or p.dim() < 2:
        raise NotHandled
    out = mod(p)  # also updates the running statistics once, as a plain forward pass does
    shape = (-1, *([1] * (p.dim() - 2)))
    weight = None if mod.weight is None else mod.weight.view(shape)
    if not mod.training and mod.running_var is not None:
        scale = torch.rsqrt(mod.running_var + mod.eps).view(shape)
        if weight is not None:
            scale = scale * weight
        return out, lambda c: [(src, c * scale)]
    dims = [0, *range(2, p.dim())]
    inv = torch.rsqrt(p.var(dims, unbiased=False, keepdim=True) + mod.eps)
    xhat = (p - p.mean(dims, keepdim=True)) * inv
    cdims = [d + 1 for d in dims]

    def pull(c: Tensor) -> list[tuple[Node, Tensor]]:
        cw = c if weight is None else c * weight
        g = (cw - cw.mean(cdims, keepdim=True) - xhat * (cw * xhat).mean(cdims, keepdim=True)) * inv
        return [(src, g)]

    return out, pull


def _reshape_pullback(src: Node, shape: torch.Size) -> Pullback:
    return lambda c: [(src, c.reshape(c.shape[0], *shape))]


def _flatten_module_rule(mod: nn.Flatten, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    if len(node.args) != 1 or node.kwargs:
        raise NotHandled
    return mod(p), _reshape_pullback(src, p.shape)


def _reshape_rule(target: Any, node: Node, env: Env, active: set[Node]) -> Step:
    """flatten / view / reshape / squeeze / unsqueeze / contiguous: the same elements in the same
    order, so the pullback is a reshape back."""
    src, p = _unary(node, env, active)
    out = call(node.op, target, map_arg(node.args, lambda n: env[n]), map_arg(node.kwargs, lambda n: env[n]))
    if not isinstance(out, Tensor) or out.numel() != p.numel():
        raise NotHandled
    return out, _reshape_pullback(src, p.shape)


def _identity_rule(mod: nn.Module, node: Node, env: Env, active: set[Node]) -> Step:
    src, p = _unary(node, env, active)
    return mod(p), lambda c: [(src, c)]


def _add_rule(fn: Any, node: Node, env: Env, active: set[Node]) -> Step:
    """a + b, a - b (also in place in the source): tensors of the output's shape, or constants."""
    if len(node.args) != 2 or node.kwargs:
        raise NotHandled
    sign = -1.0 if fn in (operator.sub, operator.isub, torch.sub) else 1.0
    operands: Iterator[Any] = (env[n] if isinstance(n, Node) else n for n in node.args)
    a, b = operands
    out = a - b if sign < 0 else a + b
    parts = []
    for arg, s in zip(node.args, (1.0, sign), strict=True):
        if isinstance(arg, Node) and arg in active:
            if not isinstance(env[arg], Tensor) or env[arg].shape != out.shape:
                raise NotHandled
            parts.append((arg, s))
    return out, lambda c: [(n, c if s > 0 else -c) for n, s in parts]


def _scale_rule(fn: Any, node: Node, env: Env, active: set[Node]) -> Step:
    """a * s, s * a, a / s with a python number s."""
    if len(node.args) != 2 or node.kwargs:
        raise NotHandled
    a, s = node.args
    if fn in (operator.mul, operator.imul) and isinstance(a, (int, float)) and isinstance(s, Node):
        a, s = s, a
    if not isinstance(a, Node) or a not in active or not isinstance(s, (int, float)) or isinstance(s, bool):
        raise NotHandled
    if fn in (operator.truediv, operator.itruediv):
        return env[a] / s, lambda c: [(a, c / s)]
    return env[a] * s, lambda c: [(a, c * s)]


_MODULE_RULES: dict[type, Rule] = {
    nn.Conv2d: _conv_rule, nn.Linear: _linear_rule,
    nn.Tanh: _activation_rule("tanh"), nn.Sigmoid: _activation_rule("sigmoid"),
    nn.ReLU: _activation_rule("relu"),
    nn.MaxPool2d: _max_pool_rule, nn.AdaptiveAvgPool2d: _global_avg_pool_rule,
    nn.Dropout: _dropout_module_rule,
    nn.BatchNorm1d: _batch_norm_rule, nn.BatchNorm2d: _batch_norm_rule, nn.BatchNorm3d: _batch_norm_rule,
    nn.Flatten: _flatten_module_rule, nn.Identity: _identity_rule,
}
_FUNCTION_RULES: dict[Any, Rule] = {
    torch.tanh: _activation_rule("tanh"), F.tanh: _activation_rule("tanh"),
    torch.sigmoid: _activation_rule("sigmoid"), F.sigmoid: _activation_rule("sigmoid"),
    torch.relu: _activation_rule("relu"), F.relu: _activation_rule("relu"),
    F.max_pool2d: _max_pool_rule, F.dropout: _dropout_function_rule,
    torch.flatten: _reshape_rule, torch.reshape: _reshape_rule,
    operator.add: _add_rule, operator.iadd: _add_rule, torch.add: _add_rule,
    operator.sub: _add_rule, operator.isub: _add_rule, torch.sub: _add_rule,
    operator.mul: _scale_rule, operator.imul: _scale_rule,
    operator.truediv: _scale_rule, operator.itruediv: _scale_rule,
}
_METHOD_RULES: dict[str, Rule] = {
    "tanh": _activation_rule("tanh"), "sigmoid": _activation_rule("sigmoid"),
    "relu": _activation_rule("relu"),
    **{m: _reshape_rule for m in ("view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous")},
}


def _generic(op: str, target: Any, node: Node, env: Env, inputs: list[Node]) -> Step:
    """Any node with a tensor output, exactly, through autograd: the pullback is
    ``autograd.grad(out, inputs, c, create_graph=True)`` on the node's own piece of the graph.

    (Not torch.func.vjp: it silently drops the second derivative of a custom autograd Function marked
    ``once_differentiable`` and raises nothing.) Inputs that need no gradient are stood in for by
    leaves, whose gradients are discarded.
    """
    graph = torch.is_grad_enabled()  # without (exact norms), every input is stood in for
    values = {n: env[n] if graph and env[n].requires_grad else env[n].detach().requires_grad_(True)
              for n in inputs}
    with torch.enable_grad():
        out = call(op, target, map_arg(node.args, lambda n: values.get(n, env[n])),
                   map_arg(node.kwargs, lambda n: values.get(n, env[n])))
    if not isinstance(out, Tensor):
        raise _Unsupported(f"{node.format_node()} does not return a tensor")
    leaves = [values[n] for n in inputs]

    def pull(c: Tensor) -> list[tuple[Node, Tensor]]:
        if not out.requires_grad:
            return []
        per_direction = [torch.autograd.grad(out, leaves, ck, retain_graph=True, create_graph=True,
                                             allow_unused=True) for ck in c]
        grads = []
        for i, n in enumerate(inputs):
            parts = [g[i] for g in per_direction]
            if parts[0] is not None:
                grads.append((n, torch.stack(parts)))
        return grads

    return out, pull


# --------------------------------------------------------------------------------------------------
# The tape
# --------------------------------------------------------------------------------------------------


class Tape:
    """One forward pass of a traced network, ready to give ``v^T J`` for any cotangents ``v``."""

    def __init__(self, logits: Any, out: Node | None, source: Node, steps: list[tuple[Node, Pullback]],
                 z: Tensor) -> None:
        self.logits = logits
        self._out, self._source, self._steps, self._z = out, source, steps, z

    def rows(self, cotangents: Tensor) -> Tensor:
        """``cotangents[k]^T J`` for each k: shape (K, *z.shape); differentiable in the parameters.

        On the CPU the directions go through the network one at a time: batch-sized kernels stay in
        cache, and the pullbacks of activations and pooling need no broadcasting over directions
        (LeNet' exact mode: about 1.2x faster than two directions at a time). On a GPU they go
        together, as more samples.
        """
        if cotangents.shape[0] > 1 and self._z.device.type == "cpu":
            return torch.stack([self._rows(c.unsqueeze(0))[0] for c in cotangents])
        return self._rows(cotangents)

    def _rows(self, cotangents: Tensor) -> Tensor:
        k = cotangents.shape[0]
        if self._out is None:  # the output does not depend on the input: J = 0
            return self._z.new_zeros((k, *self._z.shape))
        cots: dict[Node, Tensor] = {self._out: cotangents}
        for node, pull in reversed(self._steps):
            c = cots.pop(node, None)
            if c is None:
                continue
            for src, g in pull(c):
                prev = cots.get(src)
                cots[src] = g if prev is None else prev + g
        rows = cots.get(self._source)
        return self._z.new_zeros((k, *self._z.shape)) if rows is None else rows


class _ReverseProgram:
    """The traced graph of a network, evaluated forward with a pullback recorded per node."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self._fusable: dict[Node, str] | None = None

    def _fusions(self, root: nn.Module) -> dict[Node, str]:
        if self._fusable is None:
            self._fusable = activations_before_max_pool(root, self.nodes)
        return self._fusable

    def __call__(self, root: nn.Module, z: Tensor) -> Tape:
        env: Env = {}
        active: set[Node] = set()
        steps: list[tuple[Node, Pullback]] = []
        source: Node | None = None
        fusions, deferred = self._fusions(root), {}
        for node in self.nodes:
            if node.op == "placeholder":
                if source is None:
                    env[node], source = z, node
                    active.add(node)
                elif node.args:  # an optional argument left at its default
                    env[node] = node.args[0]
                else:
                    raise _Unsupported("a forward with several required inputs")
            elif node.op == "get_attr":
                value: Any = root
                for part in str(node.target).split("."):
                    value = getattr(value, part)
                env[node] = value
            elif node.op == "output":
                out = node.args[0]
                if not isinstance(out, Node) or source is None:
                    raise _Unsupported("a forward that does not return one tensor")
                return Tape(env[out], out if out in active else None, source, steps, z)
            elif node in fusions and node.args[0] in active:
                env[node] = env[cast(Node, node.args[0])]  # the pre-activation, until the pooling
                deferred[node] = fusions[node]
                active.add(node)
            elif node.args and node.args[0] in deferred:
                act = cast(Node, node.args[0])
                try:
                    target = root.get_submodule(str(node.target)) if node.op == "call_module" else node.target
                    pre = env[act]
                    out, pull = _max_pool2d(cast(Node, act.args[0]), pre,
                                            *pool_arguments(target, node, pre, env.__getitem__),
                                            activation=deferred.pop(act))
                except NotHandled:  # apply the activation after all, then the pooling as usual
                    env[act], act_pull = _activation_rule(fusions[act])(None, act, env, active)
                    steps.append((act, act_pull))
                    self._eval(root, node, env, active, steps)
                else:
                    env[node] = out
                    active.add(node)
                    steps.append((node, pull))
            else:
                self._eval(root, node, env, active, steps)
        raise _Unsupported("no output")

    @staticmethod
    def _eval(root: nn.Module, node: Node, env: Env, active: set[Node],
              steps: list[tuple[Node, Pullback]]) -> None:
        op = node.op
        target = root.get_submodule(str(node.target)) if op == "call_module" else node.target
        inputs = [n for n in node.all_input_nodes if n in active]
        if not inputs or no_derivative(node):
            args, kwargs = map_arg(node.args, lambda n: env[n]), map_arg(node.kwargs, lambda n: env[n])
            env[node] = call(op, target, args, kwargs)
            return
        rule = find_rule(op, target, _MODULE_RULES, _METHOD_RULES, _FUNCTION_RULES)
        result = None
        if rule is not None:
            with contextlib.suppress(NotHandled):
                result = rule(target, node, env, active)
        if result is None:
            result = _generic(op, target, node, env, inputs)
        env[node] = result[0]
        active.add(node)
        steps.append((node, result[1]))


def tape_for(body: Any, z: Tensor) -> Tape | None:
    """One forward pass of ``body`` at ``z`` on the fast path, or None (untraceable network: use
    :func:`reverse`). A rule that fails marks the network for the general path, with a warning."""
    program = program_for(body, "reverse", _ReverseProgram)
    if program is None:
        return None
    try:
        return program(body, z)
    except Exception as exc:  # a rule bug or an unusual layer: the general path decides
        forget(body, "reverse")
        if not isinstance(exc, _Unsupported):
            warnings.warn(f"jacreg: fast reverse-mode path failed for {type(body).__name__} ({exc}); using "
                          "autograd", RuntimeWarning, stacklevel=3)
        return None
