"""Cells through training: one plane, one sample, a cross section per epoch snapshot of each run.

``train --snapshot-every N`` keeps the model after every N-th epoch as
``<out stem>.epochs/epoch-NNN.safetensors`` (:func:`jacreg.catalog.list_snapshots`). A film puts
several runs (e.g. a plain and a JR model trained together) side by side on one plane and shows how
the sample's decision cell forms: the map, the measured circle and the circle the Jacobian
predicts (:mod:`~jacreg.cells.linear`) at every epoch.

Typical use::

    from jacreg.cells import film, random_plane
    runs = {"plain": "models/lenet-none.safetensors", "JR": "models/lenet-jr.safetensors"}
    f = film(snapshot_runs(runs), random_plane(x0, seed=0), extent=10.0, resolution=101)
    f.frame(3)        # a CrossSection of all runs at epoch 3
    f.radii()         # rows: run, epoch, measured and predicted radius, seconds

Every frame is an independent :func:`cross_section` (boundary-refined map, measured circle,
linearised circle); ``Film.seconds`` records the cost of each, ``benchmarks/film.py`` measures it
part by part. Seeding a frame with the previous epoch does not pay on a CPU and is not done: the
previous map's points evaluated in the new map's first pass cost 22-34% more evaluations for fewer
forward passes (0.90x-1.13x the time per frame), and the previous radius as the first step of the
boundary search 1.01x-1.18x the evaluations. The measured circle, not the map, is most of a frame's
cost (67-70% of its time on a CPU; the map 13-20%, the linearised circle 3%).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..catalog import Snapshot, list_snapshots
from ..checkpoints import load_checkpoint
from ..errors import ConfigError
from ..events import EventFn, sink
from .evaluate import check_grid
from .plane import Plane
from .section import CrossSection, cross_section

__all__ = ["Film", "Reel", "film", "snapshot_runs"]

#: A model of a frame: the module itself, or a checkpoint loaded when its frame is computed.
ModelSource = nn.Module | str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class Reel:
    """One run of a film: its frames in epoch order.

    Attributes:
        name: the run's name (a column of the film).
        epochs: the epoch of each frame (after that many epochs of training).
        sections: one single-model :class:`CrossSection` per frame.
        seconds: wall time of each frame (loading the snapshot, map, circle and prediction).
    """

    name: str
    epochs: tuple[int, ...]
    sections: tuple[CrossSection, ...]
    seconds: tuple[float, ...]

    def index(self, epoch: int) -> int:
        """The frame shown at ``epoch``: the last one at or before it (the first one before any)."""
        return max(0, int(np.searchsorted(np.asarray(self.epochs), int(epoch), side="right")) - 1)


@dataclass(frozen=True, eq=False)
class Film:
    """Cross sections of several runs on one plane, one per snapshot.

    Attributes:
        plane: the plane (the same for every frame).
        extent: half width of the window (input-space L2 units).
        reels: one per run, in the order given.
    """

    plane: Plane
    extent: float
    reels: tuple[Reel, ...]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.reels]

    @property
    def epochs(self) -> list[int]:
        """Every epoch that some run has a frame of, ascending (the film's time line)."""
        return sorted({e for r in self.reels for e in r.epochs})

    @property
    def coords(self) -> np.ndarray:
        return self.reels[0].sections[0].coords

    @property
    def frames(self) -> int:
        return sum(len(r.epochs) for r in self.reels)

    def frame(self, epoch: int) -> CrossSection:
        """All runs at ``epoch`` (each at its last frame at or before it), as one cross section."""
        parts = [r.sections[r.index(epoch)] for r in self.reels]

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return CrossSection(
            plane=self.plane, extent=self.extent, coords=parts[0].coords, labels=cat("labels"),
            confidence=cat("confidence"), boundary_distance=cat("boundary_distance"),
            boundary_angle=cat("boundary_angle"), origin_label=cat("origin_label"),
            origin_confidence=cat("origin_confidence"), evaluations=cat("evaluations"),
            seconds=float(sum(r.seconds[r.index(epoch)] for r in self.reels)), refined=parts[0].refined,
            num_classes=max(p.num_classes for p in parts), predicted_distance=cat("predicted_distance"))

    def radii(self) -> list[dict[str, Any]]:
        """One row per frame: ``run``, ``epoch``, ``radius`` (measured), ``predicted_radius``
        (linearised), ``prediction`` (class at the sample), ``confidence``, ``evaluations`` (of the
        map) and ``seconds``."""
        rows = []
        for r in self.reels:
            for e, cs, sec in zip(r.epochs, r.sections, r.seconds, strict=True):
                rows.append({"run": r.name, "epoch": int(e), "radius": float(cs.boundary_distance[0]),
                             "predicted_radius": float(cs.predicted_distance[0]),
                             "prediction": int(cs.origin_label[0]),
                             "confidence": float(cs.origin_confidence[0]),
                             "evaluations": int(cs.evaluations[0]), "seconds": float(sec)})
        return rows

    def seconds_per_frame(self) -> float:
        """Mean wall time of a frame."""
        secs = [s for r in self.reels for s in r.seconds]
        return float(np.mean(secs)) if secs else math.nan


def snapshot_runs(checkpoints: Mapping[str, str | os.PathLike[str]]) -> dict[str, list[Snapshot]]:
    """The snapshots of each named checkpoint (:func:`jacreg.catalog.list_snapshots`).

    Raises:
        ConfigError: a checkpoint has no snapshots (the message says how to make them).
    """
    out: dict[str, list[Snapshot]] = {}
    for name, path in checkpoints.items():
        snaps = list_snapshots(path)
        if not snaps:
            raise ConfigError(f"{name} has no per-epoch snapshots next to {path}: train it with "
                              "`python -m jacreg train ... --snapshot-every 1` (the Train page does this "
                              "by default for small models)")
        out[name] = snaps
    return out


def _load(source: ModelSource, device: str | torch.device | None) -> nn.Module:
    if isinstance(source, nn.Module):
        return source
    model, _ = load_checkpoint(source, device=device if device is not None else "cpu")
    return model


def film(runs: Mapping[str, Sequence[tuple[int, ModelSource]]], plane: Plane, extent: float = 1.0,
         resolution: int = 101, *, device: str | torch.device | None = None,
         batch_size: int | None = None, n_directions: int = 180,
         on_event: EventFn | None = None) -> Film:
    """A cross section of every snapshot of every run, on one plane.

    Args:
        runs: run name -> ``(epoch, model)`` pairs (a module, or a checkpoint path loaded when its
            frame is computed; :func:`snapshot_runs` gives them for checkpoints with snapshots).
        plane: the plane (for an adversarial plane, build it from the runs' final models).
        extent, resolution: the window and grid (as :func:`cross_section`).
        device, batch_size, n_directions: as :func:`cross_section`.
        on_event: progress: ``{"event": "progress", "stage": "film", "run": name, "epoch": e,
            "done": k, "total": n, "fraction": k / n}`` after each frame.

    Raises:
        ConfigError: no run, a run without frames, bad extent or resolution.
        CheckpointError: a snapshot cannot be loaded.
        ShapeError: a model cannot take the plane's inputs.
    """
    check_grid(extent, resolution)
    if not runs:
        raise ConfigError("a film needs at least one run")
    emit = sink(on_event)
    total = sum(len(frames) for frames in runs.values())
    done = 0
    reels = []
    for name, frames in runs.items():
        if not frames:
            raise ConfigError(f"run {name!r} has no snapshots")
        ordered = sorted(frames, key=lambda f: int(f[0]))
        sections: list[CrossSection] = []
        seconds: list[float] = []
        for epoch, source in ordered:
            t0 = time.perf_counter()
            model = _load(source, device)
            cs = cross_section(model, plane, extent, resolution, device=device, batch_size=batch_size,
                               n_directions=n_directions)
            sections.append(cs)
            seconds.append(time.perf_counter() - t0)
            done += 1
            emit({"event": "progress", "stage": "film", "run": name, "epoch": int(epoch), "done": done,
                  "total": total, "fraction": done / total})
        reels.append(Reel(str(name), tuple(int(e) for e, _ in ordered), tuple(sections), tuple(seconds)))
    return Film(plane, float(extent), tuple(reels))
