"""Cross sections: class and top-softmax maps of several models on one plane, with their circles.

Typical use::

    from jacreg.cells import random_plane, cross_section
    plane = random_plane(x0, seed=0)
    cs = cross_section([plain, jr], plane, extent=1.0, resolution=201)
    cs.labels[m, i, j]   # class at x0 + cs.coords[j] * u + cs.coords[i] * v (rows = v, cols = u)
    cs.boundary_distance[m], cs.predicted_distance[m]   # the circle measured, and as J predicts it

Points outside the [0, 1] box are evaluated as they are (no clipping): a cross section shows the
model as a function on the whole plane, and clipping would fold the plane onto the faces of the box
and distort distances.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..events import EventFn, Stopped
from ..fileio import atomic_write_bytes
from .boundary import boundary_search
from .evaluate import PlaneEvaluator, check_grid, check_model_input
from .grid import full_map, refined_map
from .linear import in_plane_jacobian, linear_prediction
from .metrics import cell_mask, cell_metrics
from .plane import Plane

__all__ = ["CrossSection", "cross_section"]


@dataclass(eq=False)
class CrossSection:
    """Labels and confidences of M models on one R x R grid of a plane.

    Attributes:
        plane: the plane.
        extent: half width of the square, in input-space L2 units.
        coords: (R,) grid coordinates, ``linspace(-extent, extent, R)``, along both u and v.
        labels: (M, R, R) int64; ``labels[m, i, j]`` is model m's class at
            ``origin + coords[j] * u + coords[i] * v`` (rows = v, columns = u).
        confidence: (M, R, R) float32 top softmax probability (interpolated where not evaluated).
        boundary_distance: (M,) in-plane distance from the origin to the nearest point of another
            class (to 0.5% relative precision, searched up to 4 * extent within the circle's
            evaluation budget, inf if none).
        boundary_angle: (M,) direction of that nearest point, radians from the u axis (nan if none).
        origin_label: (M,) class each model predicts at the origin.
        origin_confidence: (M,) top softmax there.
        evaluations: (M,) model evaluations spent on the map (R*R for a full grid).
        seconds: wall time of the whole computation.
        refined: whether the map was boundary-refined.
        num_classes: number of logits of the models (the largest, if they differ).
        predicted_distance: (M,) the same distance predicted by linearising the logits at the
            origin (:func:`~jacreg.cells.linear.predicted_distance`: min over classes k of
            (z_y - z_k) / ||in-plane gradient of z_y - z_k||; exact for an affine model; nan where
            not computed).
        boundary_searched: (M,) radius up to which the boundary search checked every direction
            (a lower bound of the distance where it is inf).
        boundary_evaluations: (M,) model evaluations the boundary search spent.
    """

    plane: Plane
    extent: float
    coords: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    boundary_distance: np.ndarray
    boundary_angle: np.ndarray
    origin_label: np.ndarray
    origin_confidence: np.ndarray
    evaluations: np.ndarray
    seconds: float = 0.0
    refined: bool = True
    num_classes: int = 10
    predicted_distance: np.ndarray = field(default_factory=lambda: np.empty(0))
    boundary_searched: np.ndarray = field(default_factory=lambda: np.empty(0))
    boundary_evaluations: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        m = self.labels.shape[0]
        if self.predicted_distance.size == 0:
            self.predicted_distance = np.full(m, math.nan)
        if self.boundary_searched.size == 0:
            finite = np.isfinite(self.boundary_distance)
            self.boundary_searched = np.where(finite, self.boundary_distance, 0.0)
        if self.boundary_evaluations.size == 0:
            self.boundary_evaluations = np.zeros(m, dtype=np.int64)

    @property
    def resolution(self) -> int:
        return int(self.coords.size)

    @property
    def center_index(self) -> tuple[int, int]:
        """Grid index (row, column) nearest to the origin."""
        c = int(np.argmin(np.abs(self.coords)))
        return c, c

    def cell_mask(self, m: int) -> np.ndarray:
        """(R, R) bool: the connected region of the origin's class that contains the origin."""
        return cell_mask(self.labels[m], self.center_index)

    def metrics(self, m: int) -> dict[str, float]:
        """:func:`cell_metrics` of model m's map plus its boundary distance, measured (``radius``) and
        predicted by the linearised logits (``predicted_radius``)."""
        out = cell_metrics(self.labels[m], self.center_index)
        out["radius"] = float(self.boundary_distance[m])
        out["predicted_radius"] = float(self.predicted_distance[m])
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The NPZ contract: origin, u, v, coords, labels, confidence, boundary_distance."""
        out = self.plane.arrays()
        out.update(coords=self.coords.astype(np.float64), labels=self.labels.astype(np.int64),
                   confidence=self.confidence.astype(np.float32),
                   boundary_distance=self.boundary_distance.astype(np.float64))
        return out

    def npz_bytes(self) -> bytes:
        """:meth:`arrays` plus boundary_angle, predicted_distance, origin_label and extent, as a
        compressed NPZ file."""
        arrays: dict[str, Any] = dict(self.arrays())
        arrays.update(boundary_angle=self.boundary_angle.astype(np.float64),
                      predicted_distance=self.predicted_distance.astype(np.float64),
                      origin_label=self.origin_label.astype(np.int64),
                      extent=np.float64(self.extent))
        buf = io.BytesIO()
        np.savez_compressed(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`npz_bytes` to ``path`` atomically."""
        atomic_write_bytes(path, self.npz_bytes())


