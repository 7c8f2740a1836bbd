"""Files: atomic writes (temporary file in the same folder, fsync, rename), JSON and JSON lines.

JSON written here is strict: infinities and NaN (an infinite radius means "no boundary found", a
NaN accuracy "no sample done") become ``null`` (:func:`finite_or_none`), so any JSON reader can
read the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, strict JSON (non-finite numbers as null)."""
    return atomic_write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` for our results: tensors, paths, sets and dataclasses converted
    (:func:`jsonable`), infinities and NaN written as null (:func:`finite_or_none`)."""
    return json.dumps(finite_or_none(obj), default=jsonable, allow_nan=False, **kwargs)


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and flush it (a reader polling the file sees whole lines)."""
    line = dumps(record) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a trailing partial line (a writer may be mid-write)."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    except FileNotFoundError:
        return []
    return out


def jsonable(obj: Any) -> Any:
    """``json.dumps(default=...)`` for tensors/arrays, paths, sets and dataclasses."""
    if hasattr(obj, "tolist"):
        return finite_or_none(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return finite_or_none(list(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return finite_or_none(dataclasses.asdict(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def finite_or_none(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float (inf, -inf, NaN) replaced by None.

    Dicts (keys made strings), lists and tuples are copied recursively; numpy and torch scalars
    count as floats; everything else is returned as it is. The one place where our results are made
    fit for strict JSON and for tables.
    """
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        value = obj.item()
        return finite_or_none(value) if isinstance(value, (float, int, bool)) else obj
    return obj
