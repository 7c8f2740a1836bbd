"""A coarse first picture for slow models: estimate a map's cost, and a cheap preview cross section.

A cross section of a big model (ResNet-18 at 224x224) costs seconds per hundred points, so a
201x201 map can take minutes. :func:`map_seconds` estimates the full map's time from one small
timed batch per model; when it is long (over :func:`preview_after` seconds), a page first shows
:func:`preview_section` (a third of the resolution, boundary-refined on a coarse grid, no circle
and no linearised radius) and then the full one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import torch
from torch import nn

from ..device import eval_copy
from ..errors import ShapeError
from ..events import EventFn
from .evaluate import MIN_RESOLUTION, check_grid
from .grid import default_coarse_step
from .plane import Plane, as_image
from .section import CrossSection, cross_section

__all__ = ["PREVIEW_AFTER_SECONDS", "map_seconds", "preview_after", "preview_resolution", "preview_section",
           "seconds_per_point"]

#: A full map estimated to take longer than this is previewed first (``$JACREG_PREVIEW_SECONDS`` overrides).
PREVIEW_AFTER_SECONDS = 5.0
#: A timed batch shorter than this is timed again with more points (per-call overhead would dominate).
_SHORT = 0.05


def preview_after() -> float:
    """Seconds above which a map is previewed first: ``$JACREG_PREVIEW_SECONDS`` when it is a
    non-negative number, else :data:`PREVIEW_AFTER_SECONDS`."""
    try:
        value = float(os.environ.get("JACREG_PREVIEW_SECONDS", ""))
    except ValueError:
        return PREVIEW_AFTER_SECONDS
    return value if math.isfinite(value) and value >= 0 else PREVIEW_AFTER_SECONDS


def _timed(net: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        net(x)
        return time.perf_counter() - t0


def seconds_per_point(models: nn.Module | Sequence[nn.Module], x0: torch.Tensor, *,
                      device: str | torch.device | None = None, most: int = 64) -> float:
    """Wall time of one plane point for all the models together, measured on copies of ``x0``.

    Each model runs one warm-up pass of 2 images, then a timed pass of 2; when that is shorter than
    50 ms a timed pass of ``most`` images replaces it (so a small model's per-call overhead is spread).

    Raises:
        ShapeError: a model cannot take ``x0``.
    """
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    x = as_image(x0).unsqueeze(0)
    total = 0.0
    for k, model in enumerate(model_list):
        net, dev = eval_copy(model, device)
        try:
            _timed(net, x.expand(2, *x.shape[1:]).to(dev))
            n = 2
            t = _timed(net, x.expand(n, *x.shape[1:]).to(dev))
            if t < _SHORT:
                n = max(2, int(most))
                t = _timed(net, x.expand(n, *x.shape[1:]).to(dev))
        except RuntimeError as exc:
            raise ShapeError(f"model {k} cannot take inputs of shape {tuple(x.shape[1:])}: "
                             f"{str(exc).splitlines()[0]}") from None
        total += t / n
    return total


def map_seconds(models: nn.Module | Sequence[nn.Module], x0: torch.Tensor, resolution: int, *,
                device: str | torch.device | None = None) -> float:
    """Estimated wall time of a full ``resolution`` x ``resolution`` map of all the models: every
    point evaluated (an upper bound of a boundary-refined map; the circle may spend as much again)."""
    return seconds_per_point(models, x0, device=device) * int(resolution) ** 2


def preview_resolution(resolution: int) -> int:
    """The preview's points per side: a third of ``resolution``, at least :data:`MIN_RESOLUTION`
    (equal to ``resolution`` when no smaller preview exists)."""
    return min(int(resolution), max(MIN_RESOLUTION, int(resolution) // 3))


def preview_section(models: nn.Module | Sequence[nn.Module], plane: Plane, extent: float, resolution: int, *,
                    device: str | torch.device | None = None,
                    on_event: EventFn | None = None) -> CrossSection:
    """A cheap cross section for a first look: :func:`preview_resolution` points per side, refined
    from a coarse grid of every other point (or coarser), no circle (``boundary_distance`` inf with
    nothing searched) and no linearised radius.

    Args:
        resolution: the full map's resolution (the preview's is derived from it).
        on_event: as :func:`~jacreg.cells.section.cross_section`'s.
    """
    check_grid(extent, resolution)
    res = preview_resolution(resolution)
    step = max(2, default_coarse_step(res))
    return cross_section(models, plane, extent, res, device=device, refine=True, coarse_step=step,
                         boundary=False, predict=False, on_event=on_event)
