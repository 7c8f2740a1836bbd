"""Where a training run stands, from its events: progress, ETA, per-epoch and per-step histories."""

from __future__ import annotations

import math
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


def _int(value: Any, default: int) -> int:
    """An event's integer field; ``default`` when it is missing or of another type (events are data)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _num(value: Any, default: float = 0.0) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def regularizer_label(config: Mapping[str, Any]) -> str:
    """Short name of a training config's regularizers, e.g. ``"l2+dropout+jr"`` or ``"none"``."""
    regs = [r for r, on in (("l2", _num(config.get("l2")) > 0),
                            ("dropout", _num(config.get("dropout")) > 0),
                            ("jr", _num(config.get("jr")) > 0),
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
            total = _int(ev.get("total_steps"), total)
            cfg = ev.get("config")
            epochs = _int(cfg.get("epochs"), epochs) if isinstance(cfg, dict) else epochs
            attempt_first = _int(ev.get("start_epoch"), 0) * _int(ev.get("steps_per_epoch"), 0)
            step = max(step, attempt_first) if attempt_first else step
            if _num(ev.get("time")):
                started = _num(ev.get("time"))
        elif kind == "step":
            step = _int(ev.get("step"), step)
            total = _int(ev.get("total_steps"), total)
            if attempt_first is None:
                attempt_first = step - 1
        elif kind == "epoch":
            last_epoch = dict(ev)
            epoch = _int(ev.get("epoch"), epoch)
            epochs = _int(ev.get("epochs"), epochs)
    done = any(ev.get("event") == "done" for ev in events[-3:])
    if done and total:
        step = total
    fraction = min(1.0, step / total) if total else (1.0 if done else 0.0)
    eta: float | None = None
    base = attempt_first or 0
    if _num(started) and total and step > base and not done:
        now = time.time() if now is None else now
        rate = (now - _num(started)) / (step - base)
        eta = max(0.0, rate * (total - step))
    elif done:
        eta = 0.0
    return Progress(step=step, total=total, fraction=fraction, eta_s=eta, epoch=epoch, epochs=epochs,
                    last_epoch=last_epoch)


def epoch_history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per epoch (the last event of each epoch wins, so a resumed run has no duplicates)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "epoch" and _int(ev.get("epoch"), -1) >= 0:
            by_epoch[ev["epoch"]] = {k: v for k, v in ev.items() if k != "event"}
    return [by_epoch[k] for k in sorted(by_epoch)]


def step_history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per optimiser step (the last event for a step wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "step" and _int(ev.get("step"), -1) >= 0:
            by_step[ev["step"]] = {k: v for k, v in ev.items() if k != "event"}
    return [by_step[k] for k in sorted(by_step)]
