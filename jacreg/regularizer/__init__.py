"""Jacobian regularization (Hoffman, Roberts & Yaida, "Robust Learning with Jacobian Regularization", 2019).

The regularizer of the paper is

    R = 1/2 * (1/B) * sum_b ||J(x_b)||_F^2,      J(x_b) = d logits(x_b) / d x_b   (a C x D matrix),

added to the loss as ``CE + lambda_JR * R``. Three estimators of R are available, all unbiased in value
and in parameter gradient:

* ``"vjp"`` -- the paper's Algorithm 1 (reverse mode): for every sample draw ``v`` uniformly on the unit
  sphere S^(C-1) and use ``C * ||v^T J||^2``, whose expectation is ``||J||_F^2`` because
  ``E[v v^T] = I / C``. ``n_proj`` projections are averaged (not summed).
* ``"jvp"`` -- forward mode: ``||J||_F^2 = E_u ||J u||^2`` for ``u ~ N(0, I_D)`` in input space. One
  forward pass on (primal, tangent) pairs; it never forms the first layer's input gradient, so a step
  is cheaper, but its parameter-gradient noise grows with the input size D.
* ``"exact"`` (or ``n_proj=0``) -- all C rows of J (Algorithm 1 with the C one-hot directions).

``"auto"`` (the default of :func:`jacobian_penalty` and of training) resolves per network with
:func:`resolve_method` (rule and reasons in :mod:`jacreg.regularizer.method_choice`): Algorithm 1 for image
networks (D >= C), forward mode only where it is the one available estimator or the input is smaller
than the output.

Variance, per sample and projection. Value: relative variance ``2 (C q - 1) / (C + 2)`` for ``"vjp"``
and ``2 q`` for ``"jvp"``, ``q = ||J J^T||_F^2 / ||J||_F^4`` in [1/C, 1]; at most 1.5 and 2 for C = 10.
Parameter gradient (what SGD sees): for a linear map, relative variance C - 1 for ``"vjp"`` and D + 1
for ``"jvp"``. Measured (``benchmarks/jr_estimators.py``, README "Performance": trace of the covariance
of the parameter gradient over projection draws, one training batch of real digits) forward mode's
gradient variance is 16-66x Algorithm 1's at initialisation and 1.9x (LeNet', DDNet) to 46x
(ResNet-18 at 224x224) after training, while its step takes 0.83-1.03x as long: Algorithm 1 has the
better gradient variance x time everywhere, by 1.9-54x. Averaging ``n_proj`` projections divides
either variance by ``n_proj``.

Speed (LeNet', batch 100, one CPU thread, ``benchmarks/jr_step.py``): a ``"vjp"`` step takes about
1.55x a plain step, 0.74x Algorithm 1 written plainly (``autograd.grad(logits, x, v, create_graph=True)``
on a leaf input: 2.1x a plain step); exact mode about 8x a plain step. The reverse pass runs the
network's traced graph with explicit, differentiable pullbacks (:mod:`jacreg.regularizer.reverse_mode`):
the input needs no gradient (a leaf input makes ``loss.backward()`` form the first layer's input
gradient a second time), activations before max pooling run on the pooled values, and convolutions
use the faster of several exact kernels for the first layer's shapes (:mod:`jacreg.regularizer.kernels`).

:class:`JacobianReg` is the paper's module interface (``reg(x, logits)``, J with respect to whatever
``x`` is; a drop-in replacement for the official class). :func:`jacobian_penalty` is what training
uses: one forward pass that returns the logits (the same graph, the same dropout mask) together with R
taken with respect to the *normalised* input, the paper's convention. :func:`jacobian_norms` gives exact
per-sample norms for evaluation.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from ..architectures import _BodyThroughWrapper, split_normalization
from ..errors import ConfigError, ShapeError
from . import autograd_rows, forward_mode, method_choice, reverse_mode
from .estimators import (
    check_input,
    check_logits,
    check_n_proj,
    exact_sq_norms,
    one_hots,
    penalty_exact,
    penalty_jvp,
    penalty_vjp,
    sphere,
)
from .method_choice import MethodChoice

__all__ = ["METHODS", "JacobianReg", "MethodChoice", "jacobian_norms", "jacobian_penalty", "resolve_method"]

Method = Literal["auto", "vjp", "jvp", "exact"]
METHODS: tuple[str, ...] = ("auto", "vjp", "jvp", "exact")

_NOT_DEPENDENT = "the logits do not depend on x: call x.requires_grad_() before logits = model(x)"


# --------------------------------------------------------------------------------------------------
# JacobianReg: the paper's module, on the caller's graph
# --------------------------------------------------------------------------------------------------


def _projections(n_proj: Any, n: Any) -> int:
    """The number of projections from ``n_proj`` and/or the official spelling ``n`` (-1 = exact)."""
    if n_proj is not None and n is not None and n_proj != n:
        raise ConfigError(f"JacobianReg got n_proj={n_proj!r} and n={n!r}; pass one of them")
    value = n if n is not None else (1 if n_proj is None else n_proj)
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return 0  # the official class's "exact"
    return check_n_proj(value)


class JacobianReg(nn.Module):
    """The Jacobian regularizer R of Algorithm 1 (Hoffman, Roberts & Yaida 2019).

    ``reg(x, y)`` returns ``1/2 * mean_b ||J(x_b)||_F^2`` with ``J = d y / d x``, the Jacobian of the
    logits ``y`` with respect to **the ``x`` you pass**, estimated with ``n_proj`` random projections per
    sample, or exactly with ``n_proj=0``. The result is differentiable with respect to the model's
    parameters, so ``(loss + lambda_jr * reg(x, y)).backward()`` trains with Jacobian regularization.

    A drop-in replacement for the official ``jacobian.JacobianReg``: the same usage (``JacobianReg()``,
    ``JacobianReg(n=3)``, ``JacobianReg(n=-1)`` for the exact value, ``reg(x, y)`` or ``reg(x, y=out)``),
    the same objective and scaling, the same random directions (``torch.randn`` per projection, row-
    normalised), on the input's device. Exact mode and the projections run one backward pass per
    direction, as the official loop does; when ``x`` feeds a single convolution, the passes stop at its
    output and the convolution's input gradient uses faster kernels (:mod:`jacreg.regularizer.kernels`).

    Which input, which lambda: J is taken with respect to ``x`` as given. The paper -- and
    :func:`jacobian_penalty`, ``train --jr`` and the Train page -- take it with respect to the
    *normalised* input, and lambda_JR = 0.01 refers to that. jacreg's models normalise inside
    (:class:`jacreg.architectures.Normalized`), so on [0, 1] pixels R is ``1/std^2`` times larger
    (10.5x for MNIST): to use the paper's lambda, pass the normalised input::

        z = model.normalize(x).requires_grad_(True)
        logits = model.body(z)
        loss = F.cross_entropy(logits, y) + 0.01 * JacobianReg()(z, logits)

    (or simply ``logits, R = jacobian_penalty(model, x)``).

    Args:
        n_proj: random projections per sample (>= 1), or 0 for the exact value (default 1).
        n: the official class's name for it; ``n=-1`` is exact. Give ``n_proj`` or ``n``.
        generator: default random generator for the projections (``forward`` can override it).

    Raises:
        ConfigError: the number of projections is not an integer >= 0 (or -1), or both spellings
            are given with different values.

    Example::

        reg = JacobianReg()                 # one projection (Algorithm 1)
        x.requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + 0.01 * reg(x, logits)
        loss.backward()
    """

    def __init__(self, n_proj: int | None = None, *, n: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_proj = _projections(n_proj, n)
        self.generator = generator

    @property
    def n(self) -> int:
        """The official class's attribute: projections, or -1 for exact."""
        return -1 if self.n_proj == 0 else self.n_proj

    def extra_repr(self) -> str:
        return f"n_proj={self.n_proj}" + (" (exact)" if self.n_proj == 0 else "")

    def forward(self, x: Tensor, y: Tensor | None = None, *, logits: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Return the scalar ``1/2 * mean_b ||J(x_b)||_F^2`` (estimated unless ``n_proj == 0``).

        Args:
            x: the input batch, with ``requires_grad=True``, from which the logits were computed.
            y: the logits, shape (B, C) (also accepted as ``logits=``).
            generator: random generator for this call (default: the one given at construction).

        Raises:
            ConfigError: no logits, or both ``y`` and ``logits``.
            ShapeError: the logits are not (B, C) with B = ``x.shape[0]``, ``x`` does not require grad,
                or the logits do not depend on ``x``.
        """
        if (y is None) == (logits is None):
            raise ConfigError("pass the logits once: reg(x, logits), reg(x, y=logits) or "
                              "reg(x, logits=logits)")
        out = y if y is not None else logits
        check_input(x)
        if not x.requires_grad:
            raise ShapeError("x must require grad: call x.requires_grad_() before logits = model(x)")
        batch, classes = check_logits(out, x.shape[0])
        assert out is not None
        if not out.requires_grad:
            raise ShapeError(_NOT_DEPENDENT)
        if self.n_proj == 0:
            cotangents, factor = one_hots(classes, batch, out, 0, classes), 1.0
        else:
            gen = generator if generator is not None else self.generator
            cotangents, factor = sphere(self.n_proj, batch, classes, out, gen), classes / self.n_proj
        rows = autograd_rows.rows_on_graph(out, x, cotangents)
        if rows is None:
            raise ShapeError(_NOT_DEPENDENT)
        return 0.5 * factor * rows.pow(2).sum() / batch


# --------------------------------------------------------------------------------------------------
# The estimator "auto" resolves to
# --------------------------------------------------------------------------------------------------

_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, MethodChoice]] = weakref.WeakKeyDictionary()


def _choice_key(x: Tensor, n_proj: int) -> tuple:
    return (tuple(x.shape[1:]), x.dtype, x.device.type, n_proj)


def resolve_method(model: nn.Module, x: Tensor, n_proj: int = 1, *, calibrate: bool = False,
                   draws: int = 6) -> MethodChoice:
    """The estimator ``jacobian_penalty(model, x, n_proj, method="auto")`` uses, and why.

    Decided once per model and input shape (cached), by the rule of :mod:`jacreg.regularizer.method_choice`:
    Algorithm 1 (``"vjp"``) when the input has at least as many features as there are classes
    (LeNet', DDNet, ResNet-18), forward mode (``"jvp"``) for smaller inputs, whichever works when
    only one does for this network, ``"exact"`` for ``n_proj=0``. The check runs each estimator once
    on at most 8 samples and undoes its side effects (random state, batch-norm statistics).

    Args:
        model: the network, as passed to :func:`jacobian_penalty`.
        x: a batch of inputs (the training batch).
        n_proj: projections per sample (0 = exact).
        calibrate: measure gradient variance x time of both estimators on ``x`` (``draws`` each) and
            pick by measurement (Algorithm 1 unless forward mode is 25% better); the result replaces
            the cached choice, so later ``"auto"`` calls follow it.
        draws: estimates per estimator when calibrating.

    Returns:
        A :class:`MethodChoice` (``.method``, ``.reason``, ``.to_dict()`` for logs and model cards).
    """
    n = check_n_proj(n_proj)
    check_input(x)
    key = _choice_key(x, n)
    try:
        cache = _CHOICES.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        cache = {}
    if not calibrate and key in cache:
        return cache[key]
    wrapped = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    inner = cast(nn.Module, model.module) if wrapped else model
    normalize, body = split_normalization(inner)  # the network itself, not its DDP wrapper
    with torch.no_grad():
        z = normalize(x.detach())
    choice = method_choice.choose(body, z, n, calibrate=calibrate, draws=draws, state=inner)
    cache[key] = choice
    return choice


def _remember(model: nn.Module, x: Tensor, n_proj: int, choice: MethodChoice) -> None:
    with contextlib.suppress(TypeError):  # not weak-referenceable
        _CHOICES.setdefault(model, {})[_choice_key(x, n_proj)] = choice


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


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

    * ``"vjp"``: Algorithm 1 -- per sample ``v`` uniform on S^(C-1), ``C * ||v^T J||^2``. Gradient
      noise independent of the input size; LeNet' (batch 100, one CPU thread): a step about 1.55x a
      plain one (Algorithm 1 written plainly: 2.1x).
    * ``"jvp"``: forward mode -- per sample ``u ~ N(0, I)`` in input space, ``||J u||^2``; the ``n_proj``
      tangents share the one forward pass. A step about 0.9x a vjp step on LeNet', but a parameter-
      gradient variance that grows with the input size (LeNet': 2x Algorithm 1's after 3 epochs, 16x at
      initialisation; ResNet-18 at 224x224: 46-66x).
    * ``"exact"``: all C rows of J (``n_proj`` is ignored), the one-hot directions in chunks.
    * ``"auto"`` (default): what :func:`resolve_method` picks for this model (Algorithm 1 for image
      networks), falling back to the other estimator where one is not available.

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
        ConfigError: bad ``n_proj`` or ``method``, or ``"jvp"`` on a network without forward mode.
        ShapeError: ``x`` is not a floating-point batch, or the model does not return (B, C) logits.
    """
    n = check_n_proj(n_proj)
    if method not in METHODS:
        raise ConfigError(f"unknown Jacobian method {method!r}; choose one of {', '.join(METHODS)}")
    check_input(x)
    auto = method == "auto"
    if auto and n > 0:
        method = resolve_method(model, x, n).method
    normalize, body = split_normalization(model)
    z = normalize(x)
    if n == 0 or method == "exact":
        return penalty_exact(body, z)
    if method == "vjp":
        return penalty_vjp(body, z, n, generator)
    try:
        return penalty_jvp(body, z, n, generator)
    except (RuntimeError, NotImplementedError) as exc:
        if not forward_mode.is_forward_ad_gap(exc) and not isinstance(body, _BodyThroughWrapper):
            raise
        if not auto:
            raise ConfigError(f"forward mode (method='jvp', n_proj={n}) is not available for this model: "
                              f"{exc}. Use method='vjp', or 'auto', which falls back to it") from exc
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _remember(model, x, n, MethodChoice("vjp", f"forward mode failed on this model ({first_line})",
                                            int(x[0].numel()), 0))
        return penalty_vjp(body, z, n, generator)


def jacobian_norms(model: nn.Module, x: Tensor, *, normalized: bool = False,
                   batch_size: int | None = None) -> Tensor:
    """Exact per-sample Frobenius norms ``||J(x_b)||_F`` (not squared), shape (B,).

    J is the derivative of the logits with respect to the given ``x`` (pixels in [0, 1]) or, with
    ``normalized=True``, with respect to the normalised input (the paper's convention, the ||J||_F of
    its Table 1). All C rows of J come from one forward pass per chunk of samples.

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
    check_input(x)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if normalized:
        prep, fn = split_normalization(model)
    else:
        prep, fn = (lambda t: t), model
    chunks = x.split(256 if batch_size is None else int(batch_size))
    norms = []
    # The pullbacks (and torch.func, which differentiates inside no_grad) need no outer graph:
    # no_grad keeps any graph to the parameters from being recorded.
    with torch.no_grad():
        for chunk in chunks:
            z = prep(chunk.detach())
            tape = reverse_mode.tape_for(fn, z)
            rows_fn: autograd_rows.RowsFn
            if tape is not None:
                logits, rows_fn = tape.logits, tape.rows
            else:
                logits, rows_fn = autograd_rows.reverse(fn, z, create_graph=False)
            batch, classes = check_logits(logits, z.shape[0])
            norms.append(exact_sq_norms(rows_fn, batch, classes, logits).detach().sqrt())
    return torch.cat(norms)
