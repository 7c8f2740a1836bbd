"""The Ray backend against a private Ray head on 127.0.0.1: the command line trains from a folder
outside the checkout, a SIGTERM stops a remote run and keeps its last epoch, resume continues it,
a killed worker fails clearly, robustness curves match local ones. Address checks need no head."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from jacreg import architectures
from jacreg.checkpoints import load_checkpoint
from jacreg.errors import ConfigError
from jacreg.fileio import read_jsonl
from jacreg.jobs import remote
from jacreg.jobs.ray_worker import Worker
from jacreg.robustness import CurveTask, curve
from jacreg.training import TrainConfig, state_path
from tests.ray_head import RayHead, ray_head

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--limit-batches", "2"]


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head() as h:
        yield h
        remote.disconnect()  # before the head goes: Ray ends a driver whose cluster vanished


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "JACREG_RAY_ADDRESS": ""}
    return subprocess.Popen([sys.executable, "-m", "jacreg", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for_checkpoint(events: Path, proc: subprocess.Popen, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evs = read_jsonl(events)
        if any(e["event"] == "checkpoint" for e in evs):
            return evs
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint event")


def _no_partial_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_addresses_and_configs_are_checked_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(remote.ADDRESS_ENV, "")
    with pytest.raises(ConfigError, match="--ray-address"):
        remote.ray_address(None)
    monkeypatch.setenv(remote.ADDRESS_ENV, "ray://gpu-server:10001")
    assert remote.ray_address(None) == "ray://gpu-server:10001"
    for bad in ("gpu-server", "host:port", "host:0", "http://host:80/x"):
        with pytest.raises(ConfigError, match="not a Ray address"):
            remote.ray_address(bad)
    # a device this machine lacks is the worker's business; a malformed one is refused here
    remote.check_remote_config(TrainConfig(device="cuda:1"))
    with pytest.raises(ConfigError, match="unknown device"):
        remote.check_remote_config(TrainConfig(device="gpu"))
    with pytest.raises(ConfigError, match="--epochs"):
        remote.check_remote_config(TrainConfig(epochs=0))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"jacreg\[ray\]"):
        remote.import_ray()


def test_the_worker_hands_each_event_once_and_forgets_received_payloads() -> None:
    w = Worker()  # the actor's class, here without Ray
    w._begin("a")
    w._push({"event": "start"})
    w._push({"event": "checkpoint"}, (b"model", b"state"))
    items, finished = w.poll("a", 0, 0.0)
    assert [e["event"] for e, _ in items] == ["start", "checkpoint"] and items[1][1] == (b"model", b"state")
    assert not finished
    assert w.poll("b", 0, 0.0) == ([], False)  # another call's poll gets nothing
    t0 = time.monotonic()
    assert w.poll("a", 2, 0.2) == ([], False) and time.monotonic() - t0 >= 0.15  # waits for news
    w._push({"event": "done"})
    w._end()
    items, finished = w.poll("a", 2, 5.0)
    assert [e["event"] for e, _ in items] == ["done"] and finished
    assert len(w._items) == 1  # what the caller has received is not kept


def test_unreachable_head_fails_at_once_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = TrainConfig(out=str(tmp_path / "x.safetensors"), events=str(tmp_path / "ev.jsonl"))
    t0 = time.monotonic()
    with pytest.raises(remote.RemoteError, match="cannot reach the Ray head at 127.0.0.1:9"):
        remote.train_remote(config, "127.0.0.1:9")
    assert time.monotonic() - t0 < 10
    assert [e["event"] for e in read_jsonl(config.events)] == ["error"]
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_trains_on_ray_from_outside_the_checkout(head: RayHead, tmp_path: Path) -> None:
    out, events = tmp_path / "X.safetensors", tmp_path / "run.jsonl"
    proc = _cli(["train", "--backend", "ray", "--ray-address", head.address, *TINY, "--out", "X.safetensors",
                 "--events", "run.jsonl", "--eval-samples", "50", "--log-every", "1", "--quiet"], tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "on Ray at" in stderr
    model, card = load_checkpoint(out)
    assert card["backend"]["backend"] == "ray" and card["backend"]["address"] == head.address
    assert card["backend"]["device"] == "cpu" and card["backend"]["node_id"]
    assert card["config"]["out"] == "X.safetensors" and "--backend ray" in card["command"]
    assert card["metrics"]["epoch"] == 1 and json.loads(stdout)["path"] == "X.safetensors"
    assert state_path(out).is_file()
    evs = read_jsonl(events)
    assert [e["event"] for e in evs] == ["start", "step", "step", "epoch", "checkpoint", "done"]
    assert all(e["worker_time"] <= e["time"] for e in evs)  # sent by the worker, received here
    # the worker ran the caller's jacreg, shipped to it (not a copy it found on the machine)
    assert Path(evs[0]["backend"]["package"]).is_relative_to(head.temp_dir)
    _no_partial_files(tmp_path)


def test_sigterm_stops_the_run_resume_continues_and_a_killed_worker_fails_clearly(head: RayHead,
                                                                                   tmp_path: Path) -> None:
    out, events = tmp_path / "s.safetensors", tmp_path / "s.jsonl"
    # PGD training makes epochs slow enough (about 0.3 s here) for a stop to land mid-run; many epochs,
    # so that it does even when the events reach the caller late on a busy machine (never run to the end)
    config = TrainConfig(epochs=100, limit_batches=2, adv="pgd", adv_steps=5, eval_samples=10, log_every=1,
                         device="cpu", out=str(out), events=str(events))
    proc = _cli(["train", "--backend", "ray", "--ray-address", head.address, *config.to_argv(), "--quiet"],
                tmp_path)
    _wait_for_checkpoint(events, proc)
    proc.send_signal(signal.SIGTERM)  # what the page's Stop sends to the job
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    evs = read_jsonl(events)
    assert evs[-1]["event"] == "stopped"
    last = max(e["epoch"] for e in evs if e["event"] == "checkpoint")
    _, card = load_checkpoint(out)
    saved = torch.load(state_path(out), weights_only=True)
    assert card["metrics"]["epoch"] == last == saved["epochs_done"] < config.epochs
    _no_partial_files(tmp_path)

    # --resume sends the caller's state; then the worker is killed after one more epoch
    seen: list[int] = []

    def kill_after_one_epoch(event: dict) -> None:
        if event["event"] == "checkpoint":
            seen.append(event["epoch"])
            if len(seen) == 1:
                os.kill(int(event_log[0]["backend"]["pid"]), signal.SIGKILL)
        if event["event"] == "start":
            event_log.append(event)

    event_log: list[dict] = []
    with pytest.raises(remote.RemoteError, match="the Ray worker died"):
        remote.train_remote(dataclasses.replace(config, resume=True), head.address, kill_after_one_epoch)
    assert event_log[0]["start_epoch"] == last and seen[0] == last + 1
    evs = read_jsonl(events)
    assert evs[-1]["event"] == "error" and "worker died" in evs[-1]["message"]
    _, card = load_checkpoint(out)  # the last epoch that came back, whole
    saved = torch.load(state_path(out), weights_only=True)
    assert card["metrics"]["epoch"] == seen[-1] == saved["epochs_done"]
    _no_partial_files(tmp_path)


def test_robustness_curves_on_ray_match_local_ones(head: RayHead, digits) -> None:
    x, y = digits
    torch.manual_seed(0)
    model = architectures.create("lenet").eval()
    tasks = [CurveTask("lenet", model, x, y, "fgsm", [0.0, 0.1, 0.3]),
             CurveTask("lenet", model, x, y, "pgd", [1.0], probe=True)]
    runner = remote.RayCurveRunner(tasks, address=head.address, batch_size=4).start()
    runner.join(120)
    snap = runner.snapshot()
    assert snap["done"] and not snap["errors"], snap["errors"]
    local = curve(model, x, y, "fgsm", [0.0, 0.1, 0.3], batch_size=4)
    assert snap["results"][0]["accuracy"] == local["accuracy"]
    assert snap["results"][1]["probe"] and snap["results"][1]["samples"] == len(x)
