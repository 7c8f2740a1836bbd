"""The first view of the dashboard: the test sample where the paper's point shows best.

The Cells page opens on an adversarial plane (the paper's Fig. S2: spanned by the FGSM directions of
the two models) through the test sample whose in-plane cell is most enlarged by Jacobian
regularization, i.e. where the ratio of the regularised model's in-plane radius to the plain
model's is largest (Hoffman, Roberts & Yaida 2019, Sec. 4 and Fig. S2). The choice is cheap: a
coarse boundary search (:func:`jacreg.cells.boundary_distance` with few rays and a loose tolerance)
over the candidates, then a full cross section (:func:`jacreg.cells.cross_section`, whose circle is
``cs.boundary_distance``) of the best few to confirm the radii. ``python -m jacreg reproduce --zoo``
writes the result to ``models/first_view.json`` (:func:`write_first_view`);
:func:`jacreg.catalog.first_view` reads it back, validated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..catalog import FIRST_VIEW_FILE
from ..cells import (
    MAX_EXTENT,
    CrossSection,
    Plane,
    adversarial_plane,
    boundary_distance,
    cross_section,
    predict,
)
from ..errors import ConfigError
from ..events import EventFn, sink
from ..fileio import atomic_write_json

__all__ = ["choose_first_view", "first_view_caption", "radius_ratio", "round_extent", "write_first_view"]

#: Coarse search: the window's half width (the search reaches ``max_factor`` times farther), rays, precision.
COARSE_EXTENT, COARSE_FACTOR, COARSE_RAYS, COARSE_TOL = 4.0, 2.0, 36, 0.02
#: Candidates confirmed with a full cross section.
CONFIRM = 3


def round_extent(radius: float, factor: float = 1.5) -> float:
    """``factor`` times ``radius`` rounded to two significant digits, within (0, MAX_EXTENT]."""
    value = factor * float(radius)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"no extent for a radius of {radius!r}")
    return min(MAX_EXTENT, float(f"{value:.2g}"))


def radius_ratio(radii: Sequence[float]) -> float:
    """How many times wider the second model's cell is than the first's in the plane (nan unless
    both radii are finite and positive)."""
    r0, r1 = float(radii[0]), float(radii[1])
    if not (math.isfinite(r0) and math.isfinite(r1)) or r0 <= 0:
        return math.nan
    return r1 / r0


def _coarse_radii(nets: list[nn.Module], plane: Plane, device: str | torch.device | None) -> list[float]:
    """Each model's in-plane radius, searched coarsely (few rays, 2% precision) up to 8."""
    return [boundary_distance(m, plane, COARSE_EXTENT, device=device, n_directions=COARSE_RAYS,
                              rel_tol=COARSE_TOL, max_factor=COARSE_FACTOR) for m in nets]


def _confirm(nets: list[nn.Module], plane: Plane, radii: list[float], resolution: int,
             device: str | torch.device | None) -> CrossSection:
    """The cross section the page will show, sized from the coarse radii; its circles are the radii."""
    finite = [r for r in radii if math.isfinite(r)]
    extent = round_extent(max(finite)) if finite else COARSE_EXTENT * COARSE_FACTOR
    return cross_section(nets, plane, extent, resolution, device=device, predict=False)


