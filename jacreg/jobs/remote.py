"""Ray backend: training runs and robustness curves on a Ray cluster, the caller as the front end.

The caller (the command line, or the dashboard's process) connects to a Ray cluster, starts one
Ray actor (:class:`jacreg.jobs.ray_worker.Worker`) that asks for a GPU when the cluster has one,
and hands it the work: :func:`jacreg.training.train` with a :class:`~jacreg.training.TrainConfig`,
or :func:`jacreg.robustness.curve` with a model and its test samples. The worker buffers the progress
events of that call; the caller long-polls them (one round trip per batch of events, answered as
soon as an event exists), so a page or a progress bar sees them as for a local run. What moves
over the wire:

* to the worker: jacreg's own code (Ray ``py_modules``: the package folder of the caller, so both
  run the same version; the cluster needs only jacreg's dependencies), the config, and for
  ``resume`` the caller's ``<out>.state.pt``; for a curve the model and the samples;
* back: the events, and after every epoch the checkpoint (safetensors with its card) and the
  resumable state, as bytes through Ray's object store. The caller checks the checkpoint with the
  safe loader, adds where it ran to the card (``backend``: address, node, device) and writes both
  files atomically at ``config.out`` and ``<out>.state.pt``; the worker writes only to its own
  temporary folder. No shared file system is needed.

Stopping (Ctrl-C, or SIGTERM through ``stop_on_sigterm`` in the command) asks the worker to stop at
its next event, takes the files of an epoch that finished meanwhile, and ends the actor; a killed
worker or a lost connection raises :class:`RemoteError`. Either way the caller's files are those of
the last finished epoch, whole, and ``resume`` continues from them.

Ray is optional (``pip install jacreg[ray]``): it is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_checkpoint, save_checkpoint
from ..device import eval_copy
from ..errors import CheckpointError, ConfigError, JacregError
from ..events import Event, EventFn, sink
from ..fileio import append_jsonl, atomic_write_bytes
from ..robustness import CurveRunner, CurveTask
from ..training import TrainConfig, state_path
from .ray_worker import Worker

__all__ = ["ADDRESS_ENV", "BACKENDS", "CARD_KEYS", "ClusterInfo", "RayCurveRunner", "RaySession",
           "RemoteError", "backend_args", "check_cluster", "check_remote_config", "connect",
           "describe_worker", "disconnect", "import_ray", "ray_address", "train_remote", "where_ran"]

#: Where the command line and the app take the Ray address from when none is given.
ADDRESS_ENV = "JACREG_RAY_ADDRESS"
BACKENDS: tuple[str, ...] = ("local", "ray")
#: The package folder shipped to the workers (Ray ``py_modules``).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
POLL_S = 1.0               # a poll waits at most this long on the worker for the next event
ANSWER_TIMEOUT_S = 60.0    # no answer to a poll for this long (beyond POLL_S): the connection is lost
START_TIMEOUT_S = 300.0    # the worker must start (and get its CPU/GPU) within this
STOP_GRACE_S = 5.0         # after a stop, wait this long for the worker's last events and files
PROBE_TIMEOUT_S = 3.0      # TCP check of the address before Ray tries (Ray itself retries for minutes)

#: What a checkpoint's card records under ``backend`` about where it was trained.
CARD_KEYS = ("backend", "address", "node_ip", "node_id", "hostname", "device", "device_name", "gpu_ids",
             "ray_version")

_LOCK = threading.Lock()
_connected: str | None = None


class RemoteError(JacregError):
    """The Ray cluster cannot be reached, the connection was lost, or the worker died."""


# --------------------------------------------------------------------------------------------------
# Connecting


def import_ray() -> ModuleType:
    """The ``ray`` module, or a JacregError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the Ray backend needs Ray: pip install 'jacreg[ray]' (or pip install "
                          "'ray[client]==2.60.*')") from exc
    return ray


