"""Robustness results stored next to a model (``robustness.json``), so curves survive the session."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json
from .folders import MODEL_FILE

__all__ = ["record_robustness", "robustness_path", "robustness_results"]


def robustness_path(model_path: str | os.PathLike[str]) -> Path:
    """Where robustness results of a model are kept: ``runs/<id>/robustness.json`` for a run
    (``model.safetensors``), ``<stem>.robustness.json`` next to any other checkpoint."""
    p = Path(model_path)
    if p.name == MODEL_FILE:
        return p.parent / "robustness.json"
    return p.with_name(p.stem + ".robustness.json")


def robustness_results(model_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The robustness curves stored for a model (oldest first; empty when none).

    The file holds a list of results as ``python -m jacreg robustness --json`` writes them
    (``attack``, ``epsilons``, ``accuracy``, ``samples``, ...); a single result is accepted too.
    """
    path = robustness_path(model_path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return []
    if isinstance(obj, dict):
        obj = obj.get("results", [obj])
    return [r for r in obj if isinstance(r, dict)] if isinstance(obj, list) else []


def record_robustness(model_path: str | os.PathLike[str], result: Mapping[str, Any],
                      keep: int = 20) -> Path:
    """Append a robustness result to the model's stored results (atomic; the last ``keep`` kept)."""
    path = robustness_path(model_path)
    rows = robustness_results(model_path) + [dict(result, recorded=time.time())]
    return atomic_write_json(path, rows[-keep:])
