"""Which estimator ``method="auto"`` uses for a network: Algorithm 1 (vjp) or forward mode (jvp).

Both estimators are unbiased, in value and in parameter gradient, and their value variances are
alike (relative variance at most 2(C-1)/(C+2) and 2). Their *parameter-gradient* noise is not: for
a linear map ``J = W`` the gradient of ``C ||v^T W||^2`` (Algorithm 1) has relative variance C - 1,
that of ``||W u||^2`` (forward mode, ``u ~ N(0, I_D)``) about D. Hoffman, Roberts & Yaida (2019)
project in output space for this reason. In deep networks the gap is smaller but real; measured
with ``benchmarks/jr_estimators.py`` (trace of the covariance of the parameter gradient over
projection draws, trained weights, real data, the training batch; README, "Performance"), forward
mode's noise x time is worse than Algorithm 1's on LeNet', DDNet and ResNet-18 at every training
stage, by more than its speed advantage. So the rule is:

* ``n_proj = 0``: exact;
* only one estimator works for the network (forward mode or a second derivative missing for some
  layer): that one;
* input size D >= C classes: Algorithm 1 (vjp); D < C: forward mode (jvp), whose input-space
  projections are then no noisier and which is the cheaper pass.

The availability check runs each estimator once, with its parameter gradient, on at most 8 samples,
with the caller's random state and the network's buffers (batch-norm statistics) restored afterwards,
so a training run is unaffected by it. ``calibrate=True`` instead measures gradient variance x time
of both on the given batch (``draws`` each, interleaved) and keeps Algorithm 1 unless forward mode is
25% better: useful on other hardware; the choice then depends on timings.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import estimators

__all__ = ["MethodChoice", "choose"]

Body = Callable[[Tensor], Tensor]
_TRIAL_SAMPLES = 8
_MARGIN = 1.25  # calibration keeps Algorithm 1 unless forward mode is this much better


@dataclass(frozen=True)
class MethodChoice:
    """The estimator ``method="auto"`` resolved to, and why.

    Attributes:
        method: ``"vjp"`` (Algorithm 1), ``"jvp"`` (forward mode) or ``"exact"``.
        reason: one sentence for logs and model cards.
        input_size: D, the number of input features per sample.
        num_classes: C, the number of logits (0 when not evaluated).
        measured: with calibration, per method ``{"seconds", "grad_variance", "variance_x_time"}``.
    """

    method: str
    reason: str
    input_size: int
    num_classes: int
    measured: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for events and model cards)."""
        return asdict(self)


_PENALTIES: dict[str, Callable[[Body, Tensor, int, torch.Generator | None], tuple[Tensor, Tensor]]] = {
    "vjp": estimators.penalty_vjp,
    "jvp": estimators.penalty_jvp,
}


@contextlib.contextmanager
def _side_effects_undone(net: Any, like: Tensor) -> Iterator[None]:
    """Restore the global random state (dropout masks) and every buffer (batch-norm statistics)."""
    buffers = [(b, b.detach().clone()) for b in net.buffers()] if isinstance(net, nn.Module) else []
    devices = [like.device] if like.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def _parameters(net: Any) -> list[Tensor]:
    if not isinstance(net, nn.Module):
        return []
    return [p for p in net.parameters() if p.requires_grad]


def _sync(like: Tensor) -> None:
    if like.device.type == "cuda":
        torch.cuda.synchronize(like.device)


