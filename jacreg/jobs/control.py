"""Starting, stopping, resuming and deleting background jobs.

A job is ``python -m jacreg <kind> ...`` of the same jacreg installation as the caller, in its own
process group (``start_new_session``) with its own run folder as working directory, so it survives
page reloads, browser closes and even the death of the process that started it. A watcher thread
in the starting process records the exit code; when that process is gone, :meth:`Job.status`
derives the state from the files and the liveness of the recorded pid alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import catalog
from ..device import pick, thread_budget
from ..errors import ConfigError, JacregError
from ..fileio import atomic_write_json
from ..training import TrainConfig, check_name
from .folders import ID_RE, STATUS_FILE, locked, new_run_dir, runs_root, update_status
from .history import regularizer_label
from .job import ACTIVE_STATES, KINDS, WATCHERS, WATCHERS_LOCK, Job, Kind, watch
from .process import JOB_ID_ENV, is_job_process, proc_start_time, signal_job_processes

__all__ = ["config_dict", "delete_job", "delete_run", "get_job", "list_jobs", "resume_job", "start_job",
           "stop_job", "train_argv", "validate_train_config"]

#: Paths a job sets itself: never taken from the caller's config.
_JOB_PATHS = ("out", "events", "resume")


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
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    cfg = TrainConfig.from_dict(cfg).validate().to_dict()
    if cfg.get("device") not in (None, "", "auto"):
        pick(str(cfg["device"]))  # ConfigError when the accelerator is absent
    for key in _JOB_PATHS:
        cfg.pop(key, None)
    return cfg


def train_argv(config: Mapping[str, Any] | Any) -> list[str]:
    """CLI arguments (after ``train``) for a training config, without ``--out``/``--events``/``--resume``
    (:meth:`TrainConfig.to_argv`; unknown keys are ignored)."""
    cfg = {k: v for k, v in config_dict(config).items() if k not in _JOB_PATHS}
    return TrainConfig.from_dict(cfg).to_argv(exclude=_JOB_PATHS)


def _launcher() -> list[str]:
    return [sys.executable, "-m", "jacreg"]


def _package_path() -> str:
    """The folder that holds the jacreg package this process runs (site-packages, or a source tree
    during development): the job runs the same code as its caller."""
    return str(Path(__file__).resolve().parents[2])


def _spawn(job: Job, argv: list[str], env: Mapping[str, str] | None, attempt: int) -> Job:
    offset = job.events_path.stat().st_size if job.events_path.exists() else 0
    update_status(job.dir, state="queued", pid=None, proc_start=None, returncode=None,
                   stop_requested=False, attempt=attempt, argv=argv, events_offset=offset,
                   created=time.time(), started=None, ended=None, message=None)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(
        [_package_path()] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # the job runs in its own folder: relative locations of the zoo and the runs would move with it
    child_env["JACREG_MODELS_DIR"] = str(catalog.models_dir().absolute())
    child_env["JACREG_RUNS_DIR"] = str(job.dir.parent.absolute())
    threads = str(thread_budget("job"))  # the page keeps the other cores (set unless the caller chose)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        child_env.setdefault(var, threads)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    child_env[JOB_ID_ENV] = job.id
    with open(job.log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=job.dir, env=child_env, start_new_session=True)
        except (OSError, ValueError) as exc:
            update_status(job.dir, state="failed", ended=time.time(), message=f"could not start: {exc}")
            raise JacregError(f"could not start the job: {exc}") from exc
    with WATCHERS_LOCK:
        WATCHERS[job.id] = proc
    update_status(job.dir, state="running", pid=proc.pid, pgid=proc.pid,
                   proc_start=proc_start_time(proc.pid), started=time.time())
    threading.Thread(target=watch, args=(job, proc), name=f"jacreg-job-{job.id}", daemon=True).start()
    return job


def start_job(config: Mapping[str, Any] | Any, runs_dir: str | os.PathLike[str] | None = None,
              kind: Kind = "train", *, name: str | None = None, launcher: Sequence[str] | None = None,
              env: Mapping[str, str] | None = None, validate: bool = True,
              extra_args: Sequence[str] = ()) -> Job:
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
        extra_args: more arguments for the command, kept for a resume (e.g.
            ``["--backend", "ray", "--ray-address", "HOST:PORT"]``).

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
        if not Path(args[0]).is_absolute():  # the job runs in its own folder
            args[0] = str(Path(args[0]).absolute())
        cfg.setdefault("checkpoint", args[0])
        if "--quiet" not in args:
            args.append("--quiet")
    display = name or cfg.get("name") or None
    if display is not None:
        display = check_name(display, "the job name")
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
    argv = list(launcher or _launcher()) + [kind] + args + list(extra_args)
    atomic_write_json(job.config_path, {"kind": kind, "name": display or job.id, "config": cfg,
                                        "argv": argv, "extra_args": list(extra_args), "created": time.time()})
    return _spawn(job, argv, env, attempt=1)


def list_jobs(runs_dir: str | os.PathLike[str] | None = None) -> list[Job]:
    """Every job (a run folder with a ``status.json``), newest first."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return []
    jobs = [Job(d.name, d) for d in root.iterdir() if d.is_dir() and (d / STATUS_FILE).is_file()]
    return sorted(jobs, key=lambda j: j.id, reverse=True)


