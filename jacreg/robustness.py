"""Robustness curves: accuracy against perturbation size, over a whole dataset, from foolbox attacks.

The paper's Fig. 3 (Hoffman, Roberts & Yaida 2019, Sec. 4.2) for any model: the fraction of test
samples a model still classifies correctly under white noise, FGSM and PGD, as the perturbation
size epsilon grows. Every attack here is a foolbox 3.3.4 attack (Rauber et al.); this module adds
what a dataset-level curve needs on top of it:

* **A catalogue** (:data:`ATTACKS`): each entry knows its norm, that epsilon is measured in pixel
  units of images in [0, 1], whether it is a *fixed-epsilon* attack (noise, FGSM, PGD) or a
  *minimisation* attack (CW, DeepFool, FMN), and interactive defaults (CW: 4 binary-search steps of
  100 iterations, not foolbox's 9 x 10,000).
* **Curves** (:func:`curve`): samples in batches; a minimisation attack runs once per batch and the
  whole curve follows from the per-sample minimal perturbation; a fixed-epsilon attack runs the
  epsilons in increasing order and attacks at each epsilon only the samples that are still correct
  (a sample broken at a smaller epsilon counts as broken at every larger one, since its adversarial
  lies in the larger ball too). The curve is monotone by construction and costs a fraction of
  foolbox's ``attack(fmodel, x, y, epsilons=[...])``, which attacks every sample at every epsilon.
  Iterative gradient attacks (PGD) additionally keep an adversarial found at *any* iterate (not
  only the last one, which is all foolbox checks), stop attacking a sample once it is broken, and
  start the samples that survived the previous epsilon from their last iterate there (warm start)
  rather than from a fresh random point. All of this makes the curve at least as strong as
  foolbox's plain call (measured in ``benchmarks/robustness.py``), and every sample counted broken
  has a verified adversarial (re-checked with foolbox's ``clip_perturbation`` and a forward pass).
* **A sanity badge** (:func:`sanity_check`): PGD at a large epsilon must reach chance accuracy,
  otherwise the gradients may be masked (as ART's ``SecurityCurve`` checks); noise whose accuracy
  rises significantly with epsilon, or a gradient attack weaker than noise or than FGSM, is flagged.

Epsilons: sorted increasingly and de-duplicated (the result says so in ``notes``); negative values,
non-finite values and values beyond the input range (L-inf > 1; L2 > sqrt(number of pixels)) raise
:class:`~jacreg.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import io
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .device import model_device
from .errors import ConfigError, ShapeError

Norm = Literal["linf", "l2"]
Kind = Literal["fixed", "minimization"]
EventFn = Callable[[dict[str, Any]], Any]

#: Images live in [0, 1] (normalisation is inside the model), so these are foolbox's bounds.
BOUNDS = (0.0, 1.0)
DEFAULT_BATCH_SIZE = 250
#: A PGD result at an L-inf epsilon at least this large must reach chance accuracy.
LARGE_LINF_EPS = 0.5
#: Accuracy above 1/C + this margin at a large epsilon triggers the gradient-masking warning.
CHANCE_MARGIN = 0.05
#: PGD runs in chunks of done_steps // CHUNK_GROWTH + 1 steps (at most steps / 8), dropping the
#: samples already broken between chunks.
CHUNK_GROWTH = 4


def _foolbox() -> Any:
    """Import foolbox lazily (it costs ~0.5 s) with GitPython's refresh warning silenced."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import foolbox

    return foolbox