def choose_first_view(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                      candidates: int = 40, resolution: int = 61, seed: int = 0, dataset: str = "mnist-5k",
                      device: str | torch.device | None = None, on_event: EventFn | None = None
                      ) -> dict[str, Any]:
    """The test sample whose adversarial plane shows the second model's cell widest against the first's.

    Among the first ``candidates`` samples of ``x`` that every model classifies correctly, each
    gets the adversarial plane of the two models (u: the first model's FGSM direction, v: the part
    of the second's orthogonal to it; :func:`jacreg.cells.adversarial_plane`) and a coarse
    in-plane radius per model. Among those whose first-model radius is at least the median over the
    candidates (a typical cell, big enough to see), the best ``CONFIRM`` by radius ratio (second /
    first, both finite) are confirmed with a cross section at ``resolution`` whose circles give the
    radii reported.

    Args:
        models: exactly two models by name, the reference first (e.g. ``lenet-none``, ``lenet-jr``).
        x, y: test images in [0, 1] (N, C, H, W) and labels, in the dataset's fixed order.
        candidates: how many of the first samples to consider.
        resolution: points per side of the confirming cross sections.
        seed: seed of the plane's random completion (used only if the FGSM directions are parallel).
        dataset: the name of the dataset ``x`` comes from (stored in the result).
        device: where to evaluate.
        on_event: progress: ``{"event": "progress", "stage": "first view", "done", "total"}``.

    Returns:
        ``{"models": [names], "sample": int, "plane": "adversarial", "extent": float,
        "radii": {name: radius}, "dataset": str}``; ``extent`` is 1.5 times the larger finite radius
        rounded to two significant digits.

    Raises:
        ConfigError: not two models, or no candidate sample that every model classifies correctly.
    """
    if len(models) != 2:
        raise ConfigError(f"the first view compares two models, got {len(models)}")
    if candidates < 1:
        raise ConfigError(f"candidates must be at least 1, got {candidates}")
    emit = sink(on_event)
    names, nets = list(models), list(models.values())
    n = min(int(candidates), int(x.shape[0]))
    labels, _ = predict(nets, x[:n], device=device)
    right = np.nonzero((labels == y[:n].numpy()[None, :]).all(axis=0))[0]
    if right.size == 0:
        raise ConfigError(f"none of the first {n} test samples is classified correctly by "
                          f"{' and '.join(names)}; train them longer")
    scored: list[tuple[float, int, Plane, list[float]]] = []
    for done, i in enumerate(right.tolist()):
        with warnings.catch_warnings():  # parallel FGSM directions: completed at random, noted in the plane
            warnings.simplefilter("ignore")
            plane = adversarial_plane(x[i], int(y[i]), nets[0], nets[1], seed=seed, device=device)
        radii = _coarse_radii(nets, plane, device)
        ratio = radius_ratio(radii)
        # both finite: by ratio; otherwise after them, by the larger finite radius of the second model
        key = ratio if math.isfinite(ratio) else -1.0 / (1.0 + (radii[1] if math.isfinite(radii[1]) else 0.0))
        scored.append((key, i, plane, radii))
        emit({"event": "progress", "stage": "first view", "done": done + 1, "total": int(right.size)})
    # a typical sample, not one whose reference cell is unusually small (the ratio would favour those,
    # and a tiny circle is hard to see): the reference radius at least the median over the candidates
    reference = [t[3][0] for t in scored if math.isfinite(t[3][0])]
    if reference:
        typical = [t for t in scored if math.isfinite(t[3][0]) and t[3][0] >= float(np.median(reference))]
        scored = typical or scored
    scored.sort(key=lambda t: (-t[0], t[1]))
    best: tuple[float, int, list[float]] | None = None
    for _, i, plane, coarse in scored[:CONFIRM]:
        cs = _confirm(nets, plane, coarse, resolution, device)
        radii = [float(r) for r in cs.boundary_distance]
        ratio = radius_ratio(radii)
        key = ratio if math.isfinite(ratio) else -math.inf
        if best is None or key > best[0]:
            best = (key, i, radii)
    assert best is not None  # scored is not empty
    _, sample, radii = best
    finite = [r for r in radii if math.isfinite(r)]
    extent = round_extent(max(finite)) if finite else COARSE_EXTENT
    return {"models": names, "sample": int(sample), "plane": "adversarial", "extent": extent,
            "radii": dict(zip(names, radii, strict=True)), "dataset": str(dataset)}


def write_first_view(view: dict[str, Any], zoo: str | Path) -> Path:
    """Write :func:`choose_first_view`'s result to ``<zoo>/first_view.json`` atomically (inf as null)."""
    return atomic_write_json(Path(zoo) / FIRST_VIEW_FILE, view)


def _sample_word(dataset: str) -> str:
    return "digit" if dataset in ("mnist", "mnist-5k", "usps") else "sample"


def first_view_caption(cs: CrossSection, names: Sequence[str], sample: int, dataset: str,
                       plane: str = "adversarial") -> str:
    """One line saying what the first view shows, from the cross section's circles: e.g.
    ``lenet-none vs lenet-jr on an adversarial plane through test digit 7: the lenet-jr cell is 2.4
    times wider (in-plane radius 3.1 vs 1.29).``"""
    if len(names) != 2 or cs.boundary_distance.size != 2:
        raise ConfigError("the first view's caption compares two models")
    article = "an" if plane[:1] in "aeiou" else "a"
    where = (f"{names[0]} vs {names[1]} on {article} {plane} plane through test {_sample_word(dataset)} "
             f"{sample}")
    r0, r1 = (float(r) for r in cs.boundary_distance)
    ratio = radius_ratio([r0, r1])
    if math.isfinite(ratio):
        wider = "wider" if ratio >= 1 else "narrower"
        times = ratio if ratio >= 1 else 1 / ratio
        return (f"{where}: the {names[1]} cell is {times:.1f} times {wider} "
                f"(in-plane radius {r1:.3g} vs {r0:.3g}).")
    searched = float(cs.boundary_searched[1])
    if math.isfinite(r0) and r0 > 0 and math.isinf(r1) and searched > 0:
        return (f"{where}: the {names[1]} cell is more than {searched / r0:.1f} times wider "
                f"(no boundary within {searched:.3g}; {names[0]}: {r0:.3g}).")
    return f"{where}."
