"""Background jobs: real training subprocesses (tiny), SIGKILL + resume, concurrency, stop, bad input.

A small stand-in CLI (``fake_cli``) covers what depends only on files and processes (a starter that
dies, pid reuse) in a fraction of a second; everything else runs ``python -m jacreg train``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jacreg import catalog, jobs
from jacreg.errors import ConfigError
from jacreg.fileio import atomic_write_json
from jacreg.jobs.process import proc_start_time

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = {"arch": "lenet", "dataset": "mnist-5k", "epochs": 1, "batch_size": 50, "lr": 0.05,
        "limit_batches": 2, "eval_samples": 20, "device": "cpu", "log_every": 1}

FAKE_CLI = textwrap.dedent('''
    """Writes the same events and files as `python -m jacreg train`, without torch."""
    import argparse, json, os, signal, sys, time
    from pathlib import Path

    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--events")
    p.add_argument("--resume", action="store_true")
    args, _ = p.parse_known_args()
    delay = float(os.environ.get("FAKE_EPOCH_SECONDS", "0.02"))

    def emit(rec):
        with open(args.events, "a") as fh:
            fh.write(json.dumps({**rec, "time": time.time()}) + "\\n")

    state = Path(args.out + ".state.pt")
    start = int(state.read_text()) if args.resume and state.exists() else 0
    emit({"event": "start", "config": {"epochs": args.epochs}, "total_steps": 2 * args.epochs,
          "steps_per_epoch": 2, "start_epoch": start})
    for e in range(start, args.epochs):
        time.sleep(delay)
        for s in (1, 2):
            emit({"event": "step", "epoch": e + 1, "step": 2 * e + s, "total_steps": 2 * args.epochs,
                  "loss": 1.0, "ce": 0.9, "jr": 0.1, "accuracy": 0.5, "lr": 0.1, "seconds": 0.0})
        emit({"event": "epoch", "epoch": e + 1, "epochs": args.epochs, "train_loss": 1.0,
              "test_accuracy": 0.5, "jacobian_norm_mean": 3.0, "lr": 0.1})
        Path(args.out).write_bytes(b"weights")
        state.write_text(str(e + 1))
        emit({"event": "checkpoint", "path": args.out, "epoch": e + 1})
    emit({"event": "done", "metrics": {}, "path": args.out})
''')


@pytest.fixture()
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "runs"
    monkeypatch.setenv("JACREG_RUNS_DIR", str(d))
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    yield d
    for job in jobs.list_jobs(d):  # a failed test leaves no training process behind
        if job.is_active():
            jobs.stop_job(job.id, d, grace=2)


@pytest.fixture()
def fake(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)
    return [sys.executable, str(script)]


def _wait_for(pred, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _kinds(job: jobs.Job) -> list[str]:
    return [e["event"] for e in job.events()]


# --- files and processes (stand-in CLI) --------------------------------------------------------

def test_fake_job_lifecycle_and_progress(runs: Path, fake: list[str]) -> None:
    job = jobs.start_job({**TINY, "epochs": 3}, kind="train", launcher=fake)
    assert job.dir.parent == runs and job.status()["state"] in ("queued", "running", "finished")
    status = job.wait(30)
    assert status["state"] == "finished" and status["returncode"] == 0
    cfg = json.loads(job.config_path.read_text())
    assert cfg["kind"] == "train" and cfg["config"]["epochs"] == 3
    assert cfg["argv"][-4:] == ["--out", str(job.checkpoint_path), "--events", str(job.events_path)]
    prog = job.progress()
    got = (prog.step, prog.total, prog.epoch, prog.epochs, prog.fraction, prog.eta_s)
    assert got == (6, 6, 3, 3, 1.0, 0.0)
    assert [h["epoch"] for h in jobs.epoch_history(job.events())] == [1, 2, 3]
    assert [j.id for j in jobs.list_jobs()] == [job.id]


def test_progress_eta_from_events() -> None:
    ev = [{"event": "start", "total_steps": 100, "steps_per_epoch": 10, "start_epoch": 2, "time": 1000.0,
           "config": {"epochs": 10}},
          {"event": "step", "step": 30, "total_steps": 100},
          {"event": "epoch", "epoch": 3, "epochs": 10, "test_accuracy": 0.9}]
    p = jobs.progress_from_events(ev, now=1010.0)
    # 10 steps since the resumed attempt started (at step 20) took 10 s: 70 steps left -> 70 s
    assert p.step == 30 and p.total == 100 and p.epoch == 3 and p.fraction == pytest.approx(0.3)
    assert p.eta_s == pytest.approx(70.0)
    assert p.last_epoch["test_accuracy"] == 0.9
    assert jobs.progress_from_events([]).eta_s is None


def test_status_from_files_when_the_starting_process_is_gone(runs: Path, fake: list[str]) -> None:
    # A page process starts two jobs and exits at once: no watcher records their exit codes.
    code = textwrap.dedent(f"""
        import os, sys
        from jacreg import jobs
        os.environ["FAKE_EPOCH_SECONDS"] = "0.3"
        ok = jobs.start_job({{"arch": "lenet", "epochs": 2}}, launcher={fake!r})
        os.environ["FAKE_EPOCH_SECONDS"] = "30"
        doomed = jobs.start_job({{"arch": "lenet", "epochs": 2}}, launcher={fake!r})
        print(ok.id, doomed.id)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    ok_id, doomed_id = out.stdout.split()
    ok, doomed = jobs.get_job(ok_id), jobs.get_job(doomed_id)
    assert doomed.status()["state"] == "running"
    os.kill(doomed.raw_status()["pid"], signal.SIGKILL)
    st = _wait_for(lambda: (s := doomed.status())["state"] != "running" and s, 10, "the killed job to settle")
    assert st["state"] == "failed" and "without finishing" in st["message"]
    st = ok.wait(30)
    assert st["state"] == "finished" and st["returncode"] is None  # from the done event alone
    assert json.loads(ok.status_path.read_text())["state"] == "finished"  # written back


