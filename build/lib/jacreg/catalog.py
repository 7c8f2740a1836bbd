"""Where models live: the zoo (``models/``), trained runs (``runs/<id>/``), and uploads.

The app and the CLI list models through :func:`list_models`; nothing here loads weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