def ray_address(address: str | None = None) -> str:
    """The cluster's address: ``address``, else ``$JACREG_RAY_ADDRESS``; checked for its form.

    ``HOST:PORT`` is the head's GCS port (``ray start --head --port PORT``), for a caller on a node
    of the cluster (or the head's own machine); ``ray://HOST:PORT`` is the head's Ray Client port
    (``--ray-client-server-port``, default 10001), for a caller elsewhere (a laptop).

    Raises:
        ConfigError: no address, or not of the form ``[ray://]HOST:PORT``.
    """
    text = (address if address is not None else os.environ.get(ADDRESS_ENV, "")).strip()
    if not text:
        raise ConfigError(f"the Ray backend needs an address: --ray-address HOST:PORT (or set {ADDRESS_ENV})")
    _split_address(text)
    return text


def _split_address(address: str) -> tuple[str, int]:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise ConfigError(f"not a Ray address: {address!r}; use HOST:PORT (the head's --port, e.g. "
                          "127.0.0.1:6379) or ray://HOST:PORT (its client port, e.g. ray://gpu-server:10001)")
    return host.strip("[]"), int(port)


def _probe(address: str) -> None:
    """Fail fast and clearly when nothing listens at the address (Ray would retry for minutes)."""
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RemoteError(f"cannot reach the Ray head at {address} ({reason}): start it on the GPU "
                          f"machine with `ray start --head --port {port}` and check the address and "
                          "firewall") from None


def _runtime_env() -> dict[str, Any]:
    """What every worker of this connection gets: this jacreg (its code, not its dependencies)."""
    return {"py_modules": [str(PACKAGE_DIR)], "excludes": ["__pycache__", "*.pyc"]}


def connect(address: str | None = None) -> ModuleType:
    """Connect this process to the Ray cluster at ``address`` (once; again only for another address).

    The connection ships this jacreg package to the workers. A SIGTERM handler installed before
    (the commands' ``stop_on_sigterm``) is restored: Ray replaces it with one that kills the process.

    Returns:
        The ``ray`` module, connected.

    Raises:
        ConfigError: Ray is not installed, or the address is malformed.
        RemoteError: nothing listens at the address, or Ray refuses the connection.
    """
    global _connected
    ray = import_ray()
    address = ray_address(address)
    _probe(address)
    with _LOCK:
        if ray.is_initialized():
            if _connected == address:
                return ray
            ray.shutdown()
            _connected = None
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(address=address, runtime_env=_runtime_env(), namespace="jacreg", log_to_driver=False,
                     logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "not connected"
            hint = ("" if address.startswith("ray://") else
                    "; from a machine outside the cluster use the head's client port: ray://HOST:10001")
            raise RemoteError(f"cannot connect to the Ray cluster at {address}: "
                              f"{_first_line(exc)}{hint}") from None
        finally:
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)
        _connected = address
    return ray


def disconnect() -> None:
    """End this process's connection to Ray, if any (before its cluster goes away: a driver whose
    cluster vanished is ended by Ray after a minute)."""
    global _connected
    with _LOCK:
        if _connected is not None or ("ray" in sys.modules and sys.modules["ray"].is_initialized()):
            import_ray().shutdown()
        _connected = None


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What a Ray cluster offers (from :func:`check_cluster`)."""

    address: str
    ray_version: str
    nodes: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        gpus = f"{self.gpus:g} GPU(s)" if self.gpus else "no GPU (jobs run on CPU)"
        return f"Ray {self.ray_version} at {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs, {gpus}"


def check_cluster(address: str | None = None) -> ClusterInfo:
    """Connect (see :func:`connect`) and report the cluster's nodes, CPUs and GPUs.

    Raises:
        ConfigError, RemoteError: as :func:`connect`.
    """
    ray = connect(address)
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception as exc:  # noqa: BLE001
        raise RemoteError(f"the Ray cluster at {address} does not answer: {_first_line(exc)}") from None
    return ClusterInfo(ray_address(address), str(ray.__version__), nodes, float(resources.get("CPU", 0)),
                       float(resources.get("GPU", 0)))


def backend_args(address: str | None) -> list[str]:
    """Command-line arguments that run a command on the Ray cluster at ``address`` (none for local)."""
    return [] if not address else ["--backend", "ray", "--ray-address", ray_address(address)]


def where_ran(events: Sequence[Event]) -> str | None:
    """Where the latest attempt of a run went, from its ``start`` events: e.g. ``"on Ray at
    127.0.0.1:6379: node 10.0.0.5 (gpu1), device cuda:0 (NVIDIA H100)"``; None for a local run."""
    starts = [e for e in events if e.get("event") == "start"]
    info = starts[-1].get("backend") if starts else None
    return describe_worker(info) if isinstance(info, dict) else None


