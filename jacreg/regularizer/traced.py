"""Traced networks for the Jacobian regularizer's two evaluators (forward and reverse mode).

Both evaluators in :mod:`jacreg.regularizer.forward_mode` and :mod:`jacreg.regularizer.reverse_mode`
walk the ``torch.fx`` graph of the network body node by node, with a cheap rule per known layer and an
exact generic rule (``torch.func``) for anything else. This module holds what they share: the
per-network cache of traced graphs (keyed by the network's structure, so that a layer added later or a
hook registered later is seen), argument binding for functional calls, and the exception a rule raises
to decline.

A network is not traced (its own forward runs, through PyTorch's autograd) when it or any submodule
has hooks, when global module hooks are set, or when it is wrapped in DataParallel/DDP, whose forward
prepares the gradient all-reduce.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node, Tracer
from torch.fx.node import map_arg
from torch.nn.modules import module as module_mod

from ..architectures import _BodyThroughWrapper

__all__ = ["NO_TANGENT_ATTRS", "NO_TANGENT_METHODS", "NotHandled", "activations_before_max_pool", "bind",
           "call", "find_rule", "fold", "forget", "functorch_ok", "no_derivative", "pair", "pool_arguments",
           "program_for", "shift_dim", "structure"]

P = TypeVar("P")
R = TypeVar("R")


class NotHandled(Exception):
    """A rule declines a node; the generic rule (``torch.func``) takes it."""


# Calls whose result does not depend on the values of their tensor argument (no derivative).
NO_TANGENT_METHODS = frozenset({"size", "dim", "numel", "nelement", "get_device", "is_contiguous",
                                "element_size", "stride", "type", "is_floating_point"})
NO_TANGENT_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"})
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def pair(v: Any) -> list[int]:
    """An int or a pair of ints (a layer's kernel size, stride, ...) as a list of two ints."""
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def shift_dim(d: int) -> int:
    """A dimension of a sample-batch tensor, counted in a tensor with one more leading dimension."""
    return d + 1 if d >= 0 else d


def fold(t: Tensor) -> Tensor:
    """(K, B, ...) -> (K*B, ...) so that a batched layer treats the K directions as more samples."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def call(op: str, target: Any, args: Any, kwargs: Any) -> Any:
    """Evaluate one fx node's operation on concrete arguments."""
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    return target(*args, **kwargs)


def bind(node: Node, first: Any, names: tuple[str, ...], values: Callable[[Node], Any]) -> dict[str, Any]:
    """A functional call's arguments by name (``first`` for the input), or NotHandled for unknown ones."""
    bound = dict(zip(names, [first, *map_arg(node.args[1:], values)], strict=False))
    bound.update(map_arg(node.kwargs, values))
    if set(bound) - set(names):
        raise NotHandled
    return bound


def no_derivative(node: Node) -> bool:
    """A method or attribute read whose result does not depend differentiably on its input (shapes,
    dtypes, devices: ``NO_TANGENT_METHODS`` / ``NO_TANGENT_ATTRS``)."""
    return ((node.op == "call_method" and node.target in NO_TANGENT_METHODS)
            or (node.target is getattr and len(node.args) == 2 and node.args[1] in NO_TANGENT_ATTRS))


def find_rule(op: str, target: Any, module_rules: dict[type, R], method_rules: dict[str, R],
              function_rules: dict[Any, R]) -> R | None:
    """An evaluator's rule for a node: by module class, method name or function (None: no rule)."""
    if op == "call_module":
        return module_rules.get(type(target))
    if op == "call_method":
        return method_rules.get(str(target))
    try:
        return function_rules.get(target)
    except TypeError:  # an unhashable callable
        return None


def pool_arguments(target: Any, node: Node, first: Any,
                   values: Callable[[Node], Any]) -> tuple[Any, Any, Any, Any, bool]:
    """(kernel_size, stride, padding, dilation, ceil_mode) of a max-pooling node (``first`` its input,
    ``values`` a node's value for its other arguments), or NotHandled."""
    if isinstance(target, nn.MaxPool2d):
        if target.return_indices or len(node.args) != 1 or node.kwargs:
            raise NotHandled
        return target.kernel_size, target.stride, target.padding, target.dilation, target.ceil_mode
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    b = bind(node, first, names, values)
    if b.get("return_indices", False) or "kernel_size" not in b:
        raise NotHandled
    return (b["kernel_size"], b.get("stride"), b.get("padding", 0), b.get("dilation", 1),
            b.get("ceil_mode", False))


_ACTIVATION_FUNCTIONS: dict[Any, str] = {torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                                         F.sigmoid: "sigmoid", torch.relu: "relu", F.relu: "relu"}
_ACTIVATION_MODULES = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu"}


def _activation_kind(root: nn.Module, node: Node) -> str | None:
    """"tanh", "sigmoid" or "relu" for a node applying that activation to its one input, else None."""
    if not node.args or len(node.args) > 1 or set(node.kwargs) - {"inplace"}:
        return None
    if node.op == "call_module":
        return _ACTIVATION_MODULES.get(type(root.get_submodule(str(node.target))))
    if node.op == "call_method":
        return str(node.target) if node.target in ("tanh", "sigmoid", "relu") and not node.kwargs else None
    if node.op == "call_function":
        try:
            return _ACTIVATION_FUNCTIONS.get(node.target)
        except TypeError:  # an unhashable callable
            return None
    return None


def _is_max_pool(root: nn.Module, node: Node) -> bool:
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))) is nn.MaxPool2d
    return node.op == "call_function" and node.target is F.max_pool2d


