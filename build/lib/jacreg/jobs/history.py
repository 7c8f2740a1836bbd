"""Where a training run stands, from its events: progress, ETA, per-epoch and per-step histories."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "epoch_history", "progress_from_events", "regularizer_label", "step_history"]


@dataclass(frozen=True)
class Progress:
    """Where a training job stands, from its events.

    Attributes:
        step: optimiser steps done; total: steps planned (0 when unknown yet).
        fraction: step / total in [0, 1]; eta_s: seconds left (None until measurable).
        epoch, epochs: the last finished epoch and the number planned.
        last_epoch: the last ``epoch`` event (metrics), or None.
    """

    step: int
    total: int
    fraction: float
    eta_s: float | None
    epoch: int
    epochs: int
    last_epoch: dict[str, Any] | None


def regularizer_label(config: Mapping[str, Any]) -> str:
    """Short name of a training config's regularizers, e.g. ``"l2+dropout+jr"`` or ``"none"``."""
    regs = [r for r, on in (("l2", float(config.get("l2") or 0) > 0),
                            ("dropout", float(config.get("dropout") or 0) > 0),
                            ("jr", float(config.get("jr") or 0) > 0),
                            (f"{config.get('adv')}-at", config.get("adv") not in (None, "", "none")))
            if on]
    return "+".join(regs) or "none"


def progress_from_events(events: Sequence[Mapping[str, Any]], started: float | None = None,
                         now: float | None = None) -> Progress:
    """Steps done, total, ETA and the last epoch's metrics from a job's events.

    The ETA is the remaining steps at the current attempt's pace (wall time since the attempt's
    ``start`` event, or ``started``, per step done since); before the first step it is None.
    """
    step, total, epochs, epoch = 0, 0, 0, 0
    last_epoch: dict[str, Any] | None = None
    attempt_first: int | None = None
    for ev in events:
        kind = ev.get("event")
        if kind == "start":
            total = int(ev.get("total_steps") or total)
            cfg = ev.get("config") or {}
            epochs = int(cfg.get("epochs") or epochs)
            attempt_first = int(ev.get("start_epoch") or 0) * int(ev.get("steps_per_epoch") or 0)
            step = max(step, attempt_first) if attempt_first else step
            if ev.get("time"):
                started = float(ev["time"])
        elif kind == "step":
            step = int(ev.get("step") or step)
            total = int(ev.get("total_steps") or total)
            if attempt_first is None:
                attempt_first = step - 1
        elif kind == "epoch":
            last_epoch = dict(ev)
            epoch = int(ev.get("epoch") or epoch)
            epochs = int(ev.get("epochs") or epochs)
    done = any(ev.get("event") == "done" for ev in events[-3:])
    if done and total:
        step = total
    fraction = min(1.0, step / total) if total else (1.0 if done else 0.0)
    eta: float | None = None
    base = attempt_first or 0
    if started and total and step > base and not done:
        now = time.time() if now is None else now
        rate = (now - float(started)) / (step - base)
        eta = max(0.0, rate * (total - step))
    elif done:
        eta = 0.0
    return Progress(step=step, total=total, fraction=fraction, eta_s=eta, epoch=epoch, epochs=epochs,
                    last_epoch=last_epoch)


def epoch_history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per epoch (the last event of each epoch wins, so a resumed run has no duplicates)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "epoch" and ev.get("epoch") is not None:
            by_epoch[int(ev["epoch"])] = {k: v for k, v in ev.items() if k != "event"}
    return [by_epoch[k] for k in sorted(by_epoch)]


def step_history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per optimiser step (the last event for a step wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "step" and ev.get("step") is not None:
            by_step[int(ev["step"])] = {k: v for k, v in ev.items() if k != "event"}
    return [by_step[k] for k in sorted(by_step)]
