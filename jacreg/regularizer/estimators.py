"""The three estimators of the Jacobian regularizer on a network body at its input ``z``.

``R = 1/2 * (1/B) * sum_b ||J(z_b)||_F^2`` (Hoffman, Roberts & Yaida 2019, Eq. (4)), each estimator
returning ``(logits, R)`` from one forward pass, differentiable with respect to the parameters:

* :func:`penalty_vjp` -- Algorithm 1: per sample ``v`` uniform on S^(C-1), ``C * ||v^T J||^2``;
* :func:`penalty_jvp` -- forward mode: per sample ``u ~ N(0, I_D)``, ``||J u||^2``;
* :func:`penalty_exact` -- all C rows of J.

The public entry points (argument checks, the normalisation split, the choice of method) are in
:mod:`jacreg.regularizer`; the evaluators in :mod:`jacreg.regularizer.reverse_mode` and
:mod:`jacreg.regularizer.forward_mode`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from . import autograd_rows, forward_mode, reverse_mode

__all__ = ["check_input", "check_logits", "check_n_proj", "one_hots", "penalty_exact", "penalty_jvp",
           "penalty_vjp", "randn", "sphere"]

Body = Callable[[Tensor], Tensor]

# Reverse-mode rows (directions x samples) evaluated in one pass: exact mode takes the C one-hot
# directions in chunks of at most this many rows (LeNet', batch 100: 2 classes at a time).
_MAX_ROWS = 256


def check_n_proj(n_proj: Any) -> int:
    """``n_proj`` as an int >= 0 (0 = exact), or ConfigError."""
    if isinstance(n_proj, bool):
        raise ConfigError(f"n_proj must be an integer >= 0 (0 = exact), got {n_proj!r}")
    try:
        n = operator.index(n_proj)
    except TypeError:
        raise ConfigError(f"n_proj must be an integer >= 0 (0 = exact), got {n_proj!r}") from None
    if n < 0:
        raise ConfigError(f"n_proj must be >= 0 (0 = exact, >= 1 random projections), got {n}")
    return n


def check_input(x: Any) -> Tensor:
    """``x`` as a non-empty floating-point batch, or ShapeError."""
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


def check_logits(logits: Any, batch: int) -> tuple[int, int]:
    """``(B, C)`` of a logits tensor of shape (B, C), or ShapeError."""
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


def randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws on ``like``'s device and dtype (from ``generator`` when given)."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    draw = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return draw.to(like.device)


def sphere(n: int, batch: int, classes: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` independent unit vectors per sample, uniform on S^(C-1): shape (n, B, C) (Algorithm 1)."""
    v = randn((n, batch, classes), like, generator)
    return v / v.norm(dim=-1, keepdim=True)


def one_hots(classes: int, batch: int, like: Tensor, start: int, stop: int) -> Tensor:
    """Cotangents e_c for c in [start, stop), for every sample: shape (stop - start, B, C)."""
    eye = torch.eye(classes, device=like.device, dtype=like.dtype)[start:stop]
    return eye.unsqueeze(1).expand(stop - start, batch, classes)


def _rows_after_forward(body: Body, z: Tensor) -> tuple[Any, autograd_rows.RowsFn]:
    """One forward pass: (logits, cotangents -> rows v^T J), on the traced fast path when possible."""
    tape = reverse_mode.tape_for(body, z)
    if tape is not None:
        return tape.logits, tape.rows
    return autograd_rows.reverse(body, z, create_graph=True)


def exact_sq_norms(rows_fn: autograd_rows.RowsFn, batch: int, classes: int, like: Tensor) -> Tensor:
    """Per-sample ``||J_b||_F^2`` (shape (B,)) from all C one-hot cotangents, in chunks of rows."""
    per_call = max(1, min(classes, _MAX_ROWS // batch))
    per_call = -(-classes // -(-classes // per_call))  # equal chunks: 10 classes -> 5 + 5, not 8 + 2
    total: Tensor | None = None
    for start in range(0, classes, per_call):
        stop = min(classes, start + per_call)
        rows = rows_fn(one_hots(classes, batch, like, start, stop))
        sq = rows.pow(2).reshape(stop - start, batch, -1).sum(dim=(0, 2))
        total = sq if total is None else total + sq
    assert total is not None
    return total


def penalty_exact(body: Body, z: Tensor) -> tuple[Tensor, Tensor]:
    """R from all C rows of J (the C one-hot directions of Algorithm 1's loop, batched)."""
    logits, rows_fn = _rows_after_forward(body, z)
    batch, classes = check_logits(logits, z.shape[0])
    return logits, 0.5 * exact_sq_norms(rows_fn, batch, classes, logits).sum() / batch


def penalty_vjp(body: Body, z: Tensor, n_proj: int,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Algorithm 1 after one forward: v per sample on S^(C-1), C * ||v^T J||^2, averaged over n_proj."""
    logits, rows_fn = _rows_after_forward(body, z)
    batch, classes = check_logits(logits, z.shape[0])
    rows = rows_fn(sphere(n_proj, batch, classes, logits, generator))
    return logits, 0.5 * classes * rows.pow(2).sum() / (n_proj * batch)


def penalty_jvp(body: Body, z: Tensor, n_proj: int,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """E_u ||J u||^2 with u ~ N(0, I) in input space, averaged over n_proj tangents."""
    u = randn((n_proj, *z.shape), z, generator)
    logits, tan = forward_mode.jvp_forward(body, z, u)
    check_logits(logits, z.shape[0])
    if tan is None:  # the logits do not depend on the input
        return logits, logits.new_zeros(())
    return logits, 0.5 * tan.pow(2).sum() / (n_proj * z.shape[0])