def describe_worker(info: dict[str, Any]) -> str:
    """A worker's :attr:`RaySession.info` in words (for progress lines and pages)."""
    return (f"on Ray at {info.get('address')}: node {info.get('node_ip')} ({info.get('hostname')}), "
            f"device {info.get('device_name')}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _worker_device(device: str) -> str:
    """The device a worker should use: Ray shows a worker only its own GPU, so any cuda:N is cuda."""
    return "cuda" if str(device).startswith("cuda") else str(device or "auto")


# --------------------------------------------------------------------------------------------------
# The caller's side


class RaySession:
    """One worker on a Ray cluster, held for one or more calls; use as a context manager.

    Args:
        address: ``[ray://]HOST:PORT`` (default ``$JACREG_RAY_ADDRESS``).
        device: the device the worker uses (``auto``, ``cpu``, ``cuda``; ``cuda:N`` means ``cuda``:
            Ray gives the worker one GPU). A GPU is requested when the cluster has one, unless
            ``device`` is ``cpu``.

    Attributes:
        info: where the worker runs: ``node_ip``, ``node_id``, ``hostname``, ``pid``, ``gpu_ids``,
            ``device``, ``device_name``, ``ray_version``, plus ``address``.

    Raises:
        ConfigError, RemoteError: see :func:`connect`; RemoteError also when no worker starts
            within ``START_TIMEOUT_S`` (no free CPU/GPU) or it cannot import jacreg's dependencies.
    """

    def __init__(self, address: str | None = None, *, device: str = "auto") -> None:
        self.address = ray_address(address)
        self._ray = connect(self.address)
        device = _worker_device(device)
        gpus = float(self._ray.cluster_resources().get("GPU", 0))
        actor_class = self._ray.remote(Worker).options(
            num_cpus=1, num_gpus=1 if gpus >= 1 and device in ("auto", "cuda") else 0, max_concurrency=4,
            max_restarts=0)
        self._actor: Any = actor_class.remote()
        try:
            self.info: dict[str, Any] = {**self._get(self._actor.info.remote(device), START_TIMEOUT_S,
                                                     "starting the worker"), "address": self.address}
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the worker (frees its GPU); its temporary files go with it."""
        actor, self._actor = getattr(self, "_actor", None), None
        if actor is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)

    def _get(self, ref: Any, timeout: float, what: str) -> Any:
        """``ray.get`` with Ray's failures as JacregErrors (a worker's own JacregError as it is)."""
        exc_mod = self._ray.exceptions
        try:
            return self._ray.get(ref, timeout=timeout)
        except exc_mod.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, JacregError):
                raise type(cause)(f"on the Ray worker: {cause}") from None
            if isinstance(cause, ImportError):
                raise RemoteError(f"the Ray worker cannot import {getattr(cause, 'name', '')!s}: install "
                                  "jacreg's dependencies on the cluster (pip install 'jacreg[ray]' there, or "
                                  "the Docker image)") from None
            raise RemoteError(f"{what} failed on the Ray worker: {type(cause).__name__}: {cause}") from None
        except exc_mod.GetTimeoutError:
            if what == "starting the worker":
                raise RemoteError(f"no Ray worker started within {START_TIMEOUT_S:.0f} s at {self.address}: "
                                  "the cluster has no free CPU or GPU") from None
            raise RemoteError(f"lost the connection to the Ray cluster at {self.address}: no answer for "
                              f"{timeout:.0f} s while {what}") from None
        except exc_mod.ActorUnavailableError as exc:
            raise RemoteError(f"lost the connection to the Ray worker at {self.address} while {what}: "
                              f"{_first_line(exc)}") from None
        except exc_mod.RayActorError as exc:
            raise RemoteError(f"the Ray worker died while {what} (killed, out of memory, or its node was "
                              f"lost): {_first_line(exc)}") from None
        except exc_mod.RayError as exc:
            raise RemoteError(f"Ray failed while {what}: {_first_line(exc)}") from None
        except ConnectionError as exc:
            raise RemoteError(f"lost the connection to the Ray cluster at {self.address}: "
                              f"{_first_line(exc)}") from None

    def _stream(self, method: str, args: Sequence[Any], deliver: Callable[[Event, Any], None],
                what: str, should_stop: Callable[[], bool] | None = None) -> Any:
        """Run ``method`` on the worker, hand each event (and payload) to ``deliver`` in order,
        return its result. KeyboardInterrupt stops the worker, delivers what it sent, re-raises."""
        if self._actor is None:
            raise RemoteError("this Ray session is closed")
        call_id = uuid.uuid4().hex
        ref = getattr(self._actor, method).remote(call_id, *args)
        cursor, stop_sent = 0, False
        try:
            while True:
                if should_stop is not None and not stop_sent and should_stop():
                    self._actor.stop.remote()
                    stop_sent = True
                items, finished = self._get(self._actor.poll.remote(call_id, cursor, POLL_S),
                                            POLL_S + ANSWER_TIMEOUT_S, what)
                for event, payload in items:
                    cursor += 1
                    deliver(event, payload)
                if finished:
                    return self._get(ref, ANSWER_TIMEOUT_S, what)
        except KeyboardInterrupt:
            self._drain(call_id, cursor, deliver)
            raise

    def _drain(self, call_id: str, cursor: int, deliver: Callable[[Event, Any], None]) -> None:
        """After a stop: the worker's last events (and an epoch's files that finished meanwhile)."""
        with contextlib.suppress(JacregError):
            self._actor.stop.remote()
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                items, finished = self._get(self._actor.poll.remote(call_id, cursor, 0.2), STOP_GRACE_S,
                                            "stopping")
                for event, payload in items:
                    cursor += 1
                    deliver(event, payload)
                if finished:
                    return

    def train(self, config: TrainConfig, on_event: EventFn | None = None) -> dict[str, Any]:
        """:func:`jacreg.training.train` on the worker; the files land at ``config.out`` here.

        Events are delivered as the local run's (also appended to ``config.events``), with the
        caller's paths and clock (``worker_time`` keeps the worker's); ``start`` gains ``backend``
        (:attr:`info`). With ``config.resume`` the state at ``<out>.state.pt`` is sent along.
        """
        check_remote_config(config)
        state = _read_state(config) if config.resume else None
        emit = _event_writer(config, on_event)
        received: list[Any] = []

        def deliver(event: Event, payload: Any) -> None:
            if payload is not None:
                self._write_checkpoint(config, *payload)
            received.append(event.get("event"))
            emit(self._localise(config, event))

        wire = {**config.to_dict(), "events": None}
        try:
            result = self._stream("train", (wire, state), deliver, "training")
        except BaseException as exc:
            if not {"error", "stopped"} & set(received):
                emit({"event": "stopped" if isinstance(exc, KeyboardInterrupt) else "error",
                      "message": str(exc) or type(exc).__name__, "type": type(exc).__name__})
            raise
        return {**result, "path": str(config.out), "backend": self.info}

    def curve(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str,
              epsilons: Sequence[float] | None = None, *, probe: bool = False,
              on_event: EventFn | None = None, should_stop: Callable[[], bool] | None = None,
              **options: Any) -> dict[str, Any]:
        """:func:`jacreg.robustness.curve` (``probe=True``: ``masking_probe``) on the worker.

        The model and the samples are sent; ``options`` are the keyword arguments of the local
        function (``batch_size``, ``seed``, attack parameters). Returns its result dict.
        """
        emit = sink(on_event)
        wire_model, _ = eval_copy(model, "cpu")  # never moves the caller's (cached) model
        eps = None if epsilons is None else list(epsilons)
        args = (wire_model, x.cpu(), y.cpu(), attack, eps, probe, options)
        return dict(self._stream("curve", args, lambda event, payload: emit(event), "computing the curve",
                                 should_stop))

    def _localise(self, config: TrainConfig, event: Event) -> Event:
        """A worker's event as the caller's: its paths, its clock, where it ran."""
        out = {**event, "worker_time": event.get("time"), "time": time.time()}
        kind = out.get("event")
        if kind == "start":
            out["config"] = config.to_dict()
            out["backend"] = self.info
        if kind in ("checkpoint", "done"):
            out["path"] = str(config.out)
        if kind == "done" and isinstance(out.get("metrics"), dict):
            out["metrics"] = {**out["metrics"], "path": str(config.out)}
        return out

    def _write_checkpoint(self, config: TrainConfig, model_bytes: bytes, state_bytes: bytes) -> None:
        """Check the checkpoint that came over the wire, note where it ran, write both files atomically."""
        model, card = load_checkpoint(model_bytes)
        for key in ("format", "sha256"):
            card.pop(key, None)
        card["config"] = config.to_dict()
        card["command"] = config.command() + " " + " ".join(backend_args(self.address))
        card["backend"] = {k: self.info.get(k) for k in CARD_KEYS}
        save_checkpoint(model, card, config.out)
        atomic_write_bytes(state_path(config.out), state_bytes)


def check_remote_config(config: TrainConfig) -> TrainConfig:
    """Validate a config to run elsewhere: every field as :meth:`TrainConfig.validate`, except that
    the device need not exist here (the worker checks it). Returns ``config``.

    Raises:
        ConfigError: a value is out of range (the message names the option).
    """
    device = str(config.device or "auto")
    if device.split(":")[0] not in ("auto", "cpu", "cuda", "mps") or (
            ":" in device and not device.split(":", 1)[1].isdigit()):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    dataclasses.replace(config, device="cpu").validate()
    return config


def _read_state(config: TrainConfig) -> bytes:
    path = state_path(config.out)
    if not path.is_file():
        raise CheckpointError(f"--resume: no saved state at {path}; start without --resume")
    return path.read_bytes()


def _event_writer(config: TrainConfig, on_event: EventFn | None) -> EventFn:
    emit = sink(on_event)

    def write(event: Event) -> None:
        event = {**event, "time": event.get("time", time.time())}
        if config.events:
            append_jsonl(config.events, event)
        emit(event)

    return write


def train_remote(config: TrainConfig, address: str | None = None,
                 on_event: EventFn | None = None) -> dict[str, Any]:
    """Train on a Ray cluster as :func:`jacreg.training.train` does here (same events, same files).

    Args:
        config: the run; ``out``, ``events`` and ``resume`` refer to the caller's files.
        address: ``[ray://]HOST:PORT`` (default ``$JACREG_RAY_ADDRESS``).
        on_event: progress callback, as for a local run.

    Returns:
        The final metrics with ``path`` (the caller's ``config.out``) and ``backend`` (where it ran).

    Raises:
        ConfigError, CheckpointError: a bad config, or ``resume`` without a saved state (nothing
            starts); RemoteError: unreachable cluster, lost connection, killed worker (an ``error``
            event is written; the files of the last finished epoch stay); KeyboardInterrupt: stopped.
    """
    check_remote_config(config)
    if config.resume:
        _read_state(config)
    try:
        session = RaySession(address, device=config.device)
    except JacregError as exc:
        _event_writer(config, on_event)({"event": "error", "message": str(exc), "type": type(exc).__name__})
        raise
    with session:
        return session.train(config, on_event)


class RayCurveRunner(CurveRunner):
    """:class:`~jacreg.robustness.CurveRunner` whose curves are computed on a Ray cluster.

    Same interface (``start``, ``snapshot``, ``stop``); one worker serves all its tasks. A cluster
    that cannot be reached ends the run with that error in ``snapshot()["errors"]``.
    """

    def __init__(self, tasks: Sequence[CurveTask], *, address: str, batch_size: int = 250,
                 device: str | torch.device | None = None, seed: int = 0) -> None:
        super().__init__(tasks, batch_size=batch_size, device=device, seed=seed)
        self.address = ray_address(address)
        self._session: RaySession | None = None

    def _run(self) -> None:
        try:
            self._session = RaySession(self.address, device=str(self.device or "auto"))
        except JacregError as exc:
            with self._lock:
                self._errors.append(str(exc))
                self._done = True
            return
        try:
            super()._run()
        finally:
            self._session.close()

    def _compute(self, task: CurveTask, on_event: EventFn) -> dict[str, Any]:
        assert self._session is not None
        options: dict[str, Any] = {"batch_size": self.batch_size, "seed": self.seed}
        if not task.probe:
            options.update(task.params)
        return self._session.curve(task.model, task.x, task.y, task.attack, task.epsilons, probe=task.probe,
                                   on_event=on_event, should_stop=self._stop.is_set, **options)
