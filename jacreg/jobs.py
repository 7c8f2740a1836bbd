"""Background jobs: training (or a long robustness run) as a subprocess running the CLI.

Every job owns one run folder ``runs/<id>/`` (created with an exclusive ``mkdir``, so two users or
two jobs never share it)::

    runs/<id>/config.json          what was asked for (kind, config, name, argv)
    runs/<id>/status.json          state, pid, process start time, return code, times (atomic writes)
    runs/<id>/events.jsonl         the CLI's JSON-lines events (start, step, epoch, checkpoint, done, error)
    runs/<id>/model.safetensors    the checkpoint, rewritten atomically every epoch
    runs/<id>/log.txt              the subprocess's stdout and stderr

The job runs in its own process group (``start_new_session``), so it survives page reloads, browser
closes and even the death of the process that started it. A watcher thread in the starting process
records the exit code; when that process is gone, :meth:`Job.status` derives the state from the
files and the liveness of the recorded pid alone (a pid that is gone without a ``done`` event means
the job failed, e.g. after SIGKILL). Pid reuse is detected by comparing the process start time
recorded at launch with the one the kernel reports now.

Nothing here imports Streamlit or torch at module level; the app polls these files.

Example::

    job = start_job({"arch": "lenet", "dataset": "mnist-5k", "epochs": 2, "jr": 0.01})
    job.status()["state"]        # "running"
    job.progress()               # step, total, fraction, ETA, last epoch metrics
    stop_job(job.id); resume_job(job.id)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import catalog
from .errors import ConfigError, JacregError
from .fileio import atomic_write_json, read_jsonl

State = Literal["queued", "running", "finished", "failed", "stopped"]
Kind = Literal["train", "robustness"]

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
FINAL_STATES: tuple[str, ...] = ("finished", "failed", "stopped")
KINDS: tuple[str, ...] = ("train", "robustness")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "log.txt"
MODEL_FILE = "model.safetensors"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"

#: A queued job with no process after this many seconds never started (its starter died).
QUEUED_TIMEOUT_S = 60.0

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_WATCHERS: dict[str, subprocess.Popen[bytes]] = {}
_WATCHERS_LOCK = threading.Lock()


# --- configuration -----------------------------------------------------------------------------

def _training_module() -> Any | None:
    try:
        from . import training
    except ImportError:
        return None
    return training


def config_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A plain dict from a ``TrainConfig`` (or any dataclass) or a mapping."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(f"a job config must be a dict or a TrainConfig, got {type(config).__name__}")


def validate_train_config(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Check a training config in this process, with the same validation the CLI uses.

    Args:
        config: a ``TrainConfig`` or a dict of its fields (unknown keys are refused).

    Returns:
        The config as a dict (all fields, defaults filled in) without the paths a job sets itself
        (``out``, ``events``, ``resume``).

    Raises:
        ConfigError: a field is unknown, out of range or inconsistent (the message says which), or
            the requested device is not available here.
    """
    cfg = config_dict(config)
    training = _training_module()
    if training is not None and hasattr(training, "TrainConfig"):
        tc_cls = training.TrainConfig
        known = {f.name for f in dataclasses.fields(tc_cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        try:
            tc = tc_cls(**cfg)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"incomplete training config: {exc}") from None
        for name in ("validate", "check"):
            fn = getattr(tc, name, None)
            if callable(fn):
                fn()
                break
        cfg = dataclasses.asdict(tc)
    dev = cfg.get("device")
    if dev not in (None, "", "auto"):
        from .device import pick

        pick(str(dev))  # ConfigError when the accelerator is absent
    for key in ("out", "events", "resume"):
        cfg.pop(key, None)
    return cfg


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def train_argv(config: Mapping[str, Any] | Any) -> list[str]:
    """CLI arguments (after ``train``) for a training config, without ``--out``/``--events``.

    Uses ``TrainConfig.to_argv()`` when the library provides it; otherwise every field that is
    not None becomes ``--field-name value`` (booleans become a bare flag when true).
    """
    cfg = config_dict(config)
    for key in ("out", "events", "resume"):
        cfg.pop(key, None)
    training = _training_module()
    if training is not None and hasattr(training, "TrainConfig"):
        tc_cls = training.TrainConfig
        if hasattr(tc_cls, "to_argv"):
            known = {f.name for f in dataclasses.fields(tc_cls)}
            tc = tc_cls(**{k: v for k, v in cfg.items() if k in known})
            argv = list(tc.to_argv())
            return _strip_flags(argv, ("--out", "--events"), ("--resume",))
    argv: list[str] = []
    for key, value in cfg.items():
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(_flag(key))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [_flag(key), str(value)]
    return argv


def _strip_flags(argv: list[str], with_value: Sequence[str], bare: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in with_value:
            skip = True
            continue
        if a in bare or any(a.startswith(f + "=") for f in with_value):
            continue
        out.append(a)
    return out


# --- processes ---------------------------------------------------------------------------------

def _proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    try:
        fields = text[text.rindex(")") + 2:].split()
        return int(fields[19])  # field 22 of stat; fields[0] is field 3 (state)
    except (ValueError, IndexError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        return text[text.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process and, if ``start_time`` is given, the same process.

    A zombie (exited, not yet reaped) counts as dead; a pid reused by a newer process (its start
    time differs from the recorded one) counts as dead too.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _proc_state(pid) in ("Z", "X"):
        return False
    if start_time is not None:
        now = _proc_start_time(pid)
        if now is not None and now != start_time:
            return False
    return True


# --- run folders -------------------------------------------------------------------------------

def _root(runs_dir: str | os.PathLike[str] | None) -> Path:
    # absolute: the job runs in the project root, whatever the caller's working directory
    return (Path(runs_dir) if runs_dir is not None else catalog.runs_dir()).absolute()


def new_run_dir(runs_dir: str | os.PathLike[str] | None = None, prefix: str = "") -> Path:
    """Create a fresh, uniquely named run folder (timestamp + random suffix, exclusive mkdir)."""
    root = _root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", prefix).strip("-")[:40]
    for _ in range(100):
        rid = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        if stem:
            rid = f"{rid}-{stem}"
        path = root / rid
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise JacregError(f"could not create a unique run folder in {root}")


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on the run folder (read-modify-write of status.json)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(run_dir / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    with _locked(run_dir):
        status = _read_json(run_dir / STATUS_FILE)
        status.update(changes)
        atomic_write_json(run_dir / STATUS_FILE, status)
    return status


# --- the job -----------------------------------------------------------------------------------

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
        return _read_json(self.config_path)

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
        """``status.json`` as written, without reconciling it with the process."""
        return _read_json(self.status_path)

    def events(self) -> list[dict[str, Any]]:
        """Every event the job wrote (all attempts, in order)."""
        return read_jsonl(self.events_path)

    def attempt_events(self, status: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The events of the current attempt (after the last start or resume)."""
        status = self.raw_status() if status is None else status
        offset = int(status.get("events_offset") or 0)
        try:
            size = self.events_path.stat().st_size
        except OSError:
            return []
        if offset <= 0 or offset > size:
            return self.events()
        out: list[dict[str, Any]] = []
        with open(self.events_path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                with contextlib.suppress(ValueError):
                    rec = json.loads(raw)
                    if isinstance(rec, dict):
                        out.append(rec)
        return out

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

        A job recorded as running whose process is gone (or whose pid now belongs to another
        process) is settled from the files: ``stopped`` if a stop was requested, ``finished`` if
        the current attempt wrote a ``done`` event (or, for non-training jobs, its result), else
        ``failed`` with the reason (the ``error`` event or the log's last line). The settled state
        is written back to ``status.json``.
        """
        status = self.raw_status()
        state = status.get("state")
        if state == "running" and not pid_alive(status.get("pid"), status.get("proc_start")):
            with _locked(self.dir):
                status = self.raw_status()
                if status.get("state") == "running" and not pid_alive(status.get("pid"),
                                                                      status.get("proc_start")):
                    rc = status.get("returncode")
                    with _WATCHERS_LOCK:
                        proc = _WATCHERS.get(self.id)
                    if proc is not None and proc.pid == status.get("pid"):  # our child: its exit code
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            rc = proc.wait(timeout=5)
                    status.update(_settle(self, status, returncode=rc))
                    atomic_write_json(self.status_path, status)
                    _after_finish(self, status)
        elif state == "queued" and not status.get("pid"):
            age = time.time() - float(status.get("created") or 0)
            if age > QUEUED_TIMEOUT_S:
                status = _update_status(self.dir, state="failed", ended=time.time(),
                                        message="the job never started (its starting process ended)")
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


def _settle(job: Job, status: Mapping[str, Any], returncode: int | None) -> dict[str, Any]:
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


def _watch(job: Job, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the process (no zombie left behind) and record its exit code."""
    try:
        rc = proc.wait()
    finally:
        with _WATCHERS_LOCK:
            if _WATCHERS.get(job.id) is proc:
                del _WATCHERS[job.id]
    with _locked(job.dir):
        status = job.raw_status()
        if status.get("pid") != proc.pid:
            return  # a newer attempt took over
        status["returncode"] = rc
        settled = status.get("state") in ACTIVE_STATES
        if settled:
            status.update(_settle(job, status, returncode=rc))
        atomic_write_json(job.status_path, status)
        if settled:
            _after_finish(job, status)


def _after_finish(job: Job, status: Mapping[str, Any]) -> None:
    """A finished robustness job files its curve with the model's stored results (once)."""
    if status.get("state") != "finished" or job.kind != "robustness" or not job.result_path.is_file():
        return
    ckpt = job.config.get("checkpoint")
    if not ckpt:
        return
    result = _read_json(job.result_path)
    with contextlib.suppress(OSError):
        record_robustness(ckpt, {**result, "job": job.id})


def _launcher() -> list[str]:
    return [sys.executable, "-m", "jacreg"]


def _spawn(job: Job, argv: list[str], env: Mapping[str, str] | None, attempt: int) -> Job:
    offset = job.events_path.stat().st_size if job.events_path.exists() else 0
    _update_status(job.dir, state="queued", pid=None, proc_start=None, returncode=None,
                   stop_requested=False, attempt=attempt, argv=argv, events_offset=offset,
                   created=time.time(), started=None, ended=None, message=None)
    child_env = dict(os.environ)
    child_env.update(env or {})
    root = str(catalog.PROJECT_ROOT)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    child_env["JACREG_JOB_ID"] = job.id
    with open(job.log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=root, env=child_env, start_new_session=True)
        except OSError as exc:
            _update_status(job.dir, state="failed", ended=time.time(), message=f"could not start: {exc}")
            raise JacregError(f"could not start the job: {exc}") from exc
    with _WATCHERS_LOCK:
        _WATCHERS[job.id] = proc
    _update_status(job.dir, state="running", pid=proc.pid, pgid=proc.pid,
                   proc_start=_proc_start_time(proc.pid), started=time.time())
    threading.Thread(target=_watch, args=(job, proc), name=f"jacreg-job-{job.id}", daemon=True).start()
    return job


def start_job(config: Mapping[str, Any] | Any, runs_dir: str | os.PathLike[str] | None = None,
              kind: Kind = "train", *, name: str | None = None, launcher: Sequence[str] | None = None,
              env: Mapping[str, str] | None = None, validate: bool = True) -> Job:
    """Start a background job in a new run folder.

    For ``kind="train"`` the config is validated here first (a bad config raises at once and no
    folder is created), then ``python -m jacreg train <config> --out <run>/model.safetensors
    --events <run>/events.jsonl`` runs in its own process group with its output in ``log.txt``.
    For ``kind="robustness"`` the config is ``{"args": [...]}``: the arguments after
    ``robustness`` (checkpoint, attack, epsilons, ...); the result goes to ``<run>/result.json``.

    Args:
        config: a ``TrainConfig`` or a dict of its fields (``device`` may be auto, cpu, cuda:N).
        runs_dir: where run folders live (default :func:`jacreg.catalog.runs_dir`).
        kind: ``"train"`` or ``"robustness"``.
        name: a display name (default: the config's ``name`` or the run id).
        launcher: the program prefix that receives ``<kind> <args>`` (default
            ``[sys.executable, "-m", "jacreg"]``); tests substitute a small script.
        env: extra environment variables for the subprocess.
        validate: validate a training config in-process first (default True).

    Returns:
        The :class:`Job`; its status is ``running`` (or ``failed`` if it could not be spawned).

    Raises:
        ConfigError: the config is invalid (the message says why).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
    cfg = config_dict(config)
    if kind == "train":
        if validate:
            cfg = validate_train_config(cfg)
        args = train_argv(cfg)
    else:
        raw = cfg.get("args")
        if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(a, str) for a in raw):
            raise ConfigError("a robustness job needs config={'args': [checkpoint, '--attack', ...]}")
        args = list(raw)
        cfg.setdefault("checkpoint", args[0])
        if "--quiet" not in args:
            args.append("--quiet")
    display = name or cfg.get("name") or None
    run_dir = new_run_dir(runs_dir, prefix=str(display or ""))
    job = Job(run_dir.name, run_dir)
    if kind == "train":
        if not display:  # the model card's name: unique and descriptive, e.g. lenet-jr-3fa2c1
            display = f"{cfg.get('arch', 'model')}-{regularizer_label(cfg)}-{run_dir.name.split('-')[2]}"
        cfg["name"] = display
        args = train_argv(cfg)
        args += ["--out", str(job.checkpoint_path), "--events", str(job.events_path)]
    else:
        args += ["--json", str(job.result_path)]
    argv = list(launcher or _launcher()) + [kind] + args
    atomic_write_json(job.config_path, {"kind": kind, "name": display or job.id, "config": cfg,
                                        "argv": argv, "created": time.time()})
    return _spawn(job, argv, env, attempt=1)


def list_jobs(runs_dir: str | os.PathLike[str] | None = None) -> list[Job]:
    """Every job (a run folder with a ``status.json``), newest first."""
    root = _root(runs_dir)
    if not root.is_dir():
        return []
    jobs = [Job(d.name, d) for d in root.iterdir() if d.is_dir() and (d / STATUS_FILE).is_file()]
    return sorted(jobs, key=lambda j: j.id, reverse=True)


def get_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None) -> Job:
    """The job with this id.

    Raises:
        ConfigError: there is no such job (or the id is not a run folder name).
    """
    if not isinstance(job_id, str) or not _ID_RE.match(job_id):
        raise ConfigError(f"not a run id: {job_id!r}")
    root = _root(runs_dir)
    d = root / job_id
    if not (d / STATUS_FILE).is_file():
        raise ConfigError(f"no job {job_id!r} in {root}")
    return Job(job_id, d)


def stop_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None, grace: float = 10.0, *,
             wait: bool = True) -> Job:
    """Stop a job: SIGTERM to its process group, SIGKILL after ``grace`` seconds; state ``stopped``.

    The checkpoint of the last finished epoch stays loadable; :func:`resume_job` continues it.
    Stopping a job that already ended does nothing.

    Args:
        grace: seconds between SIGTERM and SIGKILL.
        wait: block until the process is gone; with False the stop is requested and SIGTERM sent
            at once, and a daemon thread escalates and settles the state (for a page that must not
            freeze).
    """
    job = get_job(job_id, runs_dir)
    status = job.status()
    if status.get("state") not in ACTIVE_STATES:
        return job
    status = _update_status(job.dir, stop_requested=True)
    pid, start = status.get("pid"), status.get("proc_start")
    pgid = status.get("pgid") or pid
    if pid and pid_alive(pid, start):
        _signal_group(pgid, pid, signal.SIGTERM)
    if wait:
        _finish_stop(job, pid, start, pgid, grace)
    else:
        threading.Thread(target=_finish_stop, args=(job, pid, start, pgid, grace), daemon=True,
                         name=f"jacreg-stop-{job.id}").start()
    return job


def _finish_stop(job: Job, pid: int | None, start: int | None, pgid: int | None, grace: float) -> None:
    if pid and pgid:
        deadline = time.monotonic() + max(0.0, grace)
        while pid_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid, start):
            _signal_group(pgid, pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while pid_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
    with _WATCHERS_LOCK:
        proc = _WATCHERS.get(job.id)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with _locked(job.dir):
        status = job.raw_status()
        if status.get("state") in ACTIVE_STATES and status.get("pid") == pid and not pid_alive(pid, start):
            status.update(state="stopped", ended=time.time(), message="stopped by the user")
            atomic_write_json(job.status_path, status)


def _signal_group(pgid: int, pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    except (PermissionError, OSError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def resume_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None, *,
               device: str | None = None, launcher: Sequence[str] | None = None,
               env: Mapping[str, str] | None = None) -> Job:
    """Continue a stopped or failed training job from its last checkpoint (``--resume``).

    The same folder, config and event log are used; the new attempt's events are appended.

    Args:
        device: run the rest on another device (default: the one it was started with).

    Raises:
        ConfigError: the job is still running, is not a training job, or has no checkpoint yet.
    """
    job = get_job(job_id, runs_dir)
    status = job.status()
    if status.get("state") in ACTIVE_STATES:
        raise ConfigError(f"job {job_id} is still {status.get('state')}; stop it before resuming")
    jc = job.job_config()
    if jc.get("kind", "train") != "train":
        raise ConfigError("only training jobs can be resumed; start the robustness run again")
    if not job.checkpoint_path.is_file() and not job.resume_state_path.is_file():
        raise ConfigError(f"job {job_id} has no checkpoint yet (it stopped before its first epoch "
                          "ended): start a new job instead")
    cfg = dict(jc.get("config") or {})
    if device is not None:
        cfg["device"] = device
        validate_train_config(cfg)
    argv = list(launcher) + ["train"] if launcher else None
    if argv is None:
        old = list(jc.get("argv") or [])
        prefix = old[:old.index("train") + 1] if "train" in old else _launcher() + ["train"]
        argv = prefix
    argv += train_argv(cfg) + ["--out", str(job.checkpoint_path), "--events", str(job.events_path),
                               "--resume"]
    jc["config"] = cfg
    atomic_write_json(job.config_path, jc)
    return _spawn(job, argv, env, attempt=int(status.get("attempt") or 1) + 1)


def delete_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete a run folder (its checkpoint, events and logs).

    Raises:
        ConfigError: the job is still running (stop it first) or does not exist.
    """
    job = get_job(job_id, runs_dir)
    if job.status().get("state") in ACTIVE_STATES:
        raise ConfigError(f"job {job_id} is still running; stop it before deleting it")
    shutil.rmtree(job.dir)


def delete_run(run_dir: str | os.PathLike[str]) -> None:
    """Delete a trained run's folder (also one made by the CLI, without a job status).

    Raises:
        ConfigError: the folder is not inside the runs folder, or its job is still running.
    """
    d = Path(run_dir).resolve()
    root = catalog.runs_dir().resolve()
    if d.parent != root or not d.is_dir():
        raise ConfigError(f"{run_dir} is not a run folder in {root}; zoo models cannot be deleted here")
    if (d / STATUS_FILE).is_file():
        delete_job(d.name, root)
    else:
        shutil.rmtree(d)


# --- progress ----------------------------------------------------------------------------------

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


# --- results stored next to a model ------------------------------------------------------------

def robustness_path(model_path: str | os.PathLike[str]) -> Path:
    """Where robustness results of a model are kept: ``runs/<id>/robustness.json`` for a run
    (``model.safetensors``), ``<stem>.robustness.json`` next to any other checkpoint."""
    p = Path(model_path)
    if p.name == MODEL_FILE:
        return p.parent / "robustness.json"
    return p.with_name(p.stem + ".robustness.json")


def robustness_results(model_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The robustness curves stored for a model (oldest first; empty when none).

    The file holds a list of results as ``python -m jacreg robustness --json`` writes them
    (``attack``, ``epsilons``, ``accuracy``, ``samples``, ...); a single result is accepted too.
    """
    path = robustness_path(model_path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return []
    if isinstance(obj, dict):
        obj = obj.get("results", [obj])
    return [r for r in obj if isinstance(r, dict)] if isinstance(obj, list) else []


def record_robustness(model_path: str | os.PathLike[str], result: Mapping[str, Any],
                      keep: int = 20) -> Path:
    """Append a robustness result to the model's stored results (atomic; the last ``keep`` kept)."""
    path = robustness_path(model_path)
    rows = robustness_results(model_path) + [dict(result, recorded=time.time())]
    return atomic_write_json(path, rows[-keep:])
