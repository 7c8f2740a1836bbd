"""The Ray backend's worker: a Ray actor that runs one long call at a time and buffers its events.

It runs on a node of the cluster, in a process Ray starts with jacreg shipped by the caller
(:mod:`jacreg.jobs.remote`, which drives it). A call (:meth:`Worker.train`, :meth:`Worker.curve`)
runs in one thread of the actor; :meth:`Worker.poll` runs in another and hands the caller the
events it has not seen yet, with the bytes of each checkpoint written meanwhile (they travel
through Ray's object store). Nothing here imports Ray at module level: only a worker has it for sure.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device import describe, pick
from ..events import Event
from ..fileio import atomic_write_bytes
from ..robustness import curve, masking_probe
from ..training import TrainConfig, state_path, train

__all__ = ["Worker"]


class Worker:
    """One Ray actor: runs one long call at a time (train or curve) and buffers its events.

    ``poll`` runs concurrently (a threaded actor): it waits until the call has an event the caller
    has not seen, or ends, then returns them with the bytes of any checkpoint written meanwhile.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._call = ""
        self._items: list[tuple[Event, Any]] = []  # not yet received, from index self._base on
        self._base = 0
        self._finished = False
        self._stop = threading.Event()
        self._device = torch.device("cpu")

    def info(self, device: str) -> dict[str, Any]:
        """Where this worker runs and which device it uses (ConfigError when that device is absent)."""
        import ray

        self._device = pick(device)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        return {"backend": "ray", "node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self._device), "device_name": describe(self._device),
                "ray_version": ray.__version__, "python": platform.python_version(),
                "torch": torch.__version__, "package": str(Path(__file__).resolve().parents[1])}

    def _begin(self, call_id: str) -> None:
        with self._cond:
            self._call, self._items, self._base, self._finished = call_id, [], 0, False
            self._stop.clear()
            self._cond.notify_all()

    def _push(self, event: Event, payload: Any = None) -> None:
        with self._cond:
            self._items.append((dict(event), payload))
            self._cond.notify_all()

    def _end(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def poll(self, call_id: str, cursor: int, timeout: float) -> tuple[list[tuple[Event, Any]], bool]:
        """The events of call ``call_id`` from index ``cursor`` on (waiting up to ``timeout`` s for
        one), and whether the call has ended. Events before ``cursor`` were received: dropped."""
        with self._cond:
            self._cond.wait_for(lambda: self._call == call_id and (
                self._base + len(self._items) > cursor or self._finished), timeout)
            if self._call != call_id:
                return [], False
            received = max(0, cursor - self._base)
            del self._items[:received]
            self._base += received
            return self._items[max(0, cursor - self._base):], self._finished

    def stop(self) -> None:
        """Ask the running call to stop at its next event (train) or batch (curve)."""
        self._stop.set()

    def train(self, call_id: str, config: dict[str, Any], state: bytes | None) -> dict[str, Any]:
        """:func:`jacreg.training.train` in a temporary folder; each checkpoint's bytes go with its event."""
        self._begin(call_id)
        work = Path(tempfile.mkdtemp(prefix="jacreg-ray-"))
        try:
            out = work / Path(str(config["out"])).name
            cfg = TrainConfig.from_dict({**config, "out": str(out), "events": None,
                                         "resume": state is not None, "device": str(self._device)})
            if state is not None:
                atomic_write_bytes(state_path(out), state)

            def on_event(event: Event) -> None:
                payload = None
                if event.get("event") == "checkpoint":
                    payload = (out.read_bytes(), state_path(out).read_bytes())
                self._push(event, payload)
                if self._stop.is_set() and event.get("event") in ("start", "step", "epoch", "checkpoint"):
                    raise KeyboardInterrupt("stopped by the caller")

            try:
                return train(cfg, on_event)
            except KeyboardInterrupt:  # train() has sent its "stopped" event
                return {"stopped": True}
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self._end()

    def curve(self, call_id: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str,
              epsilons: Sequence[float] | None, probe: bool, options: dict[str, Any]) -> dict[str, Any]:
        """:func:`jacreg.robustness.curve` (or ``masking_probe``) on this worker's device."""
        self._begin(call_id)
        try:
            common: dict[str, Any] = {"device": self._device, "on_event": self._push,
                                      "should_stop": self._stop.is_set}
            if probe:
                return masking_probe(model, x, y, **common, **options)
            return curve(model, x, y, attack, epsilons, **common, **options)
        finally:
            self._end()