def cross_section(models: nn.Module | Sequence[nn.Module], plane: Plane, extent: float = 1.0,
                  resolution: int = 201, *, device: str | torch.device | None = None,
                  batch_size: int | None = None, refine: bool = True, coarse_step: int | None = None,
                  boundary: bool = True, n_directions: int = 180, predict: bool = True,
                  circle_budget: float | None = 1.0, on_event: EventFn | None = None) -> CrossSection:
    """Class and top-softmax maps of one or more models on a square grid of a plane.

    The grid is ``coords = linspace(-extent, extent, resolution)`` along ``u`` (columns) and ``v``
    (rows). Points outside [0, 1] are evaluated as they are (no clipping). With ``refine=True``
    (the default) only a coarse grid and the blocks whose corners disagree are evaluated,
    recursively (see ``refined_map``); labels agree with a full evaluation on all but a few
    pixels (thin slivers smaller than the coarse spacing can be missed) at a small fraction of the
    cost. The top softmax is bilinearly interpolated inside blocks of one class.

    Args:
        models: one model or a sequence; each takes [0, 1] images of the plane's shape.
        plane: from :func:`random_plane`, :func:`adversarial_plane` or :func:`sample_plane`.
        extent: half width of the square in input-space L2 units (> 0).
        resolution: points per side, 11..1001.
        device: where to evaluate (default: each model's own device).
        batch_size: points per forward pass (default: sized from the device's memory).
        refine: boundary refinement (False: evaluate every point).
        coarse_step: spacing of the coarse grid in pixels (default: :func:`default_coarse_step`).
        boundary: also compute :func:`boundary_distance` (else inf, nan).
        n_directions: rays of the boundary search.
        circle_budget: the boundary search beyond what the map shows may spend at most this many
            times the map's evaluations (None: no limit); when it runs out before a boundary, the
            distance is inf and ``boundary_searched`` says how far every direction was checked.
        predict: also compute ``predicted_distance`` (the linearised radius; a few forward and
            backward passes per model), else nan.
        on_event: progress callback, called with
            ``{"event": "progress", "stage": "map"|"boundary", "model": m, "models": M, "fraction": f}``;
            returning ``False`` stops the computation (:class:`~jacreg.events.Stopped` is raised).

    Raises:
        ConfigError: extent/resolution out of range, or no model.
        ShapeError: a model cannot take the plane's inputs, or returns no (batch, classes) logits.
    """
    check_grid(extent, resolution)
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    if not model_list:
        raise ConfigError("give at least one model")
    t0 = time.perf_counter()
    extent, resolution = float(extent), int(resolution)
    coords = np.linspace(-extent, extent, resolution)
    nm = len(model_list)
    evs = [PlaneEvaluator(m, plane, device, batch_size) for m in model_list]
    origin = [check_model_input(m, ev, k) for k, (m, ev) in enumerate(zip(model_list, evs, strict=True))]
    labels = np.empty((nm, resolution, resolution), dtype=np.int64)
    conf = np.empty((nm, resolution, resolution), dtype=np.float32)
    dist = np.full(nm, math.inf)
    angle = np.full(nm, math.nan)
    evals = np.zeros(nm, dtype=np.int64)
    predicted = np.full(nm, math.nan)
    searched = np.zeros(nm)
    circle_evals = np.zeros(nm, dtype=np.int64)

    def emit(stage: str, m: int, fraction: float) -> Any:
        if on_event is not None and on_event({"event": "progress", "stage": stage, "model": m, "models": nm,
                                              "fraction": float(fraction)}) is False:
            raise Stopped
        return None

    for m, ev in enumerate(evs):
        emit("map", m, 0.0)
        start = ev.count

        def prog(f: float, m: int = m) -> None:
            emit("map", m, f)

        if refine:
            labels[m], conf[m] = refined_map(ev, coords, coarse_step, prog)
        else:
            labels[m], conf[m] = full_map(ev, coords, prog)
        evals[m] = ev.count - start
        if boundary:
            emit("boundary", m, 0.0)

            def circle_progress(f: float, m: int = m) -> Any:
                return emit("boundary", m, f)

            circle = boundary_search(ev, origin[m][0], extent, n_directions=n_directions, labels=labels[m],
                                     coords=coords, progress=circle_progress,
                                     budget=None if circle_budget is None else int(circle_budget * evals[m]))
            dist[m], angle[m], searched[m], circle_evals[m] = (circle.distance, circle.angle, circle.searched,
                                                                circle.evaluations)
        if predict:
            predicted[m] = linear_prediction(*in_plane_jacobian(ev.model, plane, device=ev.device)).distance
    return CrossSection(plane=plane, extent=extent, coords=coords, labels=labels, confidence=conf,
                        boundary_distance=dist, boundary_angle=angle,
                        origin_label=np.array([o[0] for o in origin], dtype=np.int64),
                        origin_confidence=np.array([o[1] for o in origin], dtype=np.float32),
                        evaluations=evals, seconds=time.perf_counter() - t0, refined=refine,
                        num_classes=max(ev.num_classes for ev in evs), predicted_distance=predicted,
                        boundary_searched=searched, boundary_evaluations=circle_evals)
