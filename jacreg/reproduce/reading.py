"""Reading the reproduction back: Table 1 (``reproduction/table1.csv``) for the dashboard's home page.

:func:`jacreg.reproduce.report.write_table1` writes the table; :func:`read_table1` reads it back
without trusting it (the file may be missing, old, edited or hostile): what cannot be read is left
out, never raised. :func:`table1_display` gives the rows as the page shows them, mean ± standard
deviation over seeds beside the paper's numbers (Hoffman, Roberts & Yaida 2019, Table 1).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..catalog import SOURCE_TREE
from .report import _num, _pct

__all__ = ["Table1Row", "read_table1", "reproduction_dir", "table1_display"]

#: Limits on what is read: bytes of the file, rows, characters of a text cell.
MAX_BYTES, MAX_ROWS, MAX_TEXT = 1 << 20, 200, 120


def reproduction_dir() -> Path:
    """Where ``python -m jacreg reproduce`` wrote its outputs: ``$JACREG_REPRODUCTION_DIR``, else
    ``reproduction/`` of the source tree jacreg runs from, else of the working directory."""
    env = os.environ.get("JACREG_REPRODUCTION_DIR")
    if env:
        return Path(env)
    return (SOURCE_TREE if SOURCE_TREE is not None else Path.cwd()) / "reproduction"


@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1: a regularizer's LeNet', measured (mean and std over seeds) and the paper's.

    Attributes:
        regularizer, model: the setting's label and the model's file stem.
        accuracy, accuracy_std: test accuracy in [0, 1] (std None for one seed or when unknown).
        paper_accuracy: the paper's test accuracy (full MNIST), None if not known.
        jacobian_norm, jacobian_norm_std: mean ||J||_F and its std over seeds.
        paper_jacobian_norm: the paper's ||J||_F.
        seeds, test_samples: how many seeds and test samples the numbers come from (None if unknown).
        dataset: the training dataset ("" in files written before the column existed).
    """

    regularizer: str
    model: str
    accuracy: float | None
    accuracy_std: float | None
    paper_accuracy: float | None
    jacobian_norm: float | None
    jacobian_norm_std: float | None
    paper_jacobian_norm: float | None
    seeds: int | None
    test_samples: int | None
    dataset: str = ""


def _text(value: str | None) -> str:
    text = (value or "").strip()
    return "".join(c for c in text if c.isprintable())[:MAX_TEXT]


def _number(value: str | None, lo: float = 0.0, hi: float = math.inf) -> float | None:
    try:
        v = float((value or "").strip())
    except ValueError:
        return None
    return v if math.isfinite(v) and lo <= v <= hi else None


def _count(value: str | None) -> int | None:
    v = _number(value, 1, 1e9)
    return int(v) if v is not None and v.is_integer() else None


def read_table1(path: str | os.PathLike[str] | None = None) -> list[Table1Row]:
    """The rows of ``table1.csv`` (default: in :func:`reproduction_dir`); [] when the file is missing,
    unreadable, larger than 1 MiB or lacks the ``regularizer`` and ``accuracy`` columns.

    Numbers that are not finite or out of range (an accuracy outside [0, 1], a negative norm) are
    read as None; rows without a regularizer are left out; at most 200 rows are read.
    """
    p = Path(path) if path is not None else reproduction_dir() / "table1.csv"
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return []
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
        if not reader.fieldnames or not {"regularizer", "accuracy"} <= set(reader.fieldnames):
            return []
        records = []
        for rec in reader:
            records.append(rec)
            if len(records) >= MAX_ROWS:
                break
    except (OSError, ValueError, csv.Error):
        return []
    rows = []
    for rec in records:
        reg = _text(rec.get("regularizer"))
        if not reg:
            continue
        rows.append(Table1Row(
            regularizer=reg, model=_text(rec.get("model")), accuracy=_number(rec.get("accuracy"), hi=1.0),
            accuracy_std=_number(rec.get("accuracy_std"), hi=1.0),
            paper_accuracy=_number(rec.get("paper_accuracy"), hi=1.0),
            jacobian_norm=_number(rec.get("jacobian_norm")),
            jacobian_norm_std=_number(rec.get("jacobian_norm_std")),
            paper_jacobian_norm=_number(rec.get("paper_jacobian_norm")), seeds=_count(rec.get("seeds")),
            test_samples=_count(rec.get("test_samples")), dataset=_text(rec.get("dataset"))))
    return rows


def table1_display(rows: list[Table1Row]) -> list[dict[str, str | int | None]]:
    """Rows as the home page shows them: measured mean ± std (where there is a std) beside the paper."""
    out: list[dict[str, str | int | None]] = []
    for r in rows:
        row: dict[str, str | int | None] = {"regularizer": r.regularizer, "model": r.model}
        if r.dataset:
            row["dataset"] = r.dataset
        row.update({"test accuracy": _pct(r.accuracy, r.accuracy_std),
                    "paper: accuracy": _pct(r.paper_accuracy),
                    "mean ||J||_F": _num(r.jacobian_norm, r.jacobian_norm_std),
                    "paper: ||J||_F": _num(r.paper_jacobian_norm, digits=1), "seeds": r.seeds})
        out.append(row)
    return out
