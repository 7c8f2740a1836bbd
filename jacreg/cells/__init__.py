"""Decision cells: planes through a sample, cross sections, distances to the boundary, cell metrics.

The paper's decision-cell pictures (Hoffman, Roberts & Yaida 2019, Fig. 1, S1 and S2) for any
model: a 2-D plane through a test sample ``x0`` spanned by two orthonormal directions ``u`` and
``v`` (:mod:`~jacreg.cells.plane`); the class each model predicts at every point
``x0 + a*u + b*v`` of a square grid and the top softmax there (:mod:`~jacreg.cells.section`,
adaptively refined by :mod:`~jacreg.cells.grid`); the in-plane distance from ``x0`` to the nearest
point of another class, the radius of the black circle (:mod:`~jacreg.cells.boundary`); and the
area and fragmentation of the cells over many samples (:mod:`~jacreg.cells.statistics`); a cheap
first picture for slow models (:mod:`~jacreg.cells.preview`); the same
radius predicted by linearising the logits (:mod:`~jacreg.cells.linear`) and compared with the
measured one over many samples (:mod:`~jacreg.cells.theory`); and the film of a cell through
training, a cross section per epoch snapshot (:mod:`~jacreg.cells.film`).

Coordinates ``a``, ``b`` are in input-space L2 units of [0, 1] pixels. Every function evaluates
models in eval mode and never changes the model it is given.
"""

from __future__ import annotations

from ..adversarial import fgsm_direction
from ..robustness.minimal import minimal_adversarial_distance
from .boundary import Circle, boundary_distance, radius_label
from .evaluate import MAX_EXTENT, MAX_RESOLUTION, MIN_RESOLUTION, check_grid, predict
from .film import Film, Reel, film, snapshot_runs
from .grid import default_coarse_step
from .linear import LinearPrediction, in_plane_jacobian, predicted_distance
from .metrics import cell_metrics
from .plane import Plane, adversarial_plane, plane_from_directions, random_plane, sample_plane
from .preview import (
    PREVIEW_AFTER_SECONDS,
    map_seconds,
    preview_after,
    preview_resolution,
    preview_section,
    seconds_per_point,
)
from .section import CrossSection, cross_section
from .statistics import PlaneKind, cell_statistics
from .theory import RadiusTheory, radius_theory

__all__ = [
    "MAX_EXTENT",
    "MAX_RESOLUTION",
    "MIN_RESOLUTION",
    "PREVIEW_AFTER_SECONDS",
    "CrossSection",
    "Film",
    "LinearPrediction",
    "Plane",
    "PlaneKind",
    "RadiusTheory",
    "Reel",
    "adversarial_plane",
    "Circle",
    "boundary_distance",
    "cell_metrics",
    "cell_statistics",
    "check_grid",
    "cross_section",
    "default_coarse_step",
    "fgsm_direction",
    "film",
    "in_plane_jacobian",
    "map_seconds",
    "minimal_adversarial_distance",
    "plane_from_directions",
    "predict",
    "predicted_distance",
    "radius_label",
    "preview_after",
    "preview_resolution",
    "preview_section",
    "radius_theory",
    "random_plane",
    "sample_plane",
    "seconds_per_point",
    "snapshot_runs",
]
