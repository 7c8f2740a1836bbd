"""How long the zoo takes from scratch: ``<zoo>/from_scratch.json``.

``python -m jacreg reproduce --zoo`` writes it when it trained every model of the zoo in one invocation
(``--retrain``, or an empty folder), and ``models/README.md`` states it; an invocation that reuses
models leaves it alone, so the README keeps the last from-scratch time beside the last invocation's.
The file is read without trusting it: anything missing, malformed or out of range reads as None.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json

__all__ = ["FROM_SCRATCH", "FromScratch", "read_from_scratch", "write_from_scratch"]

FROM_SCRATCH = "from_scratch.json"
#: Limits on what is read back.
MAX_BYTES, MAX_TEXT = 4096, 300


@dataclass(frozen=True)
class FromScratch:
    """One invocation of ``reproduce --zoo`` that trained and evaluated every model of the zoo.

    Attributes:
        seconds: its wall time, start to end (training, evaluation, README and first view).
        models: how many models it trained.
        workers: worker processes it ran on.
        machine: the machine and software, as :func:`jacreg.reproduce.report.machine` says.
        date: the UTC date it ended (ISO).
    """

    seconds: float
    models: int
    workers: int
    machine: str
    date: str


def write_from_scratch(folder: str | Path, seconds: float, models: int, workers: int, machine: str) -> Path:
    """Record a from-scratch invocation in ``<folder>/from_scratch.json``; returns its path."""
    record = FromScratch(float(seconds), int(models), int(workers), machine,
                         datetime.datetime.now(datetime.UTC).date().isoformat())
    return atomic_write_json(Path(folder) / FROM_SCRATCH, asdict(record))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable() else None


def _count(value: Any, hi: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hi else None


def read_from_scratch(folder: str | Path) -> FromScratch | None:
    """The record in ``<folder>/from_scratch.json``, or None when there is none or it cannot be trusted."""
    path = Path(folder) / FROM_SCRATCH
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        raw = json.loads(path.read_bytes()[:MAX_BYTES].decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    seconds = raw.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or not 0 < seconds < 1e8:
        return None
    models, workers = _count(raw.get("models"), 10_000), _count(raw.get("workers"), 1024)
    machine, date = _text(raw.get("machine")), _text(raw.get("date"))
    if models is None or workers is None or machine is None or date is None:
        return None
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        return None
    return FromScratch(float(seconds), models, workers, machine, date)