# --- the catalogue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackSpec:
    """One attack of the catalogue: a thin, typed entry over a foolbox 3.3.4 class.

    Attributes:
        name: registry name (``"pgd"``, ``"cw"``, ...).
        title: what plots and pickers show.
        norm: the norm epsilon is measured in (``"linf"`` or ``"l2"``), in pixel units of images
            in [0, 1]: an L-inf epsilon of 0.1 moves every pixel by at most 0.1, an L2 epsilon of
            1.0 moves the image by a Euclidean distance of 1.0.
        kind: ``"fixed"`` (foolbox ``FixedEpsilonAttack``: one run per epsilon) or
            ``"minimization"`` (foolbox ``MinimizationAttack``: one run gives the minimal
            perturbation of each sample, hence the whole curve).
        foolbox_class: the class name in ``foolbox.attacks``.
        defaults: constructor arguments used unless the caller overrides them.
        default_epsilons: a grid that suits MNIST-like data.
        random: the attack draws random perturbations (white noise): no gradient.
        description: one line for ``--help`` and the page.
    """

    name: str
    title: str
    norm: Norm
    kind: Kind
    foolbox_class: str
    defaults: Mapping[str, Any]
    default_epsilons: tuple[float, ...]
    random: bool = False
    description: str = ""

    @property
    def gradient(self) -> bool:
        """True for gradient-based attacks (everything but white noise)."""
        return not self.random

    @property
    def epsilon_unit(self) -> str:
        """Human description of the epsilon unit."""
        return ("L-inf distance in pixel units (images in [0, 1])" if self.norm == "linf"
                else "L2 distance in pixel units (images in [0, 1])")

    def max_epsilon(self, input_shape: Sequence[int]) -> float:
        """The largest meaningful epsilon: the diameter of the input box [0, 1]^d in this norm."""
        width = BOUNDS[1] - BOUNDS[0]
        if self.norm == "linf":
            return width
        return width * math.sqrt(math.prod(int(s) for s in input_shape))

    def parameters(self) -> dict[str, Any]:
        """The foolbox constructor's parameters and their defaults (ours where we override)."""
        cls = getattr(_foolbox().attacks, self.foolbox_class)
        params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        params.update(self.defaults)
        return params

    def build(self, **overrides: Any) -> Any:
        """A foolbox attack object with the defaults plus ``overrides``.

        Raises:
            ConfigError: an override names no parameter of this attack or has a bad value.
        """
        fb = _foolbox()
        cls = getattr(fb.attacks, self.foolbox_class)
        known = self.parameters()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(f"attack {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                              f"its parameters are {', '.join(sorted(known)) or 'none'}")
        kwargs = {**self.defaults, **overrides}
        for key in ("steps", "binary_search_steps"):
            if key in kwargs and (not isinstance(kwargs[key], int) or kwargs[key] < 1):
                raise ConfigError(f"{self.name}: {key} must be a positive integer, got {kwargs[key]!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"attack {self.name!r}: bad parameters {kwargs}: {exc}") from exc


_LINF_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
_L2_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

ATTACKS: dict[str, AttackSpec] = {
    s.name: s for s in (
        AttackSpec("noise", "White noise (L2, Gaussian)", "l2", "fixed",
                   "L2ClippingAwareAdditiveGaussianNoiseAttack", {}, (0.0, 1.0, 2.0, 4.0, 6.0, 8.0),
                   random=True,
                   description="Gaussian white noise rescaled so that the perturbation after clipping "
                               "to [0,1] has L2 norm epsilon (Rauber & Bethge 2020); one draw per "
                               "epsilon"),
        AttackSpec("noise-linf", "White noise (L-inf, uniform)", "linf", "fixed",
                   "LinfAdditiveUniformNoiseAttack", {}, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), random=True,
                   description="uniform noise in [-epsilon, epsilon] per pixel, clipped to [0,1]; one "
                               "draw per epsilon"),
        AttackSpec("fgsm", "FGSM (L-inf)", "linf", "fixed", "LinfFastGradientAttack",
                   {"random_start": False}, _LINF_GRID,
                   description="fast gradient sign method (Goodfellow et al. 2015): one signed "
                               "gradient step of size epsilon"),
        AttackSpec("pgd", "PGD (L-inf)", "linf", "fixed", "LinfProjectedGradientDescentAttack",
                   {"rel_stepsize": 0.01 / 0.3, "steps": 40, "random_start": True}, _LINF_GRID,
                   description="projected gradient descent (Madry et al. 2018): random start, 40 "
                               "signed steps of epsilon/30, as foolbox's default"),
        AttackSpec("pgd-l2", "PGD (L2)", "l2", "fixed", "L2ProjectedGradientDescentAttack",
                   {"rel_stepsize": 0.025, "steps": 50, "random_start": True}, _L2_GRID,
                   description="projected gradient descent in L2: random start, 50 normalised steps "
                               "of epsilon/40, as foolbox's default"),
        AttackSpec("cw", "Carlini-Wagner (L2)", "l2", "minimization", "L2CarliniWagnerAttack",
                   {"binary_search_steps": 4, "steps": 100, "stepsize": 0.05, "confidence": 0.0,
                    "initial_const": 0.3, "abort_early": True}, _L2_GRID,
                   description="Carlini & Wagner L2 (2017), interactive budget: 4 binary-search steps "
                               "over c (from 0.3) of 100 Adam steps"),
        AttackSpec("deepfool", "DeepFool (L2)", "l2", "minimization", "L2DeepFoolAttack",
                   {"steps": 50, "candidates": 10, "overshoot": 0.02, "loss": "logits"}, _L2_GRID,
                   description="DeepFool (Moosavi-Dezfooli et al. 2016): linearised steps to the "
                               "nearest boundary"),
        AttackSpec("deepfool-linf", "DeepFool (L-inf)", "linf", "minimization", "LinfDeepFoolAttack",
                   {"steps": 50, "candidates": 10, "overshoot": 0.02, "loss": "logits"}, _LINF_GRID,
                   description="DeepFool in L-inf"),
        AttackSpec("fmn", "FMN (L2)", "l2", "minimization", "L2FMNAttack",
                   {"steps": 100}, _L2_GRID,
                   description="fast minimum-norm attack (Pintor et al. 2021), 100 steps"),
        AttackSpec("fmn-linf", "FMN (L-inf)", "linf", "minimization", "LInfFMNAttack",
                   {"steps": 100}, _LINF_GRID,
                   description="fast minimum-norm attack in L-inf, 100 steps"),
    )
}

ALIASES = {"pgd-linf": "pgd", "linf-pgd": "pgd", "l2-pgd": "pgd-l2", "noise-l2": "noise",
           "gaussian": "noise", "uniform": "noise-linf", "fgm": "fgsm", "cw-l2": "cw",
           "deepfool-l2": "deepfool", "fmn-l2": "fmn"}


def names() -> list[str]:
    """Attack names of the catalogue, in display order."""
    return list(ATTACKS)


def get_attack(name: str | AttackSpec) -> AttackSpec:
    """The catalogue entry for a name or alias (ConfigError if unknown)."""
    if isinstance(name, AttackSpec):
        return name
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    try:
        return ATTACKS[key]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(names())}") from None


# --- inputs ------------------------------------------------------------------------------------

