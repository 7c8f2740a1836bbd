"""Traced networks for the Jacobian regularizer's two evaluators (forward and reverse mode).

Both evaluators in :mod:`jacreg.forward_mode` and :mod:`jacreg.reverse_mode` walk the ``torch.fx``
graph of the network body node by node, with a cheap rule per known layer and an exact generic rule
(``torch.func``) for anything else. This module holds what they share: the per-network cache of
traced graphs (keyed by the network's structure, so that a layer added later or a hook registered
later is seen), argument binding for functional calls, and the exception a rule raises to decline.

A network is not traced (its own forward runs, through PyTorch's autograd) when it or any submodule
has hooks, when global module hooks are set, or when it is wrapped in DataParallel/DDP, whose forward
prepares the gradient all-reduce.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor, nn
from torch.fx import Node, Tracer
from torch.fx.node import map_arg
from torch.nn.modules import module as module_mod

from .architectures import _BodyThroughWrapper

__all__ = ["NO_TANGENT_ATTRS", "NO_TANGENT_METHODS", "NotHandled", "bind", "call", "fold", "forget",
           "functorch_ok", "program_for", "shift_dim", "structure"]

P = TypeVar("P")


class NotHandled(Exception):
    """A rule declines a node; the generic rule (``torch.func``) takes it."""


# Calls whose result does not depend on the values of their tensor argument (no derivative).
NO_TANGENT_METHODS = frozenset({"size", "dim", "numel", "nelement", "get_device", "is_contiguous",
                                "element_size", "stride", "type", "is_floating_point"})
NO_TANGENT_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"})
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


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
