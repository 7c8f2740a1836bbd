"""The in-plane distance from the origin to the nearest point of another class (the circle).

Rays are walked outwards from the origin, the first class change on each ray is bracketed and
refined by multi-section bisection to a relative precision (0.5% by default), the best direction is
refined in angle, and a dense ring just inside the result is checked to be of the origin's class.
This is the radius of the black circle in the paper's Fig. 1/S1/S2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import nn

from ..events import Stopped
from .evaluate import MIN_RESOLUTION, PlaneEvaluator, check_grid, check_model_input
from .plane import Plane

__all__ = ["Circle", "boundary_distance", "boundary_search", "radius_label"]


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


@dataclass(frozen=True)
class Circle:
    """The nearest in-plane point of another class, as found by :func:`boundary_search`.

    Attributes:
        distance: in-plane distance from the origin (inf when none was found).
        angle: its direction in radians from the ``u`` axis (nan when none was found).
        searched: every direction was walked up to this radius without meeting another class (a
            lower bound of the distance when it is inf: the search ended at ``max_factor * extent``
            or at its evaluation budget).
        evaluations: model evaluations the search spent.
    """

    distance: float
    angle: float
    searched: float
    evaluations: int


def radius_label(distance: float, searched: float, spec: str = ".3g") -> str | None:
    """A circle's radius as text: ``"2.49"``, ``"> 5.86"`` when no boundary was met up to the radius
    searched (the search's budget or limit ended it), None when nothing was searched."""
    if math.isfinite(distance):
        return format(distance, spec)
    return f"> {format(searched, spec)}" if searched > 0 else None


Progress = Callable[[float], Any]


def _sweep(ev: PlaneEvaluator, y0: int, theta: np.ndarray, r_start: float, r_end: float,
           h: float, grow_from: float = math.inf, first_chunk: int = 1, limit: int | None = None,
           growth: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Walk outwards on all rays at once (radii from :func:`_shell_radii`) and stop at the first
    shell batch where some ray leaves class ``y0``; return those rays' brackets (lo, hi) and the
    radius up to which every ray stayed in ``y0``.
    Batches hold ``first_chunk`` shells, then twice as many each time (little overshoot when the
    crossing is near, few forward passes when it is far). With ``limit``, at most that many
    evaluations: stop (no bracket) when the next shell would not fit."""
    empty = np.empty(0)
    if r_end <= r_start or theta.size == 0:
        return empty, empty, empty, max(r_start, r_end)
    radii = _shell_radii(r_start, r_end, h, grow_from, growth)
    max_chunk = max(1, ev.batch_size // theta.size)
    cos, sin = np.cos(theta), np.sin(theta)
    k0, chunk, spent = 0, max(1, min(first_chunk, max_chunk)), 0
    reached = r_start
    while k0 < radii.size:
        if limit is not None:  # never past the limit: only the shells that fit in what is left
            room = (limit - spent) // theta.size
            if room < 1:
                return empty, empty, empty, reached
            chunk = min(chunk, room)
        rr = radii[k0:k0 + chunk]
        lab = ev(np.outer(rr, cos).ravel(), np.outer(rr, sin).ravel())[0].reshape(rr.size, theta.size)
        spent += lab.size
        out = lab != y0
        hit = out.any(axis=0)
        if hit.any():
            first = out.argmax(axis=0)[hit]
            hi = rr[first]
            prev = radii[k0 - 1] if k0 > 0 else r_start
            lo = np.where(first > 0, rr[np.maximum(first - 1, 0)], prev)
            return theta[hit], lo.astype(float), hi.astype(float), float(lo.min())
        reached = float(rr[-1])
        k0 += rr.size
        chunk = min(2 * chunk, max_chunk)
    return empty, empty, empty, reached


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


def _map_brackets(ev: PlaneEvaluator, y0: int, labels: np.ndarray, coords: np.ndarray,
                  most: int = 64) -> tuple[float, np.ndarray, np.ndarray, float]:
    """What a computed map of this model tells the search: a radius ``r0`` inside the origin's
    class (two pixels short of the nearest pixel of another class, at most the window's inscribed
    disc), and the directions and radii of the nearest other-class pixels, checked by evaluating
    them (a refined map fills blocks by interpolation). Returns (r0, angles, radii, r_hit) with
    r_hit the radius of the nearest other-class pixel (inf if none)."""
    pixel = float(coords[1] - coords[0])
    bb, aa = np.meshgrid(coords, coords, indexing="ij")
    rr = np.hypot(aa, bb)
    other = labels != y0
    if not other.any():
        return float(coords[-1]), np.empty(0), np.empty(0), math.inf
    r_hit = float(rr[other].min())
    near = np.nonzero((other & (rr <= r_hit + 1.5 * pixel)).ravel())[0]
    near = near[np.argsort(rr.ravel()[near], kind="stable")[:most]]
    theta, radius = np.arctan2(bb.ravel()[near], aa.ravel()[near]), rr.ravel()[near]
    really = _ray_labels(ev, theta, radius) != y0
    return min(max(0.0, r_hit - 2 * pixel), float(coords[-1])), theta[really], radius[really], r_hit


def boundary_search(ev: PlaneEvaluator, y0: int, extent: float, *, n_directions: int = 180,
                    n_shells: int = 64, max_factor: float = 4.0, rel_tol: float = 0.005,
                    start_radius: float = 0.0, labels: np.ndarray | None = None,
                    coords: np.ndarray | None = None, budget: int | None = None,
                    progress: Progress | None = None) -> Circle:
    """Nearest in-plane point of another class than ``y0`` (the label at the origin).

    1. Brackets. With a computed map of this model (``labels`` on the grid ``coords``) the disc
       the map shows to be of class ``y0`` is not walked again: when the map has a pixel of
       another class inside its inscribed disc, the nearest such pixels (checked) bracket the
       crossing directly. Otherwise ``n_directions`` rays are walked outwards in shells of width
       ``max_factor*extent/n_shells`` (a pixel with a map) from ``start_radius`` or the map's
       disc up to ``max_factor*extent``; beyond the window (``r > extent``) a quarter of the rays
       (at least 45) in shells of width ``max(that, r/10)``, stopping after ``budget``
       evaluations. The first shell where some ray changes class brackets the crossing.
    2. Bisection (8-fold multi-section per forward pass, :func:`_narrow`) on the bracketing rays
       to ``rel_tol`` relative precision (the midpoint is returned, so the error is at most
       rel_tol/2 on that ray).
    3. Angular refinement: rays between the best one and its neighbours, twice.
    4. Check: a dense ring just inside the radius found must be all class ``y0`` (3 points per
       ray, or with a map one per half pixel of arc); a point of another class there (a thin
       protrusion between rays) is searched and bisected in turn.

    Args:
        progress: called with the fraction done; returning ``False`` stops the search
            (:class:`~jacreg.events.Stopped` is raised).

    Returns:
        A :class:`Circle`.
    """
    start_count = ev.count

    def tick(fraction: float) -> None:
        if progress is not None and progress(fraction) is False:
            raise Stopped

    one_pass = 1 << 30  # first_chunk of a sweep done in one forward pass
    rmax = max_factor * extent
    h = rmax / n_shells
    theta = 2 * np.pi * np.arange(n_directions) / n_directions
    empty = np.empty(0)
    th, lo, hi = empty, empty, empty
    with_map = labels is not None and coords is not None and coords.size > 1
    if with_map:
        assert labels is not None and coords is not None
        h = min(h, float(coords[1] - coords[0]))
        r0, th_map, hi_map, r_hit = _map_brackets(ev, y0, labels, coords)
        if th_map.size:
            th, lo, hi = th_map, np.full(th_map.size, r0), hi_map
        r_end = min(rmax, float(hi.min()) if hi.size else rmax)
        covered = r_hit <= extent and th.size > 0  # the map saw every direction up to the crossing
    else:
        r0, r_end, covered = float(np.clip(start_radius, 0.0, rmax)), rmax, False
    searched = r0
    tick(0.1)
    if not covered:
        # inside the window: every ray; beyond it, fewer rays and growing shells, within the budget
        th1, lo1, hi1, reached = _sweep(ev, y0, theta, r0, min(r_end, extent), h)
        if th1.size == 0 and r_end > extent:
            far = theta[:: max(1, n_directions // max(45, n_directions // 4))]
            limit = None if budget is None else max(0, budget - (ev.count - start_count))
            th1, lo1, hi1, reached = _sweep(ev, y0, far, max(r0, reached), r_end, h, grow_from=extent,
                                            limit=limit)
        searched = max(searched, reached)
        th, lo, hi = np.concatenate([th, th1]), np.concatenate([lo, lo1]), np.concatenate([hi, hi1])
        if not with_map and r0 > 0 and th1.size:
            # A map said the disc of radius r0 is class y0; check the bracketing rays from 0.
            th0, lo0, hi0, _ = _sweep(ev, y0, th1, 0.0, float(hi1.min()), max(h, float(hi1.min()) / 16),
                                      first_chunk=one_pass)
            th, lo, hi = np.concatenate([th, th0]), np.concatenate([lo, lo0]), np.concatenate([hi, hi0])
    if th.size == 0:
        return Circle(math.inf, math.nan, searched, ev.count - start_count)
    tick(0.5)
    d, t_best, hi_best = _narrow(ev, y0, th, lo, hi, rel_tol)
    tick(0.7)
    dth = 2 * np.pi / n_directions
    for _ in range(2):
        cand = t_best + dth * np.array([-3, -2, -1, 1, 2, 3]) / 4
        r_lo = r0 if r0 < hi_best else 0.0
        th2, lo2, hi2, _ = _sweep(ev, y0, cand, r_lo, hi_best, max(h / 4, (hi_best - r_lo) / 32),
                                  first_chunk=one_pass)
        if th2.size:
            d2, t2, h2 = _narrow(ev, y0, th2, lo2, hi2, rel_tol)
            if d2 < d:
                d, t_best, hi_best = d2, t2, h2
        dth /= 4
    tick(0.85)
    n_ring = 3 * n_directions
    if with_map:
        assert coords is not None
        pixel = float(coords[1] - coords[0])
        n_ring = int(np.clip(math.ceil(4 * np.pi * d / pixel), 64, n_ring))
    for _ in range(4):
        r_in = d * (1 - rel_tol)
        ring = 2 * np.pi * (np.arange(n_ring) + 0.5) / n_ring
        bad = ring[_ray_labels(ev, ring, np.full(n_ring, r_in)) != y0]
        if bad.size == 0:
            break
        th3, lo3, hi3, _ = _sweep(ev, y0, bad[:64], 0.0, r_in, max(h / 4, r_in / 32), first_chunk=one_pass)
        if th3.size == 0:
            break
        d3, t3, h3 = _narrow(ev, y0, th3, lo3, hi3, rel_tol)
        if d3 < d:
            d, t_best, hi_best = d3, t3, h3
        else:
            break
    tick(1.0)
    return Circle(d, float(t_best % (2 * np.pi)), d, ev.count - start_count)


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
    circle = boundary_search(ev, y0, float(extent), n_directions=n_directions, rel_tol=rel_tol,
                             max_factor=max_factor)
    return (circle.distance, circle.angle) if return_angle else circle.distance