def check_epsilons(epsilons: Sequence[float] | float, spec: AttackSpec,
                   input_shape: Sequence[int]) -> tuple[list[float], list[str]]:
    """Validate an epsilon grid: returns it sorted and de-duplicated, with notes on what changed.

    Raises:
        ConfigError: empty, non-numeric, non-finite, negative, or beyond the input range.
    """
    if isinstance(epsilons, (int, float)) and not isinstance(epsilons, bool):
        epsilons = [epsilons]
    try:
        eps = [float(e) for e in epsilons]
    except (TypeError, ValueError):
        raise ConfigError(f"epsilons must be numbers, got {epsilons!r}") from None
    if not eps:
        raise ConfigError("give at least one epsilon (e.g. 0,0.05,0.1)")
    bad = [e for e in eps if not math.isfinite(e)]
    if bad:
        raise ConfigError(f"epsilons must be finite numbers, got {bad}")
    neg = [e for e in eps if e < 0]
    if neg:
        raise ConfigError(f"epsilons must be >= 0 (a perturbation size), got {neg}")
    top = spec.max_epsilon(input_shape)
    over = [e for e in eps if e > top + 1e-9]
    if over:
        if spec.norm == "linf":
            why = ("images are in [0, 1], so an L-inf perturbation larger than 1 changes nothing more; "
                   "use values in [0, 1] (e.g. 0.1 = 10% of the pixel range)")
        else:
            why = (f"the L2 diameter of [0, 1]^{math.prod(input_shape)} is {top:.3g}; use values up to "
                   "that (pixel units)")
        raise ConfigError(f"epsilon {over[0]:g} is beyond the input range for {spec.title}: {why}")
    notes = []
    out = sorted(set(eps))
    if out != eps:
        if len(out) < len(eps):
            notes.append("duplicate epsilons removed")
        if sorted(eps) != eps:
            notes.append(f"epsilons sorted into increasing order: {', '.join(f'{e:g}' for e in out)}")
    return out, notes


