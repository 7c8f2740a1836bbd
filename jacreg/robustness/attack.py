"""Running foolbox attacks on a batch: one epsilon of a fixed-epsilon attack, or a minimisation.

Iterative gradient attacks (PGD) keep an adversarial found at *any* iterate (not only the last one,
which is all foolbox checks), stop attacking a sample once it is broken, and can start from a given
point (a warm start) instead of a fresh random one. Every sample counted broken has a verified
adversarial (re-checked with foolbox's ``clip_perturbation`` rule and a forward pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import eagerpy as ep
import torch
from torch import nn

from ..events import Stopped
from .catalog import AttackSpec, Norm, foolbox

__all__ = ["CHUNK_GROWTH", "Stopped", "clip_perturbation", "distance", "fixed_attack", "minimization_attack",
           "predict_labels"]

#: PGD runs in chunks of done_steps // CHUNK_GROWTH + 1 steps (at most steps / 8), dropping the
#: samples already broken between chunks.
CHUNK_GROWTH = 4


def _tracking_class(cls: type) -> type:
    """A subclass of a foolbox gradient-descent attack that records adversarial iterates.

    It uses two extension points foolbox documents for ``BaseGradientDescent`` (the loss function,
    "can be overridden by users", and the random start): the loss is foolbox's own cross-entropy,
    and it notes every sample whose *current iterate* (inside the epsilon ball and the bounds by
    foolbox's projection and clipping) is already misclassified. ``_start`` lets a run continue
    from the iterate where the previous run stopped, so 40 steps can run as a series of short runs
    (1, 1, 1, 1, 2, 2, 3, ... steps, at most steps/8) with the broken samples dropped in between
    (the optimizer is stateless, so this is the same attack); it also serves the warm start.
    """

    def get_loss_fn(self: Any, model: Any, labels: Any) -> Callable[[Any], Any]:
        def loss_fn(inputs: Any) -> Any:
            logits = model(inputs)
            self._evals += len(inputs)
            with torch.no_grad():
                hit = logits.raw.argmax(-1) != labels.raw
                new = hit & ~self._found
                if bool(new.any()):
                    self._found_x[new] = inputs.raw.detach()[new]
                    self._found |= new
            return ep.crossentropy(logits, labels).sum()

        return loss_fn

    base_random_start = getattr(cls, "get_random_start")  # noqa: B009 - a foolbox class, typed as type

    def get_random_start(self: Any, x0: Any, epsilon: float) -> Any:
        if self._start is not None:
            return self._start
        return base_random_start(self, x0, epsilon)

    return type(f"Tracking{cls.__name__}", (cls,), {"get_loss_fn": get_loss_fn,
                                                    "get_random_start": get_random_start})


def clip_perturbation(x0: torch.Tensor, xp: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """foolbox's ``LpDistance.clip_perturbation`` (L-inf, L2) in torch."""
    p = xp - x0
    if norm == "linf":
        return x0 + p.clamp(-eps, eps)
    norms = p.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0).view(-1, *([1] * (p.dim() - 1)))
    return x0 + p * factor


def distance(x0: torch.Tensor, xp: torch.Tensor, norm: Norm) -> torch.Tensor:
    d = (xp - x0).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def predict_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(-1)


def _draw(like: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator,
          normal: bool) -> torch.Tensor:
    out = (torch.randn if normal else torch.rand)(shape, generator=generator, device=generator.device,
                                                  dtype=like.dtype)
    return out.to(like.device)