def test_only_the_jobs_own_process_counts_as_alive(runs: Path) -> None:
    """A recorded pid is the job's only when its start time matches and it carries the job's id."""
    d = jobs.new_run_dir()
    atomic_write_json(d / "config.json", {"kind": "train", "config": {}})
    env = {**os.environ, "JACREG_JOB_ID": d.name}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _wait_for(lambda: proc_start_time(child.pid), 10, "the child's start time")
        cases = [({"pid": child.pid, "proc_start": start}, "running"),      # the job's process
                 ({"pid": child.pid, "proc_start": start - 1}, "failed"),  # a reused pid
                 ({"pid": stranger.pid, "proc_start": proc_start_time(stranger.pid)}, "failed"),
                 ({"pid": os.getpid(), "proc_start": proc_start_time(os.getpid())}, "failed")]  # this process
        for fields, state in cases:
            atomic_write_json(d / "status.json", {"state": "running", **fields})
            assert jobs.get_job(d.name).status()["state"] == state, fields
    finally:
        for p in (child, stranger):
            p.kill()
            p.wait()


def test_run_folders_are_unique_and_ids_are_checked(runs: Path) -> None:
    made: list[Path] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(25):
            p = jobs.new_run_dir()
            with lock:
                made.append(p)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == len(made) == 100
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ConfigError):
            jobs.get_job(bad)
    with pytest.raises(ConfigError, match="no job"):
        jobs.get_job("20200101-000000-abcdef")


def test_delete_refused_while_running(runs: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "30")
    job = jobs.start_job({"arch": "lenet", "epochs": 2}, launcher=fake)
    with pytest.raises(ConfigError, match="still running"):
        jobs.delete_job(job.id)
    with pytest.raises(ConfigError, match="still running"):
        jobs.resume_job(job.id)
    jobs.stop_job(job.id, grace=5)
    assert job.status()["state"] == "stopped"
    jobs.delete_job(job.id)
    assert not job.dir.exists()


def test_robustness_results_round_trip(tmp_path: Path) -> None:
    ckpt = tmp_path / "run1" / "model.safetensors"
    ckpt.parent.mkdir()
    assert jobs.robustness_results(ckpt) == []
    jobs.record_robustness(ckpt, {"attack": "fgsm", "epsilons": [0, 0.1], "accuracy": [0.9, 0.5]})
    jobs.record_robustness(ckpt, {"attack": "pgd", "epsilons": [0, 0.1], "accuracy": [0.9, 0.2]})
    got = jobs.robustness_results(ckpt)
    assert [r["attack"] for r in got] == ["fgsm", "pgd"]
    assert jobs.robustness_path(tmp_path / "lenet-jr.safetensors").name == "lenet-jr.robustness.json"


# --- the real training CLI ---------------------------------------------------------------------

def test_sigkill_marks_failed_checkpoint_stays_loadable_and_resume_finishes(runs: Path) -> None:
    from jacreg.checkpoints import load_checkpoint

    job = jobs.start_job({**TINY, "epochs": 15, "limit_batches": 1, "eval_samples": 10})
    _wait_for(lambda: "checkpoint" in _kinds(job), 120, "the first checkpoint", poll=0.01)
    os.kill(job.raw_status()["pid"], signal.SIGKILL)
    status = _wait_for(lambda: (s := job.status())["state"] != "running" and s, 15, "the job to settle")
    assert status["state"] == "failed" and "SIGKILL" in status["message"]
    done_before = jobs.epoch_history(job.events())[-1]["epoch"]
    assert done_before < 15
    _, meta = load_checkpoint(job.checkpoint_path)  # the last epoch's checkpoint is whole
    assert meta["history"][-1]["epoch"] >= 1
    jobs.resume_job(job.id)
    status = job.wait(180)
    assert status["state"] == "finished", job.log_tail()
    assert status["attempt"] == 2
    hist = jobs.epoch_history(job.events())
    assert [h["epoch"] for h in hist] == list(range(1, 16))
    _, meta = load_checkpoint(job.checkpoint_path)
    assert meta["history"][-1]["epoch"] == 15