def activations_before_max_pool(root: nn.Module, nodes: list[Node]) -> dict[Node, str]:
    """Activation nodes (tanh, sigmoid, ReLU) whose only use is a max pooling, with their kind.

    These activations are monotone, so ``pool(act(h)) = act(pool(h))`` exactly (in floating point too):
    the evaluators apply them after the pooling, to a quarter of the values for 2x2 windows, with the
    same logits. The argmax can differ only where ``act`` rounds two different ``h`` of a window to the
    same value (ReLU below zero, where the derivative is 0 anyway, or a tie to the last bit): pooling
    ``h`` then picks the larger ``h`` instead of the first of the tied values, an equally valid
    derivative at a tie.
    """
    fusable = {}
    for node in nodes:
        kind = _activation_kind(root, node) if node.op.startswith("call_") else None
        if kind is not None and len(node.users) == 1:
            (user,) = node.users
            if _is_max_pool(root, user) and user.args and user.args[0] is node:
                fusable[node] = kind
    return fusable


def functorch_ok(body: Any) -> bool:
    """False for DataParallel/DDP (their forward touches gradient buckets that torch.func transforms
    cannot see); those use plain autograd, and forward mode with a single tangent only."""
    if isinstance(body, _BodyThroughWrapper):
        return False
    if isinstance(body, nn.Module):
        return not any(isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel))
                       for m in body.modules())
    return True


def structure(body: nn.Module) -> tuple | None:
    """The cache key of ``body`` (submodule names, types, train/eval modes, in case the code branches
    on them), or None when its own forward must run: hooks (which an evaluator would skip), or a
    DataParallel/DDP wrapper."""
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


# Traced programs per network and evaluator kind, keyed by structure; None marks a network the
# evaluator does not take (untraceable, or a rule failed on it once).
_PROGRAMS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def program_for(body: Any, kind: str, build: Callable[[list[Node]], P]) -> P | None:
    """The ``kind`` program of ``body`` (built from its fx nodes on first use), or None."""
    if not isinstance(body, nn.Module):
        return None
    key = structure(body)
    if key is None:
        return None
    try:
        entry = _PROGRAMS.setdefault(body, {})
    except TypeError:  # not weak-referenceable
        return None
    if (kind, key) not in entry:
        try:
            graph = Tracer().trace(body)
            entry[(kind, key)] = build(list(graph.nodes))
        except Exception:  # untraceable forward (data-dependent control flow, ...): PyTorch's own AD
            entry[(kind, key)] = None
    return entry[(kind, key)]


def forget(body: Any, kind: str) -> None:
    """Mark ``body`` as not taken by the ``kind`` evaluator (after a rule failed on it)."""
    key = structure(body) if isinstance(body, nn.Module) else None
    if key is not None and body in _PROGRAMS:
        _PROGRAMS[body][(kind, key)] = None
