"""Run folders: one folder per job, its files, its lock, and its status file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import catalog
from ..errors import JacregError
from ..fileio import atomic_write_json

__all__ = ["CONFIG_FILE", "EVENTS_FILE", "LOCK_FILE", "LOG_FILE", "MODEL_FILE", "RESULT_FILE", "STATUS_FILE",
           "locked", "new_run_dir", "read_json", "runs_root", "update_status"]

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "log.txt"
MODEL_FILE = "model.safetensors"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def runs_root(runs_dir: str | os.PathLike[str] | None) -> Path:
    """The runs folder as an absolute path (jobs run in their own folder, not the caller's)."""
    return (Path(runs_dir) if runs_dir is not None else catalog.runs_dir()).absolute()


def new_run_dir(runs_dir: str | os.PathLike[str] | None = None, prefix: str = "") -> Path:
    """Create a fresh, uniquely named run folder (timestamp + random suffix, exclusive mkdir)."""
    root = runs_root(runs_dir)
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
def locked(run_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on the run folder (read-modify-write of status.json)."""
    with open(run_dir / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write of a run's ``status.json`` under the folder's lock; returns the new status."""
    with locked(run_dir):
        status = read_json(run_dir / STATUS_FILE)
        status.update(changes)
        atomic_write_json(run_dir / STATUS_FILE, status)
    return status
