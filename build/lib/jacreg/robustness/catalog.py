"""The attack catalogue: typed entries over foolbox 3.3.4 classes, and the checks of their inputs.

This is the only module that imports foolbox (lazily, through :func:`foolbox`: it costs about half a
second). Every entry knows its norm, that epsilon is measured in pixel units of images in [0, 1],
whether it is a *fixed-epsilon* attack (noise, FGSM, PGD) or a *minimisation* attack (CW, DeepFool,
FMN), and interactive defaults (CW: 4 binary-search steps of 100 iterations, not foolbox's
9 x 10,000).

Epsilons: sorted increasingly and de-duplicated (the result says so in ``notes``); negative values,
non-finite values and values beyond the input range (L-inf > 1; L2 > sqrt(number of pixels)) raise
:class:`~jacreg.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["ALIASES", "ATTACKS", "BOUNDS", "GRID_LABELS", "AttackSpec", "Kind", "Norm", "check_epsilons",
           "default_grids", "foolbox", "get_attack", "grid_key", "names", "parse_params"]

Norm = Literal["linf", "l2"]
Kind = Literal["fixed", "minimization"]

#: Images live in [0, 1] (normalisation is inside the model), so these are foolbox's bounds.
BOUNDS = (0.0, 1.0)
#: The most iterations an attack may be asked for (steps, binary-search steps, candidates).
MAX_STEPS = 10_000
#: The most epsilons a curve may have.
MAX_EPSILONS = 100


def foolbox() -> Any:
    """The foolbox module, imported on first use with GitPython's refresh warning silenced."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import foolbox as fb

    return fb


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
        cls = getattr(foolbox().attacks, self.foolbox_class)
        params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        params.update(self.defaults)
        return params

    def build(self, **overrides: Any) -> Any:
        """A foolbox attack object with the defaults plus ``overrides``.

        Raises:
            ConfigError: an override names no parameter of this attack or has a bad value.
        """
        fb = foolbox()
        cls = getattr(fb.attacks, self.foolbox_class)
        known = self.parameters()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(f"attack {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                              f"its parameters are {', '.join(sorted(known)) or 'none'}")
        kwargs = {**self.defaults, **overrides}
        for key in ("steps", "binary_search_steps", "candidates"):
            value = kwargs.get(key)
            if key in kwargs and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_STEPS):
                raise ConfigError(f"{self.name}: {key} must be an integer from 1 to {MAX_STEPS:,}, "
                                  f"got {value!r:.40}")
        for key, value in kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{self.name}: {key} must be a finite number, got {value}")
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


#: What an epsilon field of a front end is called, per :func:`grid_key`.
GRID_LABELS: dict[str, str] = {"linf": "L-inf epsilons", "l2": "L2 epsilons",
                               "noise-linf": "White-noise L-inf epsilons",
                               "noise-l2": "White-noise L2 epsilons"}


def grid_key(attack: str | AttackSpec) -> str:
    """Attacks that share an epsilon grid: gradient attacks per norm, white noise (much larger radii)
    apart: ``"linf"``, ``"l2"``, ``"noise-linf"`` or ``"noise-l2"``."""
    spec = get_attack(attack)
    return f"noise-{spec.norm}" if spec.random else spec.norm


def default_grids() -> dict[str, tuple[float, ...]]:
    """The default epsilons of each grid (:func:`grid_key`), from the catalogue."""
    out: dict[str, tuple[float, ...]] = {}
    for spec in ATTACKS.values():
        out.setdefault(grid_key(spec), spec.default_epsilons)
    return out


def check_epsilons(epsilons: Sequence[float] | float, spec: AttackSpec,
                   input_shape: Sequence[int]) -> tuple[list[float], list[str]]:
    """Validate an epsilon grid: returns it sorted and de-duplicated, with notes on what changed.

    Raises:
        ConfigError: empty, non-numeric, non-finite, negative, or beyond the input range.
    """
    values: Sequence[Any] = [epsilons] if isinstance(epsilons, (int, float)) else epsilons
    try:
        eps = [float(e) for e in values]
    except (TypeError, ValueError):
        raise ConfigError(f"epsilons must be numbers, got {epsilons!r}") from None
    if not eps:
        raise ConfigError("give at least one epsilon (e.g. 0,0.05,0.1)")
    if len(eps) > MAX_EPSILONS:
        raise ConfigError(f"give at most {MAX_EPSILONS} epsilons, got {len(eps)}")
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
