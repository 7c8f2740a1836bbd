"""A background runner for interactive front ends: several curves, one after the other, in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import JacregError
from ..events import EventFn
from .catalog import get_attack
from .curves import DEFAULT_BATCH_SIZE, curve, masking_probe

__all__ = ["CurveRunner", "CurveTask"]


@dataclass
class CurveTask:
    """One curve to compute: a model (already loaded) on some samples with one attack."""

    model_label: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    attack: str
    epsilons: Sequence[float]
    params: dict[str, Any] = field(default_factory=dict)
    probe: bool = False


class CurveRunner:
    """Computes several curves one after the other in a background thread.

    The thread never touches a user interface: it writes into this object (under a lock), and a
    front end polls :meth:`snapshot` (e.g. a Streamlit fragment with ``run_every``). :meth:`stop`
    stops at the next batch, epsilon or PGD chunk; the finished part stays available.
    """

    def __init__(self, tasks: Sequence[CurveTask], *, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device | None = None, seed: int = 0) -> None:
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._results: list[dict[str, Any]] = []
        self._partial: dict[str, Any] | None = None
        self._errors: list[str] = []
        self._progress = 0.0
        self._current: str | None = None
        self._done = False
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.id = uuid.uuid4().hex

    def start(self) -> CurveRunner:
        self._thread = threading.Thread(target=self._run, name="jacreg-curves", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        """Finished results, the growing partial curve, errors, progress in [0, 1], done flag."""
        with self._lock:
            return {"results": list(self._results), "partial": dict(self._partial) if self._partial else None,
                    "errors": list(self._errors), "progress": self._progress, "current": self._current,
                    "done": self._done, "stopped": self._stop.is_set(),
                    "seconds": time.time() - self.started}

    def _compute(self, task: CurveTask, on_event: EventFn) -> dict[str, Any]:
        """One task's curve (a subclass may compute it elsewhere, e.g. on a Ray cluster)."""
        if task.probe:
            return masking_probe(task.model, task.x, task.y, batch_size=self.batch_size, device=self.device,
                                 on_event=on_event, should_stop=self._stop.is_set, seed=self.seed)
        return curve(task.model, task.x, task.y, task.attack, task.epsilons, batch_size=self.batch_size,
                     device=self.device, on_event=on_event, should_stop=self._stop.is_set, seed=self.seed,
                     **task.params)

    def _run(self) -> None:
        n = len(self.tasks)
        try:
            for i, task in enumerate(self.tasks):
                if self._stop.is_set():
                    break
                label = f"{task.model_label} / {get_attack(task.attack).title}"
                with self._lock:
                    self._current = label
                    self._partial = None

                def on_event(ev: dict[str, Any], i: int = i, task: CurveTask = task) -> None:
                    with self._lock:
                        if "progress" in ev:
                            self._progress = (i + float(ev["progress"])) / n
                        if ev.get("event") == "batch":
                            spec = get_attack(task.attack)
                            self._partial = {"model": task.model_label, "attack": spec.name,
                                             "title": spec.title, "norm": spec.norm,
                                             "epsilons": ev["epsilons"], "accuracy": ev["accuracy"],
                                             "samples": ev["done"], "probe": task.probe}

                try:
                    res = self._compute(task, on_event)
                except JacregError as exc:
                    with self._lock:
                        self._errors.append(f"{label}: {exc}")
                    continue
                except Exception as exc:  # keep the thread alive for the next task; report it
                    with self._lock:
                        self._errors.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                res["model"] = task.model_label
                with self._lock:
                    if res["samples"] > 0:
                        self._results.append(res)
                    self._partial = None
                    self._progress = (i + 1) / n
        finally:
            with self._lock:
                self._done = True
                self._current = None