def _draw(method: str, body: Body, z: Tensor, n_proj: int, params: list[Tensor],
          gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """One estimate and its parameter gradient (flattened), as training would compute them."""
    logits, r = _PENALTIES[method](body, z, n_proj, gen)
    if not params or not r.requires_grad:
        return logits, None
    grads = torch.autograd.grad(r, params, allow_unused=True, materialize_grads=True)
    return logits, torch.cat([g.reshape(-1) for g in grads])


def _measure(body: Body, z: Tensor, n_proj: int, params: list[Tensor],
             draws: int) -> dict[str, dict[str, float]]:
    """Seconds per draw and trace of the gradient covariance of both estimators (interleaved)."""
    out: dict[str, dict[str, float]] = {}
    stats: dict[str, list[Any]] = {m: [[], None, None, 0] for m in _PENALTIES}  # times, mean, m2, n
    gens = {m: torch.Generator(device=z.device).manual_seed(1 + i) for i, m in enumerate(_PENALTIES)}
    for _ in range(draws):
        for m in _PENALTIES:
            _sync(z)
            t0 = time.perf_counter()
            _, g = _draw(m, body, z, n_proj, params, gens[m])
            _sync(z)
            times, mean, m2, n = stats[m]
            times.append(time.perf_counter() - t0)
            if g is not None:  # Welford's update of the mean and the summed squared deviations
                g = g.detach().double()
                n += 1
                if mean is None:
                    mean, m2 = g.clone(), 0.0
                else:
                    delta = g - mean
                    mean += delta / n
                    m2 += float(delta.dot(g - mean))
            stats[m] = [times, mean, m2, n]
    for m, (times, _, m2, n) in stats.items():
        var = float(m2) / (n - 1) if n > 1 else float("nan")
        sec = statistics.median(times)
        out[m] = {"seconds": sec, "grad_variance": var, "variance_x_time": var * sec}
    return out


def choose(body: Body, z: Tensor, n_proj: int, *, calibrate: bool = False, draws: int = 6,
           state: Any = None) -> MethodChoice:
    """Resolve ``method="auto"`` for the network ``body`` at inputs like ``z`` (see the module doc).

    Args:
        body: the network (its input is ``z``, the regularizer's input).
        z: a batch of inputs.
        n_proj: projections per sample (0 = exact).
        calibrate: measure gradient variance x time on ``z`` instead of using the rule.
        draws: estimates per method when calibrating.
        state: the module whose buffers the trial runs must leave untouched (default: ``body``).
    """
    d = int(z[0].numel())
    if n_proj == 0:
        return MethodChoice("exact", "n_proj = 0: the exact value (all C rows of J)", d, 0)
    params = _parameters(body)
    failures: dict[str, BaseException] = {}
    classes = 0
    with _side_effects_undone(state if state is not None else body, z):
        small = z[:_TRIAL_SAMPLES]
        gen = torch.Generator(device=z.device).manual_seed(0)
        for m in _PENALTIES:
            try:
                logits, _ = _draw(m, body, small, n_proj, params, gen)
                classes = int(logits.shape[-1])
            except (RuntimeError, NotImplementedError) as exc:
                failures[m] = exc
        if len(failures) == len(_PENALTIES):
            raise failures["vjp"]
        if failures:
            ((bad, error),) = failures.items()
            good = "jvp" if bad == "vjp" else "vjp"
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return MethodChoice(good, f"{bad} is not available for this network ({first_line})", d, classes)
        if calibrate:
            measured = _measure(body, z, n_proj, params, max(2, int(draws)))
            vjp, jvp = measured["vjp"]["variance_x_time"], measured["jvp"]["variance_x_time"]
            method = "jvp" if jvp * _MARGIN < vjp else "vjp"
            reason = (f"measured on this batch ({max(2, int(draws))} draws each): gradient variance x time "
                      f"{vjp:.3g} for vjp, {jvp:.3g} for jvp")
            return MethodChoice(method, reason, d, classes, measured)
    if d >= classes:
        reason = (f"Algorithm 1 (vjp): input size D = {d} >= C = {classes}, and forward mode's parameter-"
                  f"gradient noise grows with D (benchmarks/jr_estimators.py)")
        return MethodChoice("vjp", reason, d, classes)
    reason = f"forward mode (jvp): input size D = {d} < C = {classes}: input-space projections are no noisier"
    return MethodChoice("jvp", reason, d, classes)
