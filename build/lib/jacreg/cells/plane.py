"""Planes through a sample: random (Fig. S1), adversarial (Fig. S2) and through three samples.

A plane is ``origin + a*u + b*v`` with ``u``, ``v`` orthonormal in input space, so the point at
coordinates ``(a, b)`` is at L2 distance ``sqrt(a**2 + b**2)`` from the origin (pixel units of
images in [0, 1]).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adversarial import fgsm_direction
from ..errors import ConfigError, ShapeError
from ..parsing import check_seed

__all__ = ["Plane", "adversarial_plane", "as_image", "plane_from_directions", "random_plane", "sample_plane"]


@dataclass(frozen=True, eq=False)
class Plane:
    """A 2-D affine plane ``origin + a*u + b*v`` in input space.

    Attributes:
        origin: the sample the plane goes through, shape (C, H, W), float32 on the CPU.
        u: first direction (horizontal axis of the figures), unit L2 norm, shape of ``origin``.
        v: second direction (vertical axis), unit L2 norm, orthogonal to ``u``.
        kind: how the plane was made: ``"random"``, ``"adversarial"``, ``"samples"`` or ``"custom"``.
        note: warnings met while building the plane (e.g. parallel attack directions), "" if none.
        marks: named points of the plane as ``(name, a, b)``, e.g. the other two samples of a
            :func:`sample_plane`; figures draw them.
    """

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    kind: str = "custom"
    note: str = ""
    marks: tuple[tuple[str, float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        shapes = {tuple(self.origin.shape), tuple(self.u.shape), tuple(self.v.shape)}
        if len(shapes) != 1:
            raise ShapeError(f"plane origin, u and v must have one shape, got {sorted(shapes)}")
        nu, nv = float(self.u.double().norm()), float(self.v.double().norm())
        dot = float((self.u.double() * self.v.double()).sum())
        if abs(nu - 1) > 1e-4 or abs(nv - 1) > 1e-4 or abs(dot) > 1e-4:
            raise ConfigError(
                f"plane directions must be orthonormal (|u|={nu:.4g}, |v|={nv:.4g}, u.v={dot:.3g}); "
                "build planes with random_plane, adversarial_plane, sample_plane or plane_from_directions"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one input, (C, H, W)."""
        return tuple(self.origin.shape)

    def point(self, a: float, b: float) -> torch.Tensor:
        """The input at plane coordinates ``(a, b)`` (not clipped to [0, 1])."""
        return self.origin + float(a) * self.u + float(b) * self.v

    def points(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The inputs at coordinates ``(a[k], b[k])``, shape (N, C, H, W)."""
        at = torch.as_tensor(np.asarray(a, dtype=np.float32)).reshape(-1, 1)
        bt = torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 1)
        flat = self.origin.reshape(1, -1) + at * self.u.reshape(1, -1) + bt * self.v.reshape(1, -1)
        return flat.reshape(-1, *self.shape)

    def coordinates(self, x: torch.Tensor) -> tuple[float, float]:
        """Coordinates ``(a, b)`` of the orthogonal projection of ``x`` onto the plane."""
        d = (as_image(x) - self.origin).double().reshape(-1)
        return float(d @ self.u.double().reshape(-1)), float(d @ self.v.double().reshape(-1))

    def arrays(self) -> dict[str, np.ndarray]:
        """``origin``, ``u``, ``v`` as float32 numpy arrays (the NPZ contract)."""
        return {k: getattr(self, k).detach().cpu().numpy().astype(np.float32) for k in ("origin", "u", "v")}


def as_image(x: Any) -> torch.Tensor:
    """One image (C, H, W) as a float32 CPU tensor; accepts (1, C, H, W) and numpy arrays."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ShapeError(f"expected one image of shape (C, H, W), got shape {tuple(t.shape)}")
    if t.numel() < 2:
        raise ShapeError("an image needs at least two values to span a plane")
    return t.to("cpu", torch.float32).contiguous()


def plane_from_directions(x0: Any, d1: Any, d2: Any, *, kind: str = "custom", note: str = "",
                          marks: tuple[tuple[str, float, float], ...] = ()) -> Plane:
    """Orthonormalise two directions (Gram-Schmidt, in float64) into a :class:`Plane` through ``x0``.

    Raises:
        ConfigError: a direction is zero, or the two are parallel (the plane is degenerate).
    """
    origin = as_image(x0)
    a = torch.as_tensor(np.asarray(d1) if not isinstance(d1, torch.Tensor) else d1).detach()
    b = torch.as_tensor(np.asarray(d2) if not isinstance(d2, torch.Tensor) else d2).detach()
    if a.numel() != origin.numel() or b.numel() != origin.numel():
        raise ShapeError(f"plane directions must have the sample's {origin.numel()} values, "
                         f"got {a.numel()} and {b.numel()}")
    u, v = _gram_schmidt(a.reshape(-1).double().cpu(), b.reshape(-1).double().cpu())
    if u is None:
        raise ConfigError("degenerate plane: the first direction is zero; pick different points or a seed")
    if v is None:
        raise ConfigError("degenerate plane: the two directions are parallel; pick points that are "
                          "not on one line (or a random plane)")
    return Plane(origin, u.float().reshape(origin.shape), v.float().reshape(origin.shape),
                 kind=kind, note=note, marks=marks)


def _gram_schmidt(a: torch.Tensor, b: torch.Tensor,
                  tol: float = 1e-6) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Unit ``u`` along ``a`` and unit ``v`` along the part of ``b`` orthogonal to ``a`` (float64).

    ``None`` where a direction is zero or ``b`` is parallel to ``a`` (relative norm below ``tol``).
    """
    na = float(a.norm())
    if not math.isfinite(na) or na <= 1e-300:
        return None, None
    u = a / na
    nb = float(b.norm())
    if not math.isfinite(nb) or nb <= 1e-300:
        return u, None
    w = b - (b @ u) * u
    w = w - (w @ u) * u  # second pass: orthogonal to machine precision
    nw = float(w.norm())
    if nw <= tol * nb:
        return u, None
    return u, w / nw


def random_plane(x0: Any, seed: int = 0, *, generator: torch.Generator | None = None) -> Plane:
    """A random plane through ``x0`` (the paper's Fig. S1).

    Two Gaussian directions drawn from ``seed`` (or ``generator``), orthonormalised by Gram-Schmidt.
    The same seed gives the same plane for every sample of the same shape.
    """
    origin = as_image(x0)
    g = generator if generator is not None else torch.Generator().manual_seed(check_seed(seed))
    d = torch.randn(2, origin.numel(), generator=g, dtype=torch.float64)
    return plane_from_directions(origin, d[0], d[1], kind="random")


def adversarial_plane(x0: Any, y0: int, model_a: nn.Module, model_b: nn.Module | None = None, *,
                      seed: int = 0, device: str | torch.device | None = None) -> Plane:
    """A plane spanned by the FGSM directions of two models (the paper's Fig. S2).

    ``u`` is model_a's sign-gradient direction, ``v`` the part of model_b's orthogonal to it
    (Gram-Schmidt). Moving along ``+u`` increases model_a's loss. When the two directions are
    parallel (e.g. the same model twice), or model_b is None, the plane is completed with a random
    direction drawn from ``seed`` and :attr:`Plane.note` says so (a warning is also issued).

    Args:
        x0: the sample, (C, H, W) in [0, 1].
        y0: its true label.
        model_a, model_b: models that take [0, 1] images and return logits.
        seed: seed of the random completion, if one is needed.
        device: where to compute the gradients (default: model_a's device).

    Raises:
        ConfigError: neither model has a non-zero gradient at ``x0`` (no adversarial direction).
    """
    origin = as_image(x0)
    ga = fgsm_direction(model_a, origin, y0, device=device).double().reshape(-1)
    gb = (fgsm_direction(model_b, origin, y0, device=device).double().reshape(-1)
          if model_b is not None else None)
    notes: list[str] = []
    if not bool(ga.ne(0).any()):
        if gb is None or not bool(gb.ne(0).any()):
            raise ConfigError("no adversarial direction: the models' gradients are zero at this sample; "
                              "use a random plane")
        notes.append("model A has a zero gradient at this sample: u is model B's FGSM direction")
        ga, gb = gb, None
    u, v = _gram_schmidt(ga, gb) if gb is not None else (ga / ga.norm(), None)
    if gb is None and not notes:
        notes.append(f"one model given: v is a random direction (seed {seed})")
    elif v is None:
        if gb is not None and bool(gb.ne(0).any()):
            notes.append(f"the two FGSM directions are parallel: v is a random direction (seed {seed})")
        else:
            notes.append(f"model B has a zero gradient at this sample: v is a random direction (seed {seed})")
    if v is None:
        assert u is not None
        g = torch.Generator().manual_seed(check_seed(seed))
        for _ in range(8):
            _, v = _gram_schmidt(u, torch.randn(u.numel(), generator=g, dtype=torch.float64))
            if v is not None:
                break
        if v is None:
            raise ConfigError("degenerate plane: cannot complete the adversarial direction")
        if notes and not notes[-1].startswith("one model"):
            warnings.warn(notes[-1], stacklevel=2)
    assert u is not None
    return Plane(origin, u.float().reshape(origin.shape), v.float().reshape(origin.shape),
                 kind="adversarial", note="; ".join(notes))


def sample_plane(x0: Any, x1: Any, x2: Any) -> Plane:
    """The plane through three images (as dbViz does): origin ``x0``, ``u`` towards ``x1``.

    ``v`` is the part of ``x2 - x0`` orthogonal to ``u``, so ``x1`` lies on the positive ``u`` axis
    and ``x2`` in the upper half plane; their coordinates are stored in :attr:`Plane.marks`.

    Raises:
        ConfigError: the three images are on one line (e.g. two of them are equal).
        ShapeError: the images have different shapes.
    """
    a0, a1, a2 = as_image(x0), as_image(x1), as_image(x2)
    if a0.shape != a1.shape or a0.shape != a2.shape:
        raise ShapeError(f"the three samples must have one shape, got {tuple(a0.shape)}, "
                         f"{tuple(a1.shape)}, {tuple(a2.shape)}")
    d1, d2 = (a1 - a0).double(), (a2 - a0).double()
    if float(d1.norm()) == 0.0 or float(d2.norm()) == 0.0:
        raise ConfigError("degenerate plane: two of the three samples are identical; "
                          "pick three different ones")
    plane = plane_from_directions(a0, d1, d2, kind="samples")
    (a1u, a1v), (a2u, a2v) = plane.coordinates(a1), plane.coordinates(a2)
    marks = (("x1", a1u, a1v), ("x2", a2u, a2v))
    return Plane(plane.origin, plane.u, plane.v, kind="samples", marks=marks)