def with_generator(attack: Any, generator: torch.Generator) -> Any:
    """The foolbox attack, its random draws (PGD's random start, white noise) taken from ``generator``.

    foolbox draws from torch's process-wide generator, which threads share: two curves computed at
    once (two users of the app) would perturb each other's draws. The draws here follow foolbox's
    distributions: uniform in the L-inf ball, uniform in the L2 ball (the first n coordinates of a
    uniform point on the sphere S^(n+1)), Gaussian or uniform noise.
    """
    cls = type(attack)
    names = {c.__name__ for c in cls.__mro__}
    methods: dict[str, Callable[..., Any]] = {}
    if "GaussianMixin" in names:
        methods["sample_noise"] = lambda self, x: ep.astensor(_draw(x.raw, tuple(x.shape), generator, True))
    elif "UniformMixin" in names:
        methods["sample_noise"] = lambda self, x: ep.astensor(
            _draw(x.raw, tuple(x.shape), generator, False) * 2 - 1)
    if "LinfBaseGradientDescent" in names:
        methods["get_random_start"] = lambda self, x0, epsilon: x0 + ep.astensor(
            (_draw(x0.raw, tuple(x0.shape), generator, False) * 2 - 1) * epsilon)
    elif "L2BaseGradientDescent" in names:
        def l2_start(self: Any, x0: Any, epsilon: float) -> Any:
            batch, n = x0.shape[0], int(math.prod(x0.shape[1:]))
            s = _draw(x0.raw, (batch, n + 2), generator, True)
            s = s / s.norm(dim=1, keepdim=True)
            return x0 + ep.astensor(s[:, :n].reshape(x0.shape) * epsilon)
        methods["get_random_start"] = l2_start
    if not methods:
        return attack
    seeded: Any = object.__new__(type(f"Seeded{cls.__name__}", (cls,), methods))
    seeded.__dict__.update(attack.__dict__)
    return seeded


def fixed_attack(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, model: nn.Module,
                 x0: torch.Tensor, y: torch.Tensor, eps: float, stop: Callable[[], bool],
                 start: torch.Tensor | None = None, counter: list[int] | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack ``x0`` at one epsilon.

    Returns ``(success, candidates)``: the verified success mask, and per sample the adversarial
    (clipped to epsilon) or, where the attack failed, its last iterate. ``start`` replaces the
    random start of an attack that uses one (a warm start inside the epsilon ball). ``counter[0]``
    is increased by the number of per-sample gradient evaluations. ``generator`` gives the attack's
    random draws (:func:`with_generator`).
    """
    fb = foolbox()
    attack = spec.build(**params)
    if generator is not None:
        attack = with_generator(attack, generator)
    n = len(x0)
    if isinstance(attack, fb.attacks.gradient_descent_base.BaseGradientDescent):
        tracking_cls = _tracking_class(type(attack))
        tracked: Any = object.__new__(tracking_cls)
        tracked.__dict__.update(attack.__dict__)
        tracked._evals = 0
        total = int(attack.steps)
        cap = max(1, math.ceil(total / 8))
        best = x0.clone()
        active = torch.arange(n, device=x0.device)
        x_cur: torch.Tensor | None = start if (start is not None and attack.random_start) else None
        done = 0
        while done < total and len(active):
            # short runs first (most samples that break, break early), then up to total/8 steps
            k = min(max(1, done // CHUNK_GROWTH + 1), cap, total - done)
            tracked.steps = k
            if x_cur is None:
                tracked._start = None
                tracked.random_start = attack.random_start
            else:
                tracked._start = ep.astensor(x_cur)
                tracked.random_start = True
            tracked._found = torch.zeros(len(active), dtype=torch.bool, device=x0.device)
            tracked._found_x = torch.empty_like(x0[active])
            crit = fb.criteria.Misclassification(y[active])
            x_end = tracked.run(fmodel, x0[active], crit, epsilon=eps)
            hit = tracked._found
            best[active[hit]] = tracked._found_x[hit]
            keep = ~hit
            active, x_cur = active[keep], x_end[keep].detach()
            done += k
            if stop():
                raise Stopped
        if x_cur is not None and len(active):
            best[active] = x_cur
        if counter is not None:
            counter[0] += tracked._evals
    else:
        best = attack.run(fmodel, x0, fb.criteria.Misclassification(y), epsilon=eps).detach()
    cand = clip_perturbation(x0, best, eps, spec.norm)
    success = predict_labels(model, cand) != y
    return success, cand


def minimization_attack(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, x0: torch.Tensor,
                         y: torch.Tensor) -> torch.Tensor:
    fb = foolbox()
    attack = spec.build(**params)
    return attack.run(fmodel, x0, fb.criteria.Misclassification(y), early_stop=None).detach()
