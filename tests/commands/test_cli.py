"""The command line: user errors exit 2 with one line and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jacreg.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet"}
    return subprocess.run([sys.executable, "-m", "jacreg", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, phrase", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--arch", "vgg"], "invalid choice"),
    (["train", "--lr", "abc"], "invalid float"),
    (["train", "--dataset", "svhn"], "svhn"),
    (["train", "--out", "x.pt"], ".safetensors"),
    (["eval", "does-not-exist.safetensors"], "does-not-exist"),
    (["nonsense"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(args, phrase, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert phrase in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_garbage_checkpoint_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    proc = run_cli("eval", str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")


def test_train_then_eval_from_a_shell(tmp_path):
    out = tmp_path / "x.safetensors"
    proc = run_cli("train", "--epochs", "1", "--limit-batches", "2", "--eval-samples", "20", "--jr", "0.01",
                   "--device", "cpu", "--out", str(out), "--json", str(tmp_path / "train.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "train.json").read_text())["path"] == str(out)
    proc = run_cli("eval", str(out), "--samples", "30", "--device", "cpu", "--json", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["samples"] == 30 and 0 <= result["clean_accuracy"] <= 1 and result["jacobian_norm_mean"] > 0


def test_two_process_distributed_training_on_cpu(tmp_path):
    """torchrun with the gloo backend: DistributedDataParallel + DistributedSampler."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "jacreg", "train", "--epochs", "1", "--limit-batches", "3", "--eval-samples", "20",
         "--jr", "0.01", "--device", "cpu", "--out", str(out), "--events", str(tmp_path / "ev.jsonl"),
         "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert events[0]["world_size"] == 2 and events[-1]["event"] == "done"
    assert sum(e["event"] == "start" for e in events) == 1        # only rank 0 reports
    assert proc.stdout.count('"path"') == 1
    from jacreg.checkpoints import load_checkpoint

    load_checkpoint(out)
