"""Theory beside measurement: the cell radius the Jacobian predicts against the measured one.

The paper's argument (Hoffman, Roberts & Yaida 2019, Sec. 2) is that a small input-output Jacobian
means large margins, i.e. a large decision cell. For many test samples and several models this
module puts the two side by side: on a random plane per sample (shared by the models) and on each
model's own adversarial plane (its FGSM direction and a random one), the in-plane radius predicted
by linearising the logits (:func:`~jacreg.cells.linear.predicted_distance`) against the measured
one (:func:`~jacreg.cells.boundary_distance`), with ``||J(x)||_F`` of each sample
(:func:`jacreg.regularizer.jacobian_norms`, with respect to the pixels: the radii's units).

Where the linearisation is exact (an affine model) every point lies on the diagonal; a model whose
Jacobian is flat near the data has its cell bounded by curvature, and the prediction overshoots.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..device import eval_copy
from ..errors import ConfigError
from ..events import EventFn, sink
from ..regularizer import jacobian_norms
from .boundary import boundary_distance
from .evaluate import check_grid
from .linear import predicted_distance
from .plane import Plane, adversarial_plane, random_plane

__all__ = ["COLUMNS", "RadiusTheory", "radius_theory"]

#: The columns of :attr:`RadiusTheory.rows` and of its CSV, in order.
COLUMNS: tuple[str, ...] = ("model", "sample", "label", "plane", "prediction", "measured", "predicted",
                            "ratio", "jacobian_norm")
PLANES: tuple[str, ...] = ("random", "adversarial")
#: A prediction within this factor of the measured radius counts as "within 3x" in the summary.
FACTOR = 3.0


@dataclass(frozen=True, eq=False)
class RadiusTheory:
    """Predicted against measured cell radii of several models over test samples.

    Attributes:
        rows: one dict per (model, sample, plane) with the keys of :data:`COLUMNS`: ``measured``
            and ``predicted`` radii (inf when none is found up to 4 x the plane's extent, or when the
            logits do not change along the plane), ``ratio`` = predicted / measured (nan unless both
            are finite and positive), ``jacobian_norm`` = ||J(x)||_F of the sample (pixels),
            ``prediction`` the model's class at the sample, ``label`` the true class.
        names: the models, in order.
        extents: the window of each kind of plane; radii are searched up to 4 x it.
    """

    rows: list[dict[str, Any]]
    names: list[str]
    extents: dict[str, float]

    def select(self, model: str | None = None, plane: str | None = None) -> list[dict[str, Any]]:
        """The rows of one model and/or one kind of plane."""
        return [r for r in self.rows if (model is None or r["model"] == model)
                and (plane is None or r["plane"] == plane)]

    def summary(self) -> list[dict[str, Any]]:
        """Per model and plane (and all models together): ``samples``, ``finite`` (pairs with both
        radii finite), ``spearman`` (rank correlation of predicted and measured over those; nan
        below 3 pairs or when one side is constant), ``median_ratio`` and ``within_3x`` (share of the
        finite pairs with predicted/measured in [1/3, 3])."""
        out = []
        for plane in PLANES:
            groups = [(m, self.select(m, plane)) for m in self.names]
            if len(self.names) > 1:
                groups.append(("all models", self.select(None, plane)))
            for name, rows in groups:
                if rows:
                    out.append({"model": name, "plane": plane, **_agreement(rows)})
        return out

    def csv_bytes(self) -> bytes:
        """The rows as CSV (UTF-8, a header line of :data:`COLUMNS`)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
        return buf.getvalue().encode()


def _agreement(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    meas = np.array([r["measured"] for r in rows], dtype=float)
    pred = np.array([r["predicted"] for r in rows], dtype=float)
    ok = np.isfinite(meas) & np.isfinite(pred) & (meas > 0)
    ratio = pred[ok] / meas[ok]
    rho = math.nan
    if ok.sum() >= 3 and np.ptp(meas[ok]) > 0 and np.ptp(pred[ok]) > 0:
        rho = float(stats.spearmanr(pred[ok], meas[ok]).statistic)
    return {"samples": len(rows), "finite": int(ok.sum()), "spearman": rho,
            "median_ratio": float(np.median(ratio)) if ratio.size else math.nan,
            "within_3x": (float(np.mean((ratio >= 1 / FACTOR) & (ratio <= FACTOR))) if ratio.size
                          else math.nan)}


def _ratio(pred: float, meas: float) -> float:
    return pred / meas if math.isfinite(pred) and math.isfinite(meas) and meas > 0 else math.nan


def radius_theory(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, n: int | None = None,
                  planes: Sequence[str] = PLANES, *, extent: float = 5.0, adversarial_extent: float = 1.0,
                  seed: int = 0, names: Sequence[str] | None = None,
                  device: str | torch.device | None = None,
                  on_event: EventFn | None = None) -> RadiusTheory:
    """Predicted (linearised logits) against measured in-plane cell radii over test samples.

    For each of the first ``n`` samples: on ``"random"`` planes one random plane (seed
    ``seed + k``) shared by all models, radii searched up to 4 x ``extent``; on ``"adversarial"``
    planes each model's own (its FGSM direction, a random second direction drawn from
    ``seed + k``), searched up to 4 x ``adversarial_extent``.

    Raises:
        ConfigError: no model, bad ``n``, an unknown kind of plane, a bad extent.
    """
    model_list = list(models)
    if not model_list:
        raise ConfigError("give at least one model")
    kinds = list(dict.fromkeys(planes))
    bad = [p for p in kinds if p not in PLANES]
    if bad or not kinds:
        raise ConfigError(f"planes must be among {', '.join(PLANES)}, got {', '.join(map(str, planes))}")
    extents = {"random": float(extent), "adversarial": float(adversarial_extent)}
    for kind in kinds:
        check_grid(extents[kind], 11)
    total = x.shape[0] if n is None else int(n)
    if not 1 <= total <= x.shape[0]:
        raise ConfigError(f"n must be between 1 and the {x.shape[0]} samples given, got {n}")
    label_names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(model_list))]
    if len(label_names) != len(model_list):
        raise ConfigError(f"{len(label_names)} names for {len(model_list)} models")
    emit = sink(on_event)
    norms = []
    for model in model_list:
        net, dev = eval_copy(model, device)
        norms.append(jacobian_norms(net, x[:total].to(dev)).cpu().numpy())
    rows: list[dict[str, Any]] = []
    steps, done = total * len(kinds) * len(model_list), 0
    for k in range(total):
        for kind in kinds:
            for m, model in enumerate(model_list):
                plane = _plane(kind, x[k], int(y[k]), model, seed + k, device)
                lin = predicted_distance(model, plane, device=device)
                meas = boundary_distance(model, plane, extents[kind], device=device)
                rows.append({"model": label_names[m], "sample": k, "label": int(y[k]), "plane": kind,
                             "prediction": lin.label, "measured": float(meas), "predicted": lin.distance,
                             "ratio": _ratio(lin.distance, float(meas)),
                             "jacobian_norm": float(norms[m][k])})
                done += 1
                emit({"event": "progress", "stage": "theory", "done": done, "total": steps,
                      "fraction": done / steps})
    return RadiusTheory(rows, label_names, {k: extents[k] for k in kinds})


def _plane(kind: str, x0: torch.Tensor, y0: int, model: nn.Module, seed: int,
           device: str | torch.device | None) -> Plane:
    if kind == "random":
        return random_plane(x0, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adversarial_plane(x0, y0, model, None, seed=seed, device=device)
