"""Where models live: the zoo (``models/``), trained runs (``runs/<id>/``), uploads, and snapshots.

The app and the CLI list models through :func:`list_models`; nothing here loads weights.
A checkpoint ``<dir>/<stem>.safetensors`` may have per-epoch snapshots beside it, written by
``train --snapshot-every N``: ``<dir>/<stem>.epochs/epoch-NNN.safetensors`` (:func:`snapshot_dir`,
:func:`list_snapshots`); the Cells page plays them as a film.
"""

from __future__ import annotations

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
