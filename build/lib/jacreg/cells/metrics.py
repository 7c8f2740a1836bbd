"""Area and fragmentation of a label map: the sample's cell and the number of single-class regions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import ShapeError

__all__ = ["cell_mask", "cell_metrics"]


def cell_mask(labels: np.ndarray, center: tuple[int, int]) -> np.ndarray:
    """(R, R) bool: the 4-connected region of ``labels[center]``'s class that contains ``center``."""
    comp, _ = ndimage.label(labels == labels[center])
    return comp == comp[center]


def cell_metrics(labels: np.ndarray, center: tuple[int, int] | None = None) -> dict[str, float]:
    """Area and fragmentation of one (R, R) label map.

    Returns:
        ``area_fraction``: fraction of the map covered by the sample's cell (the 4-connected region
        of its class that contains ``center``, default the middle pixel); ``regions``: number of
        4-connected single-class regions in the map (1 = the whole window is one cell; many =
        fragmented); ``classes``: number of classes present.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ShapeError(f"expected a 2-D label map, got shape {labels.shape}")
    if center is None:
        center = (labels.shape[0] // 2, labels.shape[1] // 2)
    regions = 0
    present = np.unique(labels)
    for k in present:
        regions += int(ndimage.label(labels == k)[1])
    return {"area_fraction": float(cell_mask(labels, center).mean()), "regions": float(regions),
            "classes": float(present.size)}
