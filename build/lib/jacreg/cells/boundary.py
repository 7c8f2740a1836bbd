"""The in-plane distance from the origin to the nearest point of another class (the circle).

Rays are walked outwards from the origin, the first class change on each ray is bracketed and
refined by multi-section bisection to a relative precision (0.5% by default), the best direction is
refined in angle, and a dense ring just inside the result is checked to be of the origin's class.
This is the radius of the black circle in the paper's Fig. 1/S1/S2.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np
import torch
from torch import nn

from .evaluate import MIN_RESOLUTION, PlaneEvaluator, check_grid, check_model_input
from .plane import Plane

__all__ = ["boundary_distance", "boundary_search"]


def _ray_labels(ev: PlaneEvaluator, theta: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return ev(radius * np.cos(theta), radius * np.sin(theta))[0]


def _shell_radii(r_start: float, r_end: float, h: float, grow_from: float = math.inf,
                 growth: float = 0.1) -> np.ndarray:
    """Radii r_start+h, r_start+2h, ... up to r_end (included); beyond ``grow_from`` the step is
    ``max(h, growth * r)`` (outside the figure's window the walk needs no pixel-fine steps)."""
    out: list[float] = []
    r = r_start
    while r < r_end - 1e-12 * max(1.0, r_end):
        r = min(r_end, r + (max(h, growth * r) if r >= grow_from else h))
        out.append(r)
    return np.asarray(out, dtype=float)


def _sweep(ev: PlaneEvaluator, y0: int, theta: np.ndarray, r_start: float, r_end: float,
           h: float, grow_from: float = math.inf,
           first_chunk: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk outwards on all rays at once (radii from :func:`_shell_radii`) and stop at the first
    shell batch where some ray leaves class ``y0``; return those rays' brackets (lo, hi).
    Batches hold ``first_chunk`` shells, then twice as many each time (little overshoot when the
    crossing is near, few forward passes when it is far)."""
    empty = np.empty(0)
    if r_end <= r_start or theta.size == 0:
        return empty, empty, empty
    radii = _shell_radii(r_start, r_end, h, grow_from)
    max_chunk = max(1, ev.batch_size // theta.size)
    cos, sin = np.cos(theta), np.sin(theta)
    k0, chunk = 0, max(1, min(first_chunk, max_chunk))
    while k0 < radii.size:
        rr = radii[k0:k0 + chunk]
        lab = ev(np.outer(rr, cos).ravel(), np.outer(rr, sin).ravel())[0].reshape(rr.size, theta.size)
        out = lab != y0
        hit = out.any(axis=0)
        if hit.any():
            first = out.argmax(axis=0)[hit]
            hi = rr[first]
            prev = radii[k0 - 1] if k0 > 0 else r_start
            lo = np.where(first > 0, rr[np.maximum(first - 1, 0)], prev)
            return theta[hit], lo.astype(float), hi.astype(float)
        k0 += rr.size
        chunk = min(2 * chunk, max_chunk)
    return empty, empty, empty


def _narrow(ev: PlaneEvaluator, y0: int, theta: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            rel_tol: float, sections: int = 8) -> tuple[float, float, float]:
    """Shrink brackets (label y0 at lo, another label at hi) until (hi-lo) <= rel_tol*hi.

    Multi-section: each pass evaluates ``sections`` evenly spaced points inside every bracket at
    once and keeps the interval before the first point of another class, so the bracket shrinks
    ``sections+1``-fold per forward pass (bisection with more points per pass: fewer passes) and
    tracks the first crossing on the ray. Rays whose bracket starts beyond the best one's end are
    dropped. Returns (midpoint, angle, hi) of the nearest crossing: the midpoint is within
    rel_tol/2 of the crossing on that ray.
    """
    theta, lo, hi = theta.copy(), lo.copy(), hi.copy()
    frac = np.arange(1, sections + 1) / (sections + 1)
    while True:
        keep = lo < hi.min()
        keep[np.argmin(hi)] = True
        theta, lo, hi = theta[keep], lo[keep], hi[keep]
        todo = np.nonzero((hi - lo) > rel_tol * hi)[0]
        if todo.size == 0:
            break
        pts = lo[todo, None] + (hi[todo] - lo[todo])[:, None] * frac[None, :]      # (T, S)
        out = (_ray_labels(ev, np.repeat(theta[todo], sections), pts.ravel()) != y0).reshape(pts.shape)
        first = np.where(out.any(axis=1), out.argmax(axis=1), sections)            # S: none inside
        new_hi = np.where(first < sections, pts[np.arange(todo.size), np.minimum(first, sections - 1)],
                          hi[todo])
        new_lo = np.where(first > 0, pts[np.arange(todo.size), np.maximum(first - 1, 0)], lo[todo])
        lo[todo], hi[todo] = new_lo, new_hi
    k = int(np.argmin(0.5 * (lo + hi)))
    return float(0.5 * (lo[k] + hi[k])), float(theta[k]), float(hi[k])


def boundary_search(ev: PlaneEvaluator, y0: int, extent: float, *, n_directions: int = 180,
                     n_shells: int = 64, max_factor: float = 4.0, rel_tol: float = 0.005,
                     start_radius: float = 0.0) -> tuple[float, float]:
    """Nearest in-plane point of another class than ``y0`` (the label at the origin).

    1. ``n_directions`` rays, walked outwards in shells of width ``max_factor*extent/n_shells``
       (beyond the window, ``r > extent``, of width ``max(that, r/10)``) from ``start_radius`` (0,
       or a radius a computed map shows to be inside the cell) up to ``max_factor*extent``; the
       first shell where some ray changes class brackets the crossing.
    2. Bisection (8-fold multi-section per forward pass, :func:`_narrow`) on the bracketing rays
       to ``rel_tol`` relative precision (the midpoint is returned, so the error is at most
       rel_tol/2 on that ray).
    3. Angular refinement: rays between the best one and its neighbours, twice.
    4. Check: a dense ring just inside the radius found must be all class ``y0``; a point of
       another class there (a thin protrusion between rays) is searched and bisected in turn.

    Returns:
        (distance, angle) with angle in radians from the ``u`` axis; (inf, nan) when no other class
        is met up to ``max_factor*extent``.
    """
    one_pass = 1 << 30  # first_chunk of a sweep done in one forward pass
    rmax = max_factor * extent
    h = rmax / n_shells
    theta = 2 * np.pi * np.arange(n_directions) / n_directions
    r0 = float(np.clip(start_radius, 0.0, rmax))
    th, lo, hi = _sweep(ev, y0, theta, r0, rmax, h, grow_from=extent)
    if th.size == 0:
        return math.inf, math.nan
    if r0 > 0:
        # The map said the disc of radius r0 is class y0; check the rays of the bracket from 0.
        th0, lo0, hi0 = _sweep(ev, y0, th, 0.0, float(hi.min()), max(h, float(hi.min()) / 16),
                               first_chunk=one_pass)
        if th0.size:
            th, lo, hi = np.concatenate([th, th0]), np.concatenate([lo, lo0]), np.concatenate([hi, hi0])
    d, t_best, hi_best = _narrow(ev, y0, th, lo, hi, rel_tol)
    dth = 2 * np.pi / n_directions
    for _ in range(2):
        cand = t_best + dth * np.array([-3, -2, -1, 1, 2, 3]) / 4
        th2, lo2, hi2 = _sweep(ev, y0, cand, 0.0, hi_best, max(h / 4, hi_best / 32), first_chunk=one_pass)
        if th2.size:
            d2, t2, h2 = _narrow(ev, y0, th2, lo2, hi2, rel_tol)
            if d2 < d:
                d, t_best, hi_best = d2, t2, h2
        dth /= 4
    n_ring = 3 * n_directions
    for _ in range(4):
        r_in = d * (1 - rel_tol)
        ring = 2 * np.pi * (np.arange(n_ring) + 0.5) / n_ring
        bad = ring[_ray_labels(ev, ring, np.full(n_ring, r_in)) != y0]
        if bad.size == 0:
            break
        th3, lo3, hi3 = _sweep(ev, y0, bad[:64], 0.0, r_in, max(h / 4, r_in / 32), first_chunk=one_pass)
        if th3.size == 0:
            break
        d3, t3, h3 = _narrow(ev, y0, th3, lo3, hi3, rel_tol)
        if d3 < d:
            d, t_best, hi_best = d3, t3, h3
        else:
            break
    return d, float(t_best % (2 * np.pi))


@overload
def boundary_distance(model: nn.Module, plane: Plane, extent: float, *,
                      device: str | torch.device | None = ..., batch_size: int | None = ...,
                      n_directions: int = ..., rel_tol: float = ..., max_factor: float = ...,
                      return_angle: Literal[False] = ...) -> float: ...
@overload
def boundary_distance(model: nn.Module, plane: Plane, extent: float, *,
                      device: str | torch.device | None = ..., batch_size: int | None = ...,
                      n_directions: int = ..., rel_tol: float = ..., max_factor: float = ...,
                      return_angle: Literal[True]) -> tuple[float, float]: ...
def boundary_distance(model: nn.Module, plane: Plane, extent: float, *,
                      device: str | torch.device | None = None, batch_size: int | None = None,
                      n_directions: int = 180, rel_tol: float = 0.005, max_factor: float = 4.0,
                      return_angle: bool = False) -> float | tuple[float, float]:
    """In-plane distance from the plane's origin to the nearest point of another class.

    "Another class" means another label than the model predicts at the origin. The search is not
    limited to a grid: ``n_directions`` rays are walked outwards up to ``max_factor * extent``,
    the first class change on each ray is bracketed and refined by bisection (several points per
    pass) to ``rel_tol`` relative precision (0.5% by default), the best direction is refined in
    angle, and a dense ring just inside the result is checked to be of the origin's class. This is
    the radius of the black circle in the paper's Fig. 1/S1/S2.

    Args:
        model: takes [0, 1] images (not clipped here), returns logits.
        plane: the plane (coordinates in input-space L2 units).
        extent: the figure's half width; the search goes up to ``max_factor * extent``.
        return_angle: also return the direction of the nearest point (radians from ``u``).

    Returns:
        The distance (``math.inf`` when no other class is found up to ``max_factor * extent``),
        or ``(distance, angle)`` with ``return_angle``.
    """
    check_grid(extent, MIN_RESOLUTION)
    ev = PlaneEvaluator(model, plane, device, batch_size)
    y0, _ = check_model_input(model, ev, 0)
    d, angle = boundary_search(ev, y0, float(extent), n_directions=n_directions, rel_tol=rel_tol,
                                max_factor=max_factor)
    return (d, angle) if return_angle else d