def test_two_jobs_at_once_both_finish_in_their_own_folders(runs: Path) -> None:
    from jacreg.checkpoints import load_checkpoint

    a = jobs.start_job({**TINY, "seed": 1, "name": "job-a"})
    b = jobs.start_job({**TINY, "seed": 2, "jr": 0.01, "name": "job-b"})
    assert a.dir != b.dir and a.dir.parent == b.dir.parent == runs
    assert a.wait(120)["state"] == "finished", a.log_tail()
    assert b.wait(120)["state"] == "finished", b.log_tail()
    for job, seed, name in ((a, 1, "job-a"), (b, 2, "job-b")):
        kinds = _kinds(job)
        for k in ("start", "step", "epoch", "checkpoint", "done"):
            assert k in kinds
        start = next(e for e in job.events() if e["event"] == "start")
        assert start["config"]["seed"] == seed and start["config"]["out"] == str(job.checkpoint_path)
        assert all(e.get("path", str(job.checkpoint_path)) == str(job.checkpoint_path) for e in job.events())
        _, meta = load_checkpoint(job.checkpoint_path)
        assert meta["name"] == name and meta["config"]["seed"] == seed
        epoch = jobs.epoch_history(job.events())[-1]
        assert 0 <= epoch["test_accuracy"] <= 1 and epoch["jacobian_norm_mean"] > 0
    assert jobs.epoch_history(b.events())[-1]["train_jr"] > 0  # the JR run computed its term
    listed = catalog.list_models(zoo_dir=runs / "nozoo")
    assert sorted(e.key for e in listed) == sorted(f"run:{j.id}" for j in (a, b))
    assert sorted(e.name for e in listed) == ["job-a", "job-b"]


def test_invalid_config_fails_at_once_with_the_reason(runs: Path) -> None:
    with pytest.raises(ConfigError, match="--epochs must be from 1"):
        jobs.start_job({**TINY, "epochs": 0})
    with pytest.raises(ConfigError, match="unknown training option"):
        jobs.start_job({**TINY, "epoch": 3})
    with pytest.raises(ConfigError, match="adv-eps"):
        jobs.start_job({**TINY, "adv": "fgsm", "adv_eps": 0.0})
    assert not runs.exists() or not any(runs.iterdir())  # nothing was created
    # the same bad config, not checked here, fails in the subprocess: its own message is surfaced
    t0 = time.monotonic()
    job = jobs.start_job({**TINY, "lr": -1.0}, validate=False)
    status = job.wait(60)
    assert status["state"] == "failed" and status["returncode"] == 2
    assert "--lr must be positive" in status["message"]
    assert time.monotonic() - t0 < 60


def test_stop_terminates_the_job(runs: Path) -> None:
    job = jobs.start_job({**TINY, "epochs": 200, "limit_batches": 1, "eval_samples": 10})
    _wait_for(lambda: "step" in _kinds(job), 120, "the first step")
    t0 = time.monotonic()
    jobs.stop_job(job.id, grace=10)
    status = job.status()
    assert status["state"] == "stopped" and time.monotonic() - t0 < 12
    assert not jobs.pid_alive(status["pid"], status["proc_start"])
    assert "stopped" in _kinds(job)  # the CLI turned SIGTERM into a clean stop event
    assert status["returncode"] not in (None, 0)


def test_robustness_job_records_its_curve_with_the_model(runs: Path, trained_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    import shutil

    ckpt = tmp_path / "mine.safetensors"
    shutil.copy(trained_checkpoint, ckpt)
    job = jobs.start_job({"args": [str(ckpt), "--attack", "fgsm", "--eps", "0,0.2", "--samples", "20",
                                   "--device", "cpu"]}, kind="robustness")
    status = job.wait(120)
    assert status["state"] == "finished", job.log_tail()
    result = json.loads(job.result_path.read_text())
    assert result["attack"] == "fgsm" and result["samples"] == 20
    stored = jobs.robustness_results(ckpt)
    assert len(stored) == 1 and stored[0]["job"] == job.id and stored[0]["accuracy"] == result["accuracy"]
    with pytest.raises(ConfigError, match="only training jobs"):
        jobs.resume_job(job.id)
