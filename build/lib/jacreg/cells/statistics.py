"""Decision-cell statistics over many test samples: the paper's claim, quantified.

Jacobian regularization enlarges the decision cells around the data; here that is measured as
the in-plane radius, area and fragmentation of the cells of many test samples, on random planes
and on each model's own adversarial plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..events import EventFn
from .evaluate import check_grid
from .plane import adversarial_plane, random_plane
from .section import cross_section

__all__ = ["PlaneKind", "cell_statistics"]


PlaneKind = Literal["random", "adversarial"]


def cell_statistics(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, n: int | None = None,
                    planes: PlaneKind = "random", *, extent: float = 1.0, resolution: int = 51,
                    seed: int = 0, names: Sequence[str] | None = None,
                    device: str | torch.device | None = None, batch_size: int | None = None,
                    on_event: EventFn | None = None) -> list[dict[str, Any]]:
    """Decision-cell statistics over test samples: the quantitative form of the paper's claim that
    Jacobian regularization enlarges decision cells.

    For each of the first ``n`` samples: on ``planes="random"`` one random plane (seed ``seed + k``)
    shared by all models; on ``planes="adversarial"`` each model's own adversarial plane (its FGSM
    direction as ``u``, a random ``v``). On each plane: the in-plane radius
    (:func:`boundary_distance`, up to 4 * extent), the cell's area fraction of the window and the
    number of single-class regions (:func:`cell_metrics`).

    Returns:
        One dict per model: ``name``, ``planes``, ``samples``, ``accuracy`` (on those samples),
        ``radius_mean`` (over finite radii), ``radius_median`` (inf counts as large),
        ``no_boundary`` (how many radii are inf), ``area_fraction_mean``, ``regions_mean``,
        ``regions_median``, and the per-sample lists ``radius``, ``area_fraction``, ``regions``.
    """
    if planes not in ("random", "adversarial"):
        raise ConfigError(f"planes must be 'random' or 'adversarial', got {planes!r}")
    check_grid(extent, resolution)
    model_list = list(models)
    if not model_list:
        raise ConfigError("give at least one model")
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    total = x.shape[0] if n is None else int(n)
    if total < 1:
        raise ConfigError(f"statistics need at least one sample, got n={n}")
    if total > x.shape[0]:
        raise ConfigError(f"asked for statistics over {total} samples, only {x.shape[0]} given")
    names = list(names) if names is not None else [f"model {k}" for k in range(len(model_list))]
    per: list[dict[str, list[Any]]] = [{"radius": [], "area_fraction": [], "regions": [], "correct": []}
                                       for _ in model_list]
    for k in range(total):
        if planes == "random":
            plane = random_plane(x[k], seed=seed + k)
            cs = cross_section(model_list, plane, extent, resolution, device=device, batch_size=batch_size)
            sections = [(m, cs, m) for m in range(len(model_list))]
        else:
            sections = []
            for m, model in enumerate(model_list):
                plane = adversarial_plane(x[k], int(y[k]), model, None, seed=seed + k, device=device)
                sections.append((m, cross_section([model], plane, extent, resolution, device=device,
                                                  batch_size=batch_size), 0))
        for m, cs, idx in sections:
            met = cs.metrics(idx)
            per[m]["radius"].append(met["radius"])
            per[m]["area_fraction"].append(met["area_fraction"])
            per[m]["regions"].append(met["regions"])
            per[m]["correct"].append(int(cs.origin_label[idx]) == int(y[k]))
        if on_event is not None:
            on_event({"event": "progress", "stage": f"stats-{planes}", "done": k + 1, "total": total,
                      "fraction": (k + 1) / total})
    out = []
    for m, p in enumerate(per):
        r = np.asarray(p["radius"], dtype=float)
        finite = r[np.isfinite(r)]
        out.append({
            "name": names[m], "planes": planes, "samples": total, "extent": float(extent),
            "accuracy": float(np.mean(p["correct"])),
            "radius_mean": float(finite.mean()) if finite.size else math.inf,
            "radius_median": float(np.median(r)),
            "no_boundary": int((~np.isfinite(r)).sum()),
            "area_fraction_mean": float(np.mean(p["area_fraction"])),
            "regions_mean": float(np.mean(p["regions"])),
            "regions_median": float(np.median(p["regions"])),
            "radius": [float(v) for v in r], "area_fraction": list(p["area_fraction"]),
            "regions": list(p["regions"]),
        })
    return out
