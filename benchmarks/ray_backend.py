"""Benchmark: what running a job on Ray costs against running it here.

    python benchmarks/ray_backend.py [--address HOST:PORT] [--repeats 3]

Without ``--address`` a private Ray head is started on 127.0.0.1 (one CPU, its own temporary
folder) and ended afterwards. Measured, interleaved round-robin so that load hits both alike:

* start-up: ``python -m jacreg train`` of a tiny run (1 epoch, 2 batches of 100, 100 test
  samples), local and ``--backend ray``: seconds from launching the command to its first ``step``
  event in the caller's events file, and to its exit;
* worker start-up in a connected process (the dashboard's case): seconds to start a
  :class:`jacreg.jobs.remote.RaySession` (a Ray actor that imports torch and jacreg);
* per epoch: seconds between epoch events of a 10-epoch run of one batch each, local and on Ray
  (the checkpoint and state of every epoch travel back and are written here);
* events latency: for a Ray run with an event every step (3 epochs of 20 batches), the time an
  event reaches the caller minus the time the worker emitted it (one clock: the head is local).
  A local run hands its events to the callback synchronously: latency 0 by construction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from jacreg.jobs import remote  # noqa: E402
from jacreg.training import TrainConfig  # noqa: E402

TINY = ["--epochs", "1", "--limit-batches", "2", "--eval-samples", "100", "--log-every", "1",
        "--device", "cpu", "--quiet"]


@contextlib.contextmanager
def _head(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    from tests.ray_head import ray_head

    with ray_head() as head:
        try:
            yield head.address
        finally:
            remote.disconnect()


def _cli_run(folder: Path, backend: list[str]) -> tuple[float, float]:
    """(seconds to the first step event, seconds to exit) of one tiny training command."""
    events = folder / f"ev-{time.monotonic_ns()}.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "jacreg", "train", *TINY, *backend, "--out",
                           str(folder / "x.safetensors"), "--events", str(events)],
                          cwd=folder, env=env, capture_output=True, text=True)
    t_exit = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    first = next(e["time"] for e in lines if e["event"] == "step")
    return first - t0, t_exit


def _latency(address: str, folder: Path) -> list[float]:
    lags: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "step":
            lags.append(event["time"] - event["worker_time"])

    config = TrainConfig(epochs=3, limit_batches=20, eval_samples=100, log_every=1, device="cpu",
                         out=str(folder / "lat.safetensors"))
    remote.train_remote(config, address, on_event)
    return lags


def _epoch_seconds(address: str | None, folder: Path) -> float:
    """Median seconds between epoch events of a 10-epoch run of one batch each (in this process)."""
    from jacreg.training import train

    stamps: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "epoch":
            stamps.append(time.perf_counter())

    config = TrainConfig(epochs=10, limit_batches=1, eval_samples=100, log_every=1, device="cpu",
                         out=str(folder / "ep.safetensors"))
    if address:
        remote.train_remote(config, address, on_event)
    else:
        train(config, on_event)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="a running Ray head (default: start one here)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with _head(args.address) as address, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        times: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        sessions: list[float] = []
        epochs: dict[str, list[float]] = {"local": [], "ray": []}
        _cli_run(folder, ["--backend", "ray", "--ray-address", address])  # warm-up: jacreg's first upload
        t0 = time.perf_counter()
        remote.connect(address)
        connect_s = time.perf_counter() - t0
        for _ in range(args.repeats):
            times["local"].append(_cli_run(folder, []))
            times["ray"].append(_cli_run(folder, ["--backend", "ray", "--ray-address", address]))
            t0 = time.perf_counter()
            with remote.RaySession(address, device="cpu"):
                sessions.append(time.perf_counter() - t0)
            epochs["local"].append(_epoch_seconds(None, folder))
            epochs["ray"].append(_epoch_seconds(address, folder))
        lags = _latency(address, folder)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.repeats} interleaved repeats, medians")
    for name, rows in times.items():
        print(f"  {name:5s} command: first step event after {statistics.median(r[0] for r in rows):5.2f} s, "
              f"exit after {statistics.median(r[1] for r in rows):5.2f} s")
    extra = [r[0] - loc[0] for r, loc in zip(times["ray"], times["local"], strict=True)]
    print(f"  Ray start-up overhead to the first step: {statistics.median(extra):.2f} s")
    print(f"  connecting this process to the head: {connect_s:.2f} s (once)")
    print(f"  worker start in a connected process (RaySession): {statistics.median(sessions):.2f} s")
    print(f"  one epoch of one batch + 100 test samples + checkpoint: local "
          f"{statistics.median(epochs['local']):.3f} s, Ray {statistics.median(epochs['ray']):.3f} s")
    print(f"  events latency worker -> caller over {len(lags)} step events: median "
          f"{1000 * statistics.median(lags):.1f} ms, 90% {1000 * _quantile(lags, 0.9):.1f} ms, "
          f"max {1000 * max(lags):.1f} ms")


if __name__ == "__main__":
    main()
