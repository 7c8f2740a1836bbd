"""Curves as files: strict JSON and CSV rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from ..fileio import finite_or_none

__all__ = ["to_csv", "to_jsonable"]


def to_jsonable(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result with inf/NaN replaced by None (strict JSON); lists and dicts copied."""
    return finite_or_none(dict(result))


def _cell(value: Any) -> str:
    v = finite_or_none(value)
    return "" if v is None else f"{v:.6g}"


def to_csv(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """One row per (model, attack, epsilon): model, attack, norm, epsilon, accuracy, raw_accuracy,
    samples, seconds."""
    items = [results] if isinstance(results, Mapping) else list(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "attack", "norm", "epsilon", "accuracy", "raw_accuracy", "samples", "seconds"])
    for r in items:
        raw = r.get("raw_accuracy") or [None] * len(r["epsilons"])
        for e, a, ra in zip(r["epsilons"], r["accuracy"], raw, strict=False):
            w.writerow([r.get("model", ""), r["attack"], r["norm"], f"{e:g}", _cell(a), _cell(ra),
                        r["samples"], f"{r['seconds']:.3f}"])
    return buf.getvalue()
