"""Where models live: the zoo (``models/``), trained runs (``runs/<id>/``), uploads, and snapshots.

The app and the CLI list models through :func:`list_models`; nothing here loads weights.
The zoo may hold ``first_view.json``, the view the dashboard opens on (written by
``python -m jacreg reproduce --zoo``, read back validated by :func:`first_view`).
A checkpoint ``<dir>/<stem>.safetensors`` may have per-epoch snapshots beside it, written by
``train --snapshot-every N``: ``<dir>/<stem>.epochs/epoch-NNN.safetensors`` (:func:`snapshot_dir`,
:func:`list_snapshots`); the Cells page plays them as a film.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .checkpoints import read_metadata
from .errors import JacregError

#: The source tree jacreg was imported from, when it was (None for an installed package).
SOURCE_TREE: Path | None = next((p for p in [Path(__file__).resolve().parent.parent]
                                 if (p / "pyproject.toml").is_file() and (p / "models").is_dir()), None)


def _home() -> Path:
    """Where ``models/`` and ``runs/`` live by default: the source tree when jacreg runs from one
    (``make app``), else the working directory."""
    return SOURCE_TREE if SOURCE_TREE is not None else Path.cwd()


def models_dir() -> Path:
    """The zoo folder: ``$JACREG_MODELS_DIR``, else ``models/`` of the source tree or the working
    directory."""
    return Path(os.environ.get("JACREG_MODELS_DIR") or _home() / "models")


def runs_dir() -> Path:
    """Where trained runs live: ``$JACREG_RUNS_DIR``, else ``runs/`` of the source tree or the
    working directory."""
    return Path(os.environ.get("JACREG_RUNS_DIR") or _home() / "runs")

Source = Literal["zoo", "run", "upload"]

#: File names of snapshots inside a snapshot folder: ``epoch-001.safetensors``, ...
_SNAPSHOT = re.compile(r"^epoch-(\d{3,})\.safetensors$")


class Snapshot(NamedTuple):
    """One per-epoch snapshot of a training run: the epoch it was written after, and its file."""

    epoch: int
    path: Path


def snapshot_dir(out: str | os.PathLike[str]) -> Path:
    """The folder of a checkpoint's per-epoch snapshots: ``<dir>/<stem>.epochs`` for
    ``<dir>/<stem>.safetensors``."""
    p = Path(out)
    return p.with_name(p.stem + ".epochs") if p.suffix == ".safetensors" else p.with_name(p.name + ".epochs")


def snapshot_path(out: str | os.PathLike[str], epoch: int) -> Path:
    """Where ``train --snapshot-every`` writes the snapshot after ``epoch`` (1-based):
    ``<dir>/<stem>.epochs/epoch-NNN.safetensors``."""
    return snapshot_dir(out) / f"epoch-{int(epoch):03d}.safetensors"


def list_snapshots(path: str | os.PathLike[str]) -> list[Snapshot]:
    """The snapshots of a checkpoint (``path`` is the checkpoint or its ``.epochs`` folder), by
    epoch; empty when there are none."""
    p = Path(path)
    folder = p if p.suffix == ".epochs" else snapshot_dir(p)
    if not folder.is_dir():
        return []
    out = [Snapshot(int(m.group(1)), f) for f in folder.iterdir()
           if (m := _SNAPSHOT.match(f.name)) is not None and f.is_file()]
    return sorted(out)


@dataclass(frozen=True)
class ModelEntry:
    """One model a user can pick: ``key`` is unique across sources (e.g. ``zoo:lenet-jr``)."""

    key: str
    name: str
    source: Source
    path: Path | None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """What a picker shows: name and source."""
        return f"{self.name} ({self.source})"

    @property
    def snapshots(self) -> list[Snapshot]:
        """Its per-epoch snapshots (:func:`list_snapshots`; none for uploads), read now."""
        return list_snapshots(self.path) if self.path is not None else []

    @property
    def has_snapshots(self) -> bool:
        """Whether it has per-epoch snapshots (a film of its training can be played)."""
        return bool(self.snapshots)


def _card(path: Path) -> dict[str, Any]:
    try:
        return read_metadata(path)
    except (JacregError, OSError):
        return {}


def list_models(zoo_dir: str | os.PathLike[str] | None = None,
                run_dir: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Zoo models (``models/*.safetensors``) then finished or checkpointed runs
    (``runs/<id>/model.safetensors``), each with its model card."""
    zoo = Path(zoo_dir) if zoo_dir is not None else models_dir()
    runs = Path(run_dir) if run_dir is not None else runs_dir()
    out: list[ModelEntry] = []
    if zoo.is_dir():
        for p in sorted(zoo.glob("*.safetensors")):
            out.append(ModelEntry(f"zoo:{p.stem}", p.stem, "zoo", p, _card(p)))
    if runs.is_dir():
        for d in sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.name):
            p = d / "model.safetensors"
            if p.is_file():
                meta = _card(p)
                out.append(ModelEntry(f"run:{d.name}", meta.get("name") or d.name, "run", p, meta))
    return out