def _check_data(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError("x and y must be torch tensors (images in [0, 1] and integer labels)")
    if len(x) == 0:
        raise ConfigError("no samples: pass at least one image (e.g. --samples 100)")
    if x.dim() < 2:
        raise ShapeError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise ShapeError(f"y must hold one label per image: x has {len(x)} images, y has shape "
                         f"{tuple(y.shape)}")
    if not x.is_floating_point():
        raise ConfigError(f"images must be floats in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError("images contain NaN or infinite values")
    if lo < BOUNDS[0] or hi > BOUNDS[1]:
        raise ConfigError(f"images must lie in [0, 1] (the attacks' bounds), got values in [{lo:.4g}, "
                          f"{hi:.4g}]; pass unnormalised images: the normalisation belongs inside the model")
    return x, y.long()


def _prepare_model(model: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device,
                                                                              list[str]]:
    """A private copy of the model to attack: on ``device``, eval mode, parameters frozen.

    The caller's model is never changed. Two reasons for the copy: foolbox's ``PyTorchModel`` calls
    ``model.to(device)`` in place (its default device is cuda:0 when there is one), and eagerpy
    computes input gradients with ``loss.backward()``, which would also accumulate ``.grad`` on every
    parameter of the caller's model (and spend time on it). On the copy, ``requires_grad`` is off,
    so the backward pass computes the input gradient only, and foolbox is given the copy's device,
    so its ``.to`` is a no-op.
    """
    from .device import pick

    notes: list[str] = []
    here = model_device(model)
    target = here if device is None else pick(device)
    if model.training:
        notes.append("the model was in training mode: attacked an eval-mode copy")
    net = copy.deepcopy(model).to(target).eval()
    net.requires_grad_(False)
    return net, target, notes


def parse_params(items: Sequence[str] | None, spec: AttackSpec) -> dict[str, Any]:
    """Parse ``["steps=10", "random_start=false"]`` into typed attack arguments (for the CLI).

    Raises:
        ConfigError: malformed item, unknown parameter, or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    known = spec.parameters()
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        if key not in known:
            raise ConfigError(f"attack {spec.name!r} has no parameter {key!r}; its parameters are "
                              f"{', '.join(sorted(known))}")
        default = known[key]
        text = text.strip()
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1", "yes")
            elif isinstance(default, int):
                value = int(text)
            elif isinstance(default, float) or default is None:
                value = None if text.lower() == "none" else float(text)
            else:
                value = text
        except ValueError:
            raise ConfigError(f"--param {key}: cannot read {text!r} as {type(default).__name__}") from None
        out[key] = value
    return out


# --- running foolbox ---------------------------------------------------------------------------

class _Stopped(Exception):
    """Raised inside a batch when the caller asked to stop; the batch is dropped."""


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
        import eagerpy as ep

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

    def get_random_start(self: Any, x0: Any, epsilon: float) -> Any:
        if self._start is not None:
            return self._start
        return cls.get_random_start(self, x0, epsilon)

    return type(f"Tracking{cls.__name__}", (cls,), {"get_loss_fn": get_loss_fn,
                                                    "get_random_start": get_random_start})


def _clip_perturbation(x0: torch.Tensor, xp: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """foolbox's ``LpDistance.clip_perturbation`` (L-inf, L2) in torch."""
    p = xp - x0
    if norm == "linf":
        return x0 + p.clamp(-eps, eps)
    norms = p.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0).view(-1, *([1] * (p.dim() - 1)))
    return x0 + p * factor


def _distance(x0: torch.Tensor, xp: torch.Tensor, norm: Norm) -> torch.Tensor:
    d = (xp - x0).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(-1)


def _fixed_attack(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, model: nn.Module,
                  x0: torch.Tensor, y: torch.Tensor, eps: float, stop: Callable[[], bool],
                  start: torch.Tensor | None = None,
                  counter: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack ``x0`` at one epsilon.

    Returns ``(success, candidates)``: the verified success mask, and per sample the adversarial
    (clipped to epsilon) or, where the attack failed, its last iterate. ``start`` replaces the
    random start of an attack that uses one (a warm start inside the epsilon ball). ``counter[0]``
    is increased by the number of per-sample gradient evaluations.
    """
    fb = _foolbox()
    attack = spec.build(**params)
    n = len(x0)
    if isinstance(attack, fb.attacks.gradient_descent_base.BaseGradientDescent):
        tracking_cls = _tracking_class(type(attack))
        tracked = tracking_cls.__new__(tracking_cls)
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
                import eagerpy as ep

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
                raise _Stopped
        if x_cur is not None and len(active):
            best[active] = x_cur
        if counter is not None:
            counter[0] += tracked._evals
    else:
        best = attack.run(fmodel, x0, fb.criteria.Misclassification(y), epsilon=eps).detach()
    cand = _clip_perturbation(x0, best, eps, spec.norm)
    success = _predict(model, cand) != y
    return success, cand


def _minimization_attack(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, x0: torch.Tensor,
                         y: torch.Tensor) -> torch.Tensor:
    fb = _foolbox()
    attack = spec.build(**params)
    return attack.run(fmodel, x0, fb.criteria.Misclassification(y), early_stop=None).detach()


# --- the curve ---------------------------------------------------------------------------------

def curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str | AttackSpec = "pgd",
          epsilons: Sequence[float] | float | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
          device: str | torch.device | None = None, on_event: EventFn | None = None,
          should_stop: Callable[[], bool] | None = None, seed: int = 0, warm_start: bool = True,
          **attack_kwargs: Any) -> dict[str, Any]:
    """Accuracy against epsilon for one attack over a dataset (the paper's Fig. 3 for any model).

    Args:
        model: takes images in [0, 1] (N, C, H, W), returns logits. Never modified: a frozen
            eval-mode copy on ``device`` is attacked.
        x: images in [0, 1]; y: integer labels. Any device (moved batch by batch).
        attack: a catalogue name (:func:`names`) or alias, or an :class:`AttackSpec`.
        epsilons: perturbation sizes in the attack's norm, pixel units; sorted and de-duplicated
            (``notes`` says so). Default: the attack's ``default_epsilons``.
        batch_size: samples per foolbox call.
        device: where to attack; None = the model's device.
        on_event: called with a dict after each (batch, epsilon) (``"epsilon"``), after each batch
            (``"batch"``, with the running curve over the samples done so far) and at ``"start"`` /
            ``"done"``. Returning ``False`` stops the run.
        should_stop: polled between batches, epsilons and PGD chunks; True stops the run.
        seed: seeds the attacks' random starts and noise (the caller's RNG state is restored).
        warm_start: for an attack with a random start (PGD), start the samples still correct at
            the previous epsilon from their last iterate there (a point inside the new, larger ball
            where the loss is already high) instead of a fresh random point; the first attacked
            epsilon uses foolbox's random start. False = a random start at every epsilon.
        **attack_kwargs: foolbox constructor arguments overriding the catalogue defaults
            (e.g. ``steps=20`` for PGD).

    Returns:
        A dict: ``attack``, ``title``, ``norm``, ``kind``, ``params``, ``epsilons``, ``accuracy``
        (``accuracy[k]`` = fraction of samples still correctly classified at ``epsilons[k]``,
        never increasing; epsilon 0 gives the clean accuracy), ``raw_accuracy`` (noise attacks:
        the plain per-epsilon accuracy of one noise draw, not made monotone; else None),
        ``clean_accuracy``, ``samples`` (processed; fewer than requested when stopped),
        ``requested_samples``, ``seconds``, ``min_epsilons`` (per sample: the minimal perturbation
        found by a minimisation attack, or the smallest grid epsilon that broke it for a
        fixed-epsilon attack; 0 when misclassified clean, inf when never broken), ``mean_l2``
        (mean L2 distance of the adversarials found, pixel units; None if none),
        ``median_min_epsilon``, ``attacked`` (samples attacked at each epsilon: the work done),
        ``gradient_evaluations`` (fixed-epsilon gradient attacks: per-sample forward+backward passes;
        foolbox's plain call does samples x epsilons x steps),
        ``num_classes``, ``chance`` (1/C), ``input_numel``, ``stopped``, ``notes``, ``device``,
        ``seed``, ``batch_size``, ``warm_start`` (whether it was used).

    Raises:
        ConfigError: unknown attack or parameter, bad epsilons, no samples, images outside [0, 1].
        ShapeError: x and y disagree, or the model rejects the images.
    """
    t0 = time.perf_counter()
    spec = get_attack(attack)
    x, y = _check_data(x, y)
    eps, notes = check_epsilons(spec.default_epsilons if epsilons is None else epsilons, spec,
                                tuple(x.shape[1:]))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec.build(**attack_kwargs)  # validate parameters before any work
    with torch.inference_mode(False):  # a copy made under inference_mode could not be differentiated
        net, dev, model_notes = _prepare_model(model, device)
    notes += model_notes
    emit = on_event or (lambda _e: None)
    stop_flag = [False]

    def stop() -> bool:
        if not stop_flag[0] and should_stop is not None and should_stop():
            stop_flag[0] = True
        return stop_flag[0]

    def send(event: dict[str, Any]) -> None:
        if emit(event) is False:
            stop_flag[0] = True

    n, K = len(x), len(eps)
    nb = math.ceil(n / batch_size)
    counts = [0] * K               # samples still correct at each epsilon (over completed batches)
    raw_counts = [0] * K
    attacked = [0] * K
    clean = 0
    done = 0
    min_eps: list[float] = []
    l2s: list[float] = []
    num_classes: int | None = None
    evals = [0]
    send({"event": "start", "attack": spec.name, "epsilons": eps, "samples": n, "batches": nb})

    fb = _foolbox()
    cuda_devs = []
    if dev.type == "cuda":
        cuda_devs = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=cuda_devs):
        torch.manual_seed(seed)
        fmodel = fb.PyTorchModel(net, bounds=BOUNDS, device=dev)
        for b in range(nb):
            if stop():
                break
            xb = x[b * batch_size:(b + 1) * batch_size].to(dev).clone()
            yb = y[b * batch_size:(b + 1) * batch_size].to(dev).clone()
            try:
                with torch.no_grad():
                    logits = net(xb)
            except RuntimeError as exc:
                raise ShapeError(f"the model cannot take images of shape {tuple(xb.shape[1:])}: "
                                 f"{exc}") from exc
            if logits.dim() != 2:
                raise ShapeError(f"the model must return logits of shape (N, C), got {tuple(logits.shape)}")
            num_classes = int(logits.shape[1])
            if int(yb.min()) < 0 or int(yb.max()) >= num_classes:
                raise ShapeError(f"labels must be in [0, {num_classes - 1}] for a model with {num_classes} "
                                 f"outputs, got labels up to {int(yb.max())}")
            try:
                out = _attack_batch(spec, attack_kwargs, fmodel, net, xb, yb, logits.argmax(-1) == yb, eps,
                                    stop, send, b, nb, warm_start, evals)
            except _Stopped:
                break
            if out is None:  # stopped inside the batch: drop it
                break
            correct_k, raw_k, att_k, mins, l2 = out
            for k in range(K):
                counts[k] += correct_k[k]
                raw_counts[k] += raw_k[k]
                attacked[k] += att_k[k]
            clean += int((logits.argmax(-1) == yb).sum())
            done += len(xb)
            min_eps += mins
            l2s += l2
            send({"event": "batch", "batch": b, "batches": nb, "done": done, "samples": n,
                  "epsilons": eps, "accuracy": [c / done for c in counts],
                  "clean_accuracy": clean / done, "progress": (b + 1) / nb,
                  "seconds": time.perf_counter() - t0})
    stopped = done < n
    finite = sorted(min_eps)
    result: dict[str, Any] = {
        "attack": spec.name, "title": spec.title, "norm": spec.norm, "kind": spec.kind,
        "params": {**spec.defaults, **attack_kwargs},
        "epsilons": eps,
        "accuracy": [c / done if done else float("nan") for c in counts],
        "raw_accuracy": ([c / done if done else float("nan") for c in raw_counts] if spec.random else None),
        "clean_accuracy": clean / done if done else float("nan"),
        "samples": done, "requested_samples": n,
        "seconds": time.perf_counter() - t0,
        "min_epsilons": min_eps,
        "mean_l2": (sum(l2s) / len(l2s)) if l2s else None,
        "median_min_epsilon": finite[len(finite) // 2] if finite else None,
        "attacked": attacked,
        "gradient_evaluations": evals[0] if spec.kind == "fixed" and spec.gradient else None,
        "num_classes": num_classes, "chance": (1.0 / num_classes) if num_classes else None,
        "input_numel": int(math.prod(x.shape[1:])),
        "stopped": stopped, "notes": notes, "device": str(dev), "seed": seed, "batch_size": batch_size,
        "warm_start": bool(warm_start and spec.kind == "fixed" and spec.gradient
                           and bool(spec.build(**attack_kwargs).__dict__.get("random_start", False))),
    }
    send({"event": "done", "stopped": stopped, "samples": done, "seconds": result["seconds"],
          "accuracy": result["accuracy"], "epsilons": eps})
    return result


def _attack_batch(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, net: nn.Module,
                  xb: torch.Tensor, yb: torch.Tensor, correct0: torch.Tensor, eps: list[float],
                  stop: Callable[[], bool], send: Callable[[dict[str, Any]], None], b: int, nb: int,
                  warm_start: bool = True, evals: list[int] | None = None,
                  ) -> tuple[list[int], list[int], list[int], list[float], list[float]] | None:
    """One batch: (correct count per eps, raw correct per eps, attacked per eps, min eps, L2s)."""
    B, K = len(xb), len(eps)
    broken = ~correct0
    mins = torch.full((B,), math.inf, dtype=torch.float64)
    mins[broken.cpu()] = 0.0
    l2 = torch.full((B,), math.nan, dtype=torch.float64)
    correct_k, raw_k, att_k = [0] * K, [0] * K, [0] * K

    if spec.kind == "minimization":
        idx = torch.nonzero(correct0).flatten()
        if len(idx):
            xp = _minimization_attack(spec, params, fmodel, xb[idx], yb[idx])
            x0 = xb[idx]
            adv = _predict(net, xp) != yb[idx]
            dist = _distance(x0, xp, spec.norm).double().cpu()
            adv_c = adv.cpu()
            mins[idx.cpu()[adv_c]] = dist[adv_c]
            l2[idx.cpu()[adv_c]] = _distance(x0, xp, "l2").double().cpu()[adv_c]
            hit = torch.zeros(len(idx), dtype=torch.bool, device=xb.device)
            for k, e in enumerate(eps):  # foolbox's rule: clip to epsilon, then check (made monotone)
                att_k[k] = len(idx)
                if e > 0:
                    hit |= _predict(net, _clip_perturbation(x0, xp, e, spec.norm)) != yb[idx]
                correct_k[k] = int(len(idx) - hit.sum())
                raw_k[k] = correct_k[k]
        send({"event": "epsilon", "batch": b, "batches": nb, "index": K - 1, "epsilon": eps[-1],
              "attacked": len(idx), "progress": (b + 1) / nb})
        if stop():
            return None
        return correct_k, raw_k, att_k, mins.tolist(), [v for v in l2.tolist() if not math.isnan(v)]

    last = xb.clone()  # per sample: the last iterate of the previous epsilon (warm start)
    has_last = torch.zeros(B, dtype=torch.bool, device=xb.device)
    for k, e in enumerate(eps):
        if stop():
            return None
        # noise: every clean-correct sample gets a fresh draw (to report the raw curve too);
        # gradient attacks: only the samples still correct at the previous epsilon.
        target = correct0 if spec.random else ~broken
        idx = torch.nonzero(target).flatten()
        succ_full = torch.zeros(B, dtype=torch.bool, device=xb.device)
        if e > 0 and len(idx):
            att_k[k] = len(idx)
            start = None
            if warm_start and spec.gradient and bool(has_last[idx].all()):
                start = last[idx]
            success, cand = _fixed_attack(spec, params, fmodel, net, xb[idx], yb[idx], e, stop, start,
                                          evals)
            succ_full[idx] = success
            last[idx] = cand
            has_last[idx] = True
            new = success & ~broken[idx]
            if bool(new.any()):
                sel = idx[new]
                mins[sel.cpu()] = e
                l2[sel.cpu()] = _distance(xb[sel], cand[new], "l2").double().cpu()
            broken = broken | succ_full
        correct_k[k] = int((~broken).sum())
        raw_k[k] = int((correct0 & ~succ_full).sum())
        send({"event": "epsilon", "batch": b, "batches": nb, "index": k, "epsilon": e,
              "attacked": int(att_k[k]), "still_correct": correct_k[k],
              "progress": (b + (k + 1) / K) / nb})
    return correct_k, raw_k, att_k, mins.tolist(), [v for v in l2.tolist() if not math.isnan(v)]


def masking_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100,
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
                  on_event: EventFn | None = None, should_stop: Callable[[], bool] | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """PGD with an unbounded budget (L-inf epsilon 1 = the whole input box), as ART's SecurityCurve.

    ``steps`` signed steps of size 1/(steps/2) from the clean image (no random start: a random
    image would break most samples by itself and hide masked gradients). Any working gradient
    attack drives accuracy to (below) chance here, since every image is reachable;
    :func:`sanity_check` warns when it does not.
    """
    res = curve(model, x, y, "pgd", [1.0], batch_size=batch_size, device=device, on_event=on_event,
                should_stop=should_stop, seed=seed, steps=steps, abs_stepsize=1.0 / (steps / 2),
                random_start=False)
    res["probe"] = True
    return res


# --- sanity --------------------------------------------------------------------------------------

def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.25 / max(n, 1)) / max(n, 1))


def sanity_check(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings about curves that look wrong (an empty list when nothing is suspicious).

    * **Gradient masking** (ART's ``SecurityCurve`` test): a PGD curve with an epsilon at least
      0.5 (L-inf; half the L2 diameter for L2) — a budget that reaches an uninformative image —
      must drive accuracy to chance, ``<= 1/C + 0.05``; otherwise the gradients are probably
      masked or obfuscated and the curves overstate robustness. :func:`masking_probe` runs it.
    * **Noise that helps**: a white-noise curve whose *raw* accuracy (one draw per epsilon, not made
      monotone) rises with epsilon by more than two standard errors.
    * **Weak gradients**: at an epsilon both share, PGD weaker than FGSM, or a gradient attack
      weaker than noise of the same norm, by more than two standard errors.

    Comparisons are made between results with the same ``"model"`` key (set it when the results
    come from several models).
    """
    items = [results] if isinstance(results, Mapping) else list(results)
    warnings: list[str] = []
    for r in items:
        who = f"{r['model']}: " if r.get("model") else ""
        n = int(r.get("samples") or 0)
        if n == 0:
            continue
        eps, acc = list(r["epsilons"]), list(r["accuracy"])
        spec = ATTACKS.get(r.get("attack", ""))
        if spec is not None and r["attack"] in ("pgd", "pgd-l2") and r.get("num_classes"):
            chance = 1.0 / int(r["num_classes"])
            if r["attack"] == "pgd":
                large = [k for k, e in enumerate(eps) if e >= LARGE_LINF_EPS]
            else:
                d = r.get("input_numel")
                large = [k for k, e in enumerate(eps) if d and e >= 0.5 * math.sqrt(d)]
            if large:
                k = large[-1]
                if acc[k] > chance + CHANCE_MARGIN:
                    warnings.append(
                        f"{who}possible gradient masking: {spec.title} at epsilon {eps[k]:g} leaves "
                        f"{acc[k]:.0%} accuracy, above chance ({chance:.0%}); a budget this large reaches "
                        "an uninformative image, so a working attack gets to chance. The curves may "
                        "overstate robustness: try more steps, restarts, or a gradient-free attack.")
        raw = r.get("raw_accuracy")
        if spec is not None and spec.random and raw:
            for k in range(1, len(raw)):
                a, b = raw[k - 1], raw[k]
                if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)):
                    continue
                if b - a > 2 * math.sqrt(2) * _stderr(a, n) + 1e-12:
                    warnings.append(
                        f"{who}{spec.title}: accuracy rises with epsilon, from {a:.1%} at {eps[k - 1]:g} to "
                        f"{b:.1%} at {eps[k]:g} (more than noise on {n} samples explains); the model may "
                        "be unstable under noise, or use more samples.")
                    break
    # cross-attack comparisons, per model
    by_model: dict[Any, dict[str, Mapping[str, Any]]] = {}
    for r in items:
        if int(r.get("samples") or 0) > 0:
            by_model.setdefault(r.get("model"), {})[r.get("attack", "")] = r
    for model_key, rs in by_model.items():
        who = f"{model_key}: " if model_key else ""
        pairs = [("pgd", "fgsm", "PGD is weaker than FGSM"),
                 ("pgd", "noise-linf", "PGD is weaker than L-inf noise"),
                 ("fgsm", "noise-linf", "FGSM is weaker than L-inf noise"),
                 ("pgd-l2", "noise", "L2 PGD is weaker than L2 noise")]
        for strong, weak, what in pairs:
            if strong not in rs or weak not in rs:
                continue
            s, w = rs[strong], rs[weak]
            common = sorted(set(s["epsilons"]) & set(w["epsilons"]))
            for e in common:
                if e == 0:
                    continue
                a_s = s["accuracy"][s["epsilons"].index(e)]
                a_w = w["accuracy"][w["epsilons"].index(e)]
                n = min(int(s["samples"]), int(w["samples"]))
                if a_s - a_w > 2 * math.sqrt(2) * _stderr(a_w, n):
                    warnings.append(f"{who}{what} at epsilon {e:g} ({a_s:.1%} vs {a_w:.1%} accuracy): "
                                    "a sign of gradient masking.")
                    break
    return warnings


# --- exports -----------------------------------------------------------------------------------

def _clean_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_jsonable(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result with inf/NaN replaced by None (strict JSON); lists and dicts copied."""

    def conv(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): conv(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(u) for u in v]
        return _clean_number(v)

    return conv(dict(result))


def to_csv(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """One row per (model, attack, epsilon): model, attack, norm, epsilon, accuracy, raw_accuracy,
    samples, seconds."""
    items = [results] if isinstance(results, Mapping) else list(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "attack", "norm", "epsilon", "accuracy", "raw_accuracy", "samples", "seconds"])
    for r in items:
        raw = r.get("raw_accuracy") or [None] * len(r["epsilons"])
        for e, a, ra in zip(r["epsilons"], r["accuracy"], raw, strict=False):
            w.writerow([r.get("model", ""), r["attack"], r["norm"], f"{e:g}",
                        "" if _clean_number(a) is None else f"{a:.6g}",
                        "" if _clean_number(ra) is None else f"{ra:.6g}",
                        r["samples"], f"{r['seconds']:.3f}"])
    return buf.getvalue()


# --- a background runner for interactive front ends -------------------------------------------

@dataclass
class CurveTask:
    """One curve to compute: a model (already loaded) on some samples with one attack."""

    model_label: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    attack: str
    epsilons: Sequence[float]
    params: dict[str, Any] = field(default_factory=dict)
    probe: bool = False


class CurveRunner:
    """Computes several curves one after the other in a background thread.

    The thread never touches a user interface: it writes into this object (under a lock), and a
    front end polls :meth:`snapshot` (e.g. a Streamlit fragment with ``run_every``). :meth:`stop`
    stops at the next batch, epsilon or PGD chunk; the finished part stays available.
    """

    def __init__(self, tasks: Sequence[CurveTask], *, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device | None = None, seed: int = 0) -> None:
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._results: list[dict[str, Any]] = []
        self._partial: dict[str, Any] | None = None
        self._errors: list[str] = []
        self._progress = 0.0
        self._current: str | None = None
        self._done = False
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.id = uuid.uuid4().hex

    def start(self) -> CurveRunner:
        self._thread = threading.Thread(target=self._run, name="jacreg-curves", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        """Finished results, the growing partial curve, errors, progress in [0, 1], done flag."""
        with self._lock:
            return {"results": list(self._results), "partial": dict(self._partial) if self._partial else None,
                    "errors": list(self._errors), "progress": self._progress, "current": self._current,
                    "done": self._done, "stopped": self._stop.is_set(),
                    "seconds": time.time() - self.started}

    def _run(self) -> None:
        from .errors import JacregError

        n = len(self.tasks)
        try:
            for i, task in enumerate(self.tasks):
                if self._stop.is_set():
                    break
                label = f"{task.model_label} / {get_attack(task.attack).title}"
                with self._lock:
                    self._current = label
                    self._partial = None

                def on_event(ev: dict[str, Any], i: int = i, task: CurveTask = task) -> None:
                    with self._lock:
                        if "progress" in ev:
                            self._progress = (i + float(ev["progress"])) / n
                        if ev.get("event") == "batch":
                            spec = get_attack(task.attack)
                            self._partial = {"model": task.model_label, "attack": spec.name,
                                             "title": spec.title, "norm": spec.norm,
                                             "epsilons": ev["epsilons"], "accuracy": ev["accuracy"],
                                             "samples": ev["done"], "probe": task.probe}

                try:
                    if task.probe:
                        res = masking_probe(task.model, task.x, task.y, batch_size=self.batch_size,
                                            device=self.device, on_event=on_event,
                                            should_stop=self._stop.is_set, seed=self.seed)
                    else:
                        res = curve(task.model, task.x, task.y, task.attack, task.epsilons,
                                    batch_size=self.batch_size, device=self.device, on_event=on_event,
                                    should_stop=self._stop.is_set, seed=self.seed, **task.params)
                except JacregError as exc:
                    with self._lock:
                        self._errors.append(f"{label}: {exc}")
                    continue
                except Exception as exc:  # keep the thread alive for the next task; report it
                    with self._lock:
                        self._errors.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                res["model"] = task.model_label
                with self._lock:
                    if res["samples"] > 0:
                        self._results.append(res)
                    self._partial = None
                    self._progress = (i + 1) / n
        finally:
            with self._lock:
                self._done = True
                self._current = None


# --- command line --------------------------------------------------------------------------------

def add_robustness_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg robustness``."""
    parser.add_argument("checkpoint", help="a .safetensors (or torch state_dict) checkpoint")
    parser.add_argument("--dataset", default=None, help="test data (default: the checkpoint's dataset)")
    parser.add_argument("--attack", default="pgd", metavar="NAME",
                        help=f"one of {', '.join(names())} (default: pgd)")
    parser.add_argument("--eps", default=None, metavar="E1,E2,...",
                        help="epsilons in the attack's norm, pixel units (images in [0,1]); sorted if "
                             "unsorted (default: the attack's grid)")
    parser.add_argument("--samples", type=int, default=500, help="the first N test samples (default 500)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a foolbox parameter of the attack, e.g. --param steps=20 (repeatable)")
    parser.add_argument("--check-masking", action="store_true",
                        help="also run PGD with an unbounded budget (epsilon 1) and warn unless it "
                             "reaches chance accuracy")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    parser.add_argument("--csv", default=None, metavar="FILE", help="write epsilon,accuracy rows")
    parser.add_argument("--png", default=None, metavar="FILE", help="plot the curve")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_robustness_command(args: argparse.Namespace) -> int:
    """``python -m jacreg robustness``: load safely, attack the first N test samples, write files."""
    from .checkpoints import load_checkpoint
    from .cli import parse_floats, write_json
    from .data import load_dataset
    from .device import pick
    from .fileio import atomic_write_text

    spec = get_attack(args.attack)
    eps = parse_floats(args.eps, "--eps") if args.eps is not None else None
    if args.samples is None or args.samples < 1:
        raise ConfigError("--samples must be at least 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    params = parse_params(args.param, spec)
    dev = pick(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=str(dev))
    ds = args.dataset or meta.get("dataset")
    if not ds:
        raise ConfigError("the checkpoint names no dataset: pass --dataset")
    x, y = load_dataset(ds, split="test", limit=args.samples, data_root=args.data_root)
    if len(x) < args.samples:
        print(f"note: {ds} has only {len(x)} test samples", file=sys.stderr)
    eps_checked, _ = check_epsilons(spec.default_epsilons if eps is None else eps, spec, tuple(x.shape[1:]))

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=100, desc=spec.name, file=sys.stderr,
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def on_event(ev: dict[str, Any]) -> None:
        if bar is not None and "progress" in ev:
            bar.n = round(100 * float(ev["progress"]))
            bar.refresh()

    try:
        result = curve(model, x, y, spec, eps_checked if eps is None else eps, batch_size=args.batch_size,
                       device=dev, on_event=on_event, seed=args.seed, **params)
        probe = None
        if args.check_masking:
            probe = masking_probe(model, x, y, batch_size=args.batch_size, device=dev, seed=args.seed)
    finally:
        if bar is not None:
            bar.close()
    result["model"] = meta.get("name") or os.path.basename(str(args.checkpoint))
    result.update({"checkpoint": str(args.checkpoint), "dataset": ds})
    checks = [result] + ([dict(probe, model=result["model"])] if probe else [])
    result["warnings"] = sanity_check(checks)
    if probe is not None:
        result["masking_probe"] = {"epsilon": 1.0, "accuracy": probe["accuracy"][0],
                                   "seconds": probe["seconds"], "samples": probe["samples"]}
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for e, a in zip(result["epsilons"], result["accuracy"], strict=True):
        print(f"  eps {e:<8g} accuracy {a:.4f}", file=sys.stderr)
    print(f"{spec.title}: {result['samples']} samples in {result['seconds']:.1f} s", file=sys.stderr)
    out = to_jsonable(result)
    write_json(args.json, out)
    if args.csv:
        atomic_write_text(args.csv, to_csv(result))
    if args.png:
        from .robustness_plots import save_png

        save_png([result], args.png)
    summary = {k: out[k] for k in ("attack", "epsilons", "accuracy", "samples", "seconds")}
    print(json.dumps(summary))
    return 0