def get_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None) -> Job:
    """The job with this id.

    Raises:
        ConfigError: there is no such job (or the id is not a run folder name).
    """
    if not isinstance(job_id, str) or not ID_RE.match(job_id):
        raise ConfigError(f"not a run id: {job_id!r}")
    root = runs_root(runs_dir)
    d = root / job_id
    if not (d / STATUS_FILE).is_file():
        raise ConfigError(f"no job {job_id!r} in {root}")
    return Job(job_id, d)


def stop_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None, grace: float = 10.0, *,
             wait: bool = True) -> Job:
    """Stop a job: SIGTERM to its processes, SIGKILL after ``grace`` seconds; state ``stopped``.

    Only verified processes of the job are signalled (:mod:`jacreg.jobs.process`): the pid in its
    status when its start time and environment say it is the job's, and any process carrying the
    job's id, so a corrupt status file neither stops the wrong process nor leaves the job running.
    The checkpoint of the last finished epoch stays loadable; :func:`resume_job` continues it.
    Stopping a job that already ended does nothing.

    Args:
        grace: seconds between SIGTERM and SIGKILL.
        wait: block until the processes are gone; with False the stop is requested and SIGTERM sent
            at once, and a daemon thread escalates and settles the state (for a page that must not
            freeze).
    """
    job = get_job(job_id, runs_dir)
    status = job.status()
    if status.get("state") not in ACTIVE_STATES and not job.processes():
        return job
    update_status(job.dir, stop_requested=True)
    pids = _job_pids(job)
    signal_job_processes(pids, job.id, signal.SIGTERM)
    if wait:
        _finish_stop(job, grace)
    else:
        threading.Thread(target=_finish_stop, args=(job, grace), daemon=True,
                         name=f"jacreg-stop-{job.id}").start()
    return job


def _job_pids(job: Job) -> list[int]:
    """The job's live processes: its recorded pid when verified, and all found by its id."""
    status = job.raw_status()
    pids = set(job.processes())
    if is_job_process(status.get("pid"), status.get("proc_start"), job.id):
        pids.add(int(status["pid"]))
    return sorted(pids)


def _finish_stop(job: Job, grace: float) -> None:
    deadline = time.monotonic() + max(0.0, grace)
    while _job_pids(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _job_pids(job):
        signal_job_processes(_job_pids(job), job.id, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _job_pids(job) and time.monotonic() < deadline:
            time.sleep(0.05)
    with WATCHERS_LOCK:
        proc = WATCHERS.get(job.id)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with locked(job.dir):
        status = job.raw_status()
        if status.get("state") in ACTIVE_STATES and not _job_pids(job):
            status.update(state="stopped", ended=time.time(), message="stopped by the user")
            status.pop("corrupt", None)
            atomic_write_json(job.status_path, status)


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
                               "--resume"] + list(jc.get("extra_args") or [])
    jc["config"] = cfg
    atomic_write_json(job.config_path, jc)
    return _spawn(job, argv, env, attempt=int(status.get("attempt") or 1) + 1)


def delete_job(job_id: str, runs_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete a run folder (its checkpoint, events and logs).

    Raises:
        ConfigError: the job is still running (stop it first) or does not exist.
    """
    job = get_job(job_id, runs_dir)
    if job.status().get("state") in ACTIVE_STATES or job.processes():
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
