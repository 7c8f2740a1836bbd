"""A handle on one run folder: its files, its status reconciled with its process, its progress.

A job recorded as running whose process is gone (or whose pid now belongs to another process) is
settled from the files: ``stopped`` if a stop was requested, ``finished`` if the current attempt
wrote a ``done`` event (or, for non-training jobs, its result), else ``failed`` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..fileio import atomic_write_json, read_jsonl
from .folders import (
    CONFIG_FILE,
    EVENTS_FILE,
    LOG_FILE,
    MODEL_FILE,
    RESULT_FILE,
    STATUS_FILE,
    locked,
    read_json,
    update_status,
)
from .history import Progress, progress_from_events
from .process import is_job_process, job_processes, proc_start_time
from .results import record_robustness

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "KINDS", "QUEUED_TIMEOUT_S", "Job", "Kind", "State", "settle",
           "watch"]

State = Literal["queued", "running", "finished", "failed", "stopped"]
Kind = Literal["train", "robustness"]

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
FINAL_STATES: tuple[str, ...] = ("finished", "failed", "stopped")
KINDS: tuple[str, ...] = ("train", "robustness")

#: A queued job with no process after this many seconds never started (its starter died).
QUEUED_TIMEOUT_S = 60.0

#: The fields of status.json and their types; a field of another type is treated as absent.
STATUS_FIELDS: dict[str, tuple[type, ...]] = {
    "state": (str,), "pid": (int,), "pgid": (int,), "proc_start": (int,), "returncode": (int,),
    "created": (int, float), "started": (int, float), "ended": (int, float), "events_offset": (int,),
    "attempt": (int,), "stop_requested": (bool,), "message": (str,), "argv": (list,),
}
KNOWN_STATES = (*ACTIVE_STATES, *FINAL_STATES)


def clean_status(raw: object) -> dict[str, Any]:
    """status.json as trusted data: a dict whose fields have their documented types. A file that is
    not a JSON object, or a field of the wrong type, is marked ``"corrupt": True``."""
    if not isinstance(raw, dict):
        return {"corrupt": True}
    out: dict[str, Any] = {}
    bad = False
    for key, value in raw.items():
        kinds = STATUS_FIELDS.get(key)
        if kinds is None:
            continue
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            bad = bad or value is not None
            continue
        out[key] = value
    if out.get("state") not in (None, *KNOWN_STATES):
        out.pop("state")
        bad = True
    if bad:
        out["corrupt"] = True
    return out


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _read_raw_status(path: Path) -> object:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(1 << 20).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError):
        return None


#: The processes this process started, by job id (their exit codes are collected here).
WATCHERS: dict[str, subprocess.Popen[bytes]] = {}
WATCHERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Job:
    """A handle on one run folder; every method reads the files afresh."""

    id: str
    dir: Path

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def status_path(self) -> Path:
        return self.dir / STATUS_FILE

    @property
    def events_path(self) -> Path:
        return self.dir / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / MODEL_FILE

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT_FILE

    @property
    def resume_state_path(self) -> Path:
        """The optimiser state the CLI's ``--resume`` continues from (``<out>.state.pt``)."""
        return self.dir / (MODEL_FILE + ".state.pt")

    def job_config(self) -> dict[str, Any]:
        """``config.json``: ``{"kind", "name", "config", "argv", "created"}``."""
        return read_json(self.config_path)

    @property
    def kind(self) -> str:
        return str(self.job_config().get("kind", "train"))

    @property
    def name(self) -> str:
        return str(self.job_config().get("name") or self.id)

    @property
    def config(self) -> dict[str, Any]:
        """The training (or robustness) options this job was started with."""
        return dict(self.job_config().get("config") or {})

    def raw_status(self) -> dict[str, Any]:
        """``status.json`` as written (typed: see :func:`clean_status`), without reconciling it with
        the process."""
        return clean_status(_read_raw_status(self.status_path))

    def events(self) -> list[dict[str, Any]]:
        """Every event the job wrote (all attempts, in order)."""
        return read_jsonl(self.events_path)

    def attempt_events(self, status: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The events of the current attempt (after the last start or resume)."""
        status = self.raw_status() if status is None else status
        offset = status.get("events_offset")
        try:
            size = self.events_path.stat().st_size
        except OSError:
            return []
        if not isinstance(offset, int) or offset <= 0 or offset > size:
            return self.events()
        return read_jsonl(self.events_path, offset)

    def processes(self) -> list[int]:
        """The live processes of this job, found by its id in their environment."""
        return job_processes(self.id)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the subprocess's output."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        # tqdm redraws with carriage returns: keep the last state of each line
        rows = [r.split("\r")[-1] for r in text.split("\n")]
        return "\n".join([r for r in rows if r.strip()][-lines:])

    def error_message(self, status: Mapping[str, Any] | None = None, *, fallback: bool = True) -> str | None:
        """Why the job failed: its ``error`` event, else an ``error:`` line of its log, else (with
        ``fallback``) the log's last line, else None."""
        status = self.raw_status() if status is None else status
        for ev in reversed(self.attempt_events(status)):
            if ev.get("event") == "error":
                return str(ev.get("message") or "error")
        tail = [r.strip() for r in self.log_tail(40).splitlines() if r.strip() and not r.startswith("$ ")]
        for row in reversed(tail):
            if row.lower().startswith("error"):
                return row
        return tail[-1] if tail and fallback else None

    def status(self) -> dict[str, Any]:
        """The job's status, reconciled with its process.

        A job recorded as running whose process is gone (or whose pid is not verifiably the job's
        process any more) is settled from the files: ``stopped`` if a stop was requested,
        ``finished`` if the current attempt wrote a ``done`` event (or, for non-training jobs, its
        result), else ``failed`` with the reason (the ``error`` event or the log's last line). A
        corrupt status file is rebuilt from the job's live processes (found by its id) or, when
        none is left, settled as above. The settled state is written back to ``status.json``.
        """
        status = self.raw_status()
        state = status.get("state")
        if status.get("corrupt") or (state == "running" and not self._own_process_alive(status)):
            with locked(self.dir):
                status = self.raw_status()
                if status.get("corrupt"):
                    status = self._repair(status)
                elif status.get("state") == "running" and not self._own_process_alive(status):
                    status.update(settle(self, status, returncode=self._exit_code(status)))
                    atomic_write_json(self.status_path, status)
                    after_finish(self, status)
        elif state == "queued" and not status.get("pid"):
            age = time.time() - float(status.get("created") or 0)
            if age > QUEUED_TIMEOUT_S:
                status = update_status(self.dir, state="failed", ended=time.time(),
                                       message="the job never started (its starting process ended)")
        return status

    def _own_process_alive(self, status: Mapping[str, Any]) -> bool:
        return is_job_process(status.get("pid"), status.get("proc_start"), self.id)

    def _exit_code(self, status: Mapping[str, Any]) -> int | None:
        rc = status.get("returncode")
        with WATCHERS_LOCK:
            proc = WATCHERS.get(self.id)
        if proc is not None and proc.pid == status.get("pid"):  # our child: its exit code
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = proc.wait(timeout=5)
        return rc

    def _repair(self, status: dict[str, Any]) -> dict[str, Any]:
        """A status file that cannot be trusted: rebuild it from the job's processes and files."""
        status = {k: v for k, v in status.items() if k != "corrupt"}
        alive = self.processes()
        leaders = [pid for pid in alive if _group_of(pid) == pid] or alive
        if leaders:
            status.update(state="running", pid=leaders[0], pgid=leaders[0],
                          proc_start=proc_start_time(leaders[0]),
                          message="status.json was corrupt; rebuilt from the running process")
        else:
            status["state"] = "running"
            status.update(settle(self, status, returncode=None))
            reason = status.get("message") or "settled from its files"
            status["message"] = f"status.json was corrupt; {reason}"
        atomic_write_json(self.status_path, status)
        return status

    @property
    def state(self) -> str:
        return str(self.status().get("state", "failed"))

    def is_active(self) -> bool:
        """Queued or running."""
        return self.state in ACTIVE_STATES

    def progress(self, events: Sequence[Mapping[str, Any]] | None = None,
                 status: Mapping[str, Any] | None = None, now: float | None = None) -> Progress:
        """Steps done, ETA and the last epoch's metrics (see :func:`progress_from_events`)."""
        status = self.raw_status() if status is None else status
        events = self.events() if events is None else events
        return progress_from_events(events, started=status.get("started"), now=now)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Block until the job is no longer active (or ``timeout`` seconds); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.get("state") not in ACTIVE_STATES:
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(poll)


def settle(job: Job, status: Mapping[str, Any], returncode: int | None) -> dict[str, Any]:
    """The final fields of a job whose process has ended."""
    events = job.attempt_events(status)
    done = any(e.get("event") == "done" for e in events)
    if job.kind != "train":
        done = done or (returncode == 0 and job.result_path.is_file()) or (
            returncode is None and job.result_path.is_file()
            and job.result_path.stat().st_mtime >= float(status.get("started") or 0))
    changes: dict[str, Any] = {"ended": status.get("ended") or time.time(), "returncode": returncode}
    if status.get("stop_requested"):
        changes.update(state="stopped", message="stopped by the user")
    elif any(e.get("event") == "stopped" for e in events) and not done:
        changes.update(state="stopped", message="stopped by a signal")
    elif done and returncode in (0, None):
        changes.update(state="finished", message=None)
    else:
        reason = job.error_message(status, fallback=returncode is not None and returncode > 0)
        if returncode is not None and returncode < 0:
            try:
                sig = signal.Signals(-returncode).name
            except ValueError:
                sig = f"signal {-returncode}"
            reason = f"killed by {sig}" + (f" ({reason})" if reason else "")
        elif returncode is None:
            reason = "the process ended without finishing (killed?)" + (f": {reason}" if reason else "")
        changes.update(state="failed", message=reason or f"exit code {returncode}")
    return changes


def watch(job: Job, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the process (no zombie left behind) and record its exit code."""
    try:
        rc = proc.wait()
    finally:
        with WATCHERS_LOCK:
            if WATCHERS.get(job.id) is proc:
                del WATCHERS[job.id]
    with locked(job.dir):
        status = job.raw_status()
        if status.get("pid") != proc.pid:
            return  # a newer attempt took over
        status["returncode"] = rc
        settled = status.get("state") in ACTIVE_STATES
        if settled:
            status.update(settle(job, status, returncode=rc))
        atomic_write_json(job.status_path, status)
        if settled:
            after_finish(job, status)


def after_finish(job: Job, status: Mapping[str, Any]) -> None:
    """A finished robustness job files its curve with the model's stored results (once)."""
    if status.get("state") != "finished" or job.kind != "robustness" or not job.result_path.is_file():
        return
    ckpt = job.config.get("checkpoint")
    if not ckpt:
        return
    result = read_json(job.result_path)
    with contextlib.suppress(OSError):
        record_robustness(ckpt, {**result, "job": job.id})
