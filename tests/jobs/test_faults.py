"""Faults in job files and processes: a status file is data, not authority. Nothing it names is
signalled unless it is verifiably the job's process, corrupt files never raise, and a job whose status
is corrupt is still found, stopped and protected from deletion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jacreg import jobs
from jacreg.errors import ConfigError
from jacreg.fileio import atomic_write_json
from jacreg.jobs.process import proc_start_time

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture()
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv("JACREG_RUNS_DIR", str(d))
    return d


@pytest.fixture()
def job_dir(runs: Path) -> Path:
    d = jobs.new_run_dir()
    atomic_write_json(d / jobs.CONFIG_FILE, {"kind": "train", "config": {}, "name": "faulty"})
    return d


@pytest.fixture()
def job_process(job_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process of the job (its id in the environment, its own session), as start_job makes one."""
    env = {**os.environ, "JACREG_JOB_ID": job_dir.name}
    proc = subprocess.Popen(SLEEPER, env=env, start_new_session=True)
    deadline = time.monotonic() + 10
    while proc_start_time(proc.pid) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture()
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture()
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every signal jobs send (recorded; only signals to the job's own test processes are delivered)."""
    sent: list[tuple[str, int, int]] = []
    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid: int, sig: int) -> None:
        if sig != 0:
            sent.append(("kill", pid, sig))
        real_kill(pid, sig)

    def killpg(pgid: int, sig: int) -> None:
        sent.append(("killpg", pgid, sig))
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    return sent


@pytest.mark.parametrize("fields", [
    {"pid": 1, "pgid": 1, "proc_start": None},
    {"pid": 1, "pgid": 1},
    {"pid": 0, "pgid": 0},
    {"pid": -1, "pgid": -1},
    {"pid": "1", "pgid": "1"},
    {"pid": 2**40, "pgid": 2**40},
])
def test_a_status_naming_init_or_nonsense_is_never_signalled(job_dir, signals, fields):
    atomic_write_json(job_dir / jobs.STATUS_FILE, {"state": "running", **fields})
    jobs.stop_job(job_dir.name, grace=0.2)
    assert not [s for s in signals if s[1] <= 1 or s[1] >= 2**31], signals
    assert jobs.get_job(job_dir.name).status()["state"] in jobs.FINAL_STATES


def test_a_foreign_process_is_never_signalled(job_dir, stranger, signals):
    for start in (None, proc_start_time(stranger.pid)):  # with and without a recorded start time
        atomic_write_json(job_dir / jobs.STATUS_FILE, {"state": "running", "pid": stranger.pid,
                                                       "pgid": stranger.pid, "proc_start": start})
        jobs.stop_job(job_dir.name, grace=0.2)
        assert stranger.poll() is None and not signals
    me = {"pid": os.getpid(), "pgid": os.getpgid(0), "proc_start": proc_start_time(os.getpid())}
    atomic_write_json(job_dir / jobs.STATUS_FILE, {"state": "running", **me})
    jobs.stop_job(job_dir.name, grace=0.2)  # this very process is never the job's
    assert not signals


@pytest.mark.parametrize("content", [b'{"state": "runn', b"", b"\xff\xfe garbage", b"[1, 2]",
                                     b'{"state": "exploded", "pid": "x"}'])
def test_a_corrupt_status_still_stops_the_running_job(job_dir, job_process, content):
    (job_dir / jobs.STATUS_FILE).write_bytes(content)
    job = jobs.get_job(job_dir.name)
    status = job.status()  # rebuilt from the process that carries the job's id
    assert status["state"] == "running" and status["pid"] == job_process.pid
    with pytest.raises(ConfigError, match="still running"):
        jobs.delete_job(job.id)
    jobs.stop_job(job.id, grace=5)
    assert job_process.wait(10) == -signal.SIGTERM
    assert job.status()["state"] == "stopped" and job_dir.is_dir()
    jobs.delete_job(job.id)
    assert not job_dir.exists()


def test_delete_is_refused_while_a_process_of_the_job_lives(job_dir, job_process):
    atomic_write_json(job_dir / jobs.STATUS_FILE, {"state": "finished"})  # a status that lies
    with pytest.raises(ConfigError, match="still running"):
        jobs.delete_job(job_dir.name)
    assert job_dir.is_dir()


def test_a_corrupt_status_without_a_process_settles_from_the_files(job_dir):
    (job_dir / jobs.STATUS_FILE).write_bytes(b'{"state": ')
    (job_dir / jobs.EVENTS_FILE).write_bytes(b'{"event": "start"}\n{"event": "done"}\n')
    status = jobs.get_job(job_dir.name).status()
    assert status["state"] == "finished" and "corrupt" in status["message"]


def test_corrupt_events_and_wrong_typed_fields_never_raise(job_dir):
    (job_dir / jobs.EVENTS_FILE).write_bytes(
        b'{"event": "start", "total_steps": "many", "config": [], "time": "now"}\n'
        b"\xff\xfe\xfa not utf-8 \x00\n"
        b'{"event": "step", "step": "x", "total_steps": null}\n'
        b'["a", "list"]\n' + b"[" * 5000 + b"\n"
        b'{"event": "epoch", "epoch": "one", "test_accuracy": "high"}\n'
        b'{"event": "epoch", "epoch": 1, "test_accuracy": 0.5}\n'
        b'{"event": "error", "message": "boom"}\n'
        b'{"event": "step", "step": 3')  # a partial last line
    atomic_write_json(job_dir / jobs.STATUS_FILE, {"state": "running", "pid": "7", "created": "yesterday",
                                                   "events_offset": "x", "started": [1], "attempt": {}})
    job = jobs.get_job(job_dir.name)
    status = job.status()
    assert status["state"] == "failed" and "boom" in status["message"]
    assert [e["epoch"] for e in jobs.epoch_history(job.events())] == [1]
    assert jobs.step_history(job.events()) == []
    progress = job.progress()
    assert progress.epoch == 1 and progress.step == 0
    assert job.error_message() == "boom"


def test_bad_job_names_leave_no_folder(runs):
    for name in ("a\0b", "line\nbreak", "x" * 500, "  "):
        with pytest.raises(ConfigError):
            jobs.start_job({"epochs": 1, "device": "cpu"}, name=name)
    assert not runs.exists() or not any(runs.iterdir())
