"""A private Ray head for the Ray backend's tests: 127.0.0.1, free ports, its own temporary folder
and process group, one CPU; ended by the ids of its own processes (never ``ray stop``, which would
stop every head on the machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class RayHead:
    """A running head: ``address`` (GCS, HOST:PORT), ``client_address`` (ray://HOST:PORT), its folder."""

    address: str
    client_address: str
    temp_dir: Path
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(root: int) -> set[int]:
    """Every process whose parent chain reaches ``root`` (from /proc), and the members of its group."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
        groups[int(entry.name)] = int(fields[2])
    found = {pid for pid, group in groups.items() if group == root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if pid not in found and (parent in found or parent == root):
                found.add(pid)
                changed = True
    found.discard(os.getpid())
    return found


@contextlib.contextmanager
def ray_head() -> Iterator[RayHead]:
    """Start ``ray start --head --block`` and yield it once it accepts connections; skip the test
    when Ray is not installed."""
    pytest.importorskip("ray", reason="the Ray backend is optional: pip install 'jacreg[ray]' (make test "
                                      "does)")
    temp = Path(tempfile.mkdtemp(prefix="jr-ray-"))  # short: Ray's socket paths must stay under 108 bytes
    port, client_port = _free_port(), _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(port),
           "--node-ip-address", "127.0.0.1", "--ray-client-server-port", str(client_port),
           "--dashboard-agent-listen-port", str(_free_port()), "--temp-dir", str(temp),
           "--include-dashboard=false", "--num-cpus", "1", "--num-gpus", "0", "--block"]
    log = open(temp / "head.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Ray runtime started" not in (temp / "head.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not start:\n" + (temp / "head.log").read_text()[-3000:])
            time.sleep(0.2)
        yield RayHead(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", temp, proc.pid)
    finally:
        for pid in _descendants(proc.pid) | {proc.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