def find(key: str, entries: list[ModelEntry] | None = None) -> ModelEntry | None:
    """The entry with this key (or name), or None."""
    for e in entries if entries is not None else list_models():
        if e.key == key or e.name == key:
            return e
    return None


#: The file in the zoo folder naming the dashboard's first view (:func:`first_view`).
FIRST_VIEW_FILE = "first_view.json"
#: Planes a first view may name.
FIRST_VIEW_PLANES = ("adversarial", "random")
#: The largest sample index a first view may name (a test split is smaller).
FIRST_VIEW_MAX_SAMPLE = 1_000_000
_FIRST_VIEW_MAX_BYTES = 64 << 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _positive(value: Any) -> float | None:
    """A finite positive float, else None (bools and non-numbers too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) and v > 0 else None


def first_view(zoo_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The dashboard's first view from ``<zoo>/first_view.json``, validated; None when there is none.

    The file is data from disk, so nothing in it is trusted: a missing, unreadable, oversized or
    malformed file, models that are not zoo checkpoints of this folder, a plane other than
    ``adversarial``/``random``, a sample index that is not an integer in [0, 1,000,000] or an extent
    that is not a finite positive number give None. Radii that are not finite positive numbers are
    left out (None stands for "no boundary found"), and a dataset name that is not a short plain
    name becomes None.

    Returns:
        ``{"models": [names], "sample": int, "plane": str, "extent": float,
        "radii": {name: float | None}, "dataset": str | None}``.
    """
    zoo = Path(zoo_dir) if zoo_dir is not None else models_dir()
    path = zoo / FIRST_VIEW_FILE
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_FIRST_VIEW_MAX_BYTES + 1)
        if len(raw) > _FIRST_VIEW_MAX_BYTES:
            return None
        obj = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    names, sample, plane = obj.get("models"), obj.get("sample"), obj.get("plane")
    extent = _positive(obj.get("extent"))
    if (not isinstance(names, list) or len(names) != 2 or len(set(map(str, names))) != 2
            or not all(isinstance(n, str) and _NAME.match(n) for n in names)):
        return None
    if not all((zoo / f"{n}.safetensors").is_file() for n in names):
        return None
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample <= FIRST_VIEW_MAX_SAMPLE:
        return None
    if plane not in FIRST_VIEW_PLANES or extent is None:
        return None
    radii_in = obj.get("radii")
    radii: dict[str, float | None] = {}
    if isinstance(radii_in, dict):
        for n in names:
            if n in radii_in and (radii_in[n] is None or _positive(radii_in[n]) is not None):
                radii[n] = None if radii_in[n] is None else float(radii_in[n])
    dataset = obj.get("dataset")
    if not isinstance(dataset, str) or not _NAME.match(dataset):
        dataset = None
    return {"models": list(names), "sample": int(sample), "plane": str(plane), "extent": extent,
            "radii": radii, "dataset": dataset}
