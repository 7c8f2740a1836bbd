"""Files: atomic writes (temporary file in the same folder, fsync, rename), JSON and JSON lines.

JSON written here is strict: infinities and NaN (an infinite radius means "no boundary found", a
NaN accuracy "no sample done") become ``null`` (:func:`finite_or_none`), so any JSON reader can
read the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import OutputError

#: Temporary files of atomic writes: ``.<name>.<pid>.<random>.tmp`` beside the target.
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else the usual 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_error(exc: OSError, path: str | os.PathLike[str], what: str = "") -> OutputError:
    """An OutputError naming the path a user gave and why it cannot be written."""
    label = f"{what} " if what else ""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a part of its folder path is a file, not a folder"
    elif isinstance(exc, FileNotFoundError):
        reason = "its folder cannot be created there"
    else:
        reason = exc.strerror or type(exc).__name__
    return OutputError(f"cannot write {label}{path}: {reason}")


def check_writable(path: str | os.PathLike[str] | None, what: str = "") -> None:
    """Before long work: can ``path`` be written? OutputError now if not, rather than after the work.

    Creates the folder if needed (the write would) and writes and removes a probe file in it, which
    also holds for root (for whom permission bits say little) and for read-only file systems.
    """
    if path is None or str(path) == "":
        return
    target = Path(path)
    label = f"{what} " if what else ""
    if "\0" in str(path):
        raise OutputError(f"cannot write {label}{path!r}: the path contains a NUL character")
    if target.is_dir():
        raise OutputError(f"cannot write {label}{path}: it is a folder")
    probe = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, path, what) from None


def _sweep_stale_temps(target: Path) -> None:
    """Remove temporary files of earlier writes to ``target`` whose writing process is gone (a kill
    during a write cannot run the writer's own clean-up)."""
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m and m.group("name") == target.name and not _pid_alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file; temporary
    files left by a killed writer are removed by the next write to the same path. The file gets the
    usual mode (0666 minus the umask), not the 0600 of a private temporary file.

    Raises:
        OutputError: the folder cannot be created or written, or the path is a folder.
    """
    target = Path(path)
    if "\0" in str(path):
        raise OutputError(f"cannot write {str(path)!r}: the path contains a NUL character")
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        _sweep_stale_temps(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        try:
            write(str(tmp))
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise output_error(exc, path) from None
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
    if "\0" in str(path):
        raise OutputError(f"cannot write {str(path)!r}: the path contains a NUL character")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
    except OSError as exc:
        raise output_error(exc, path) from None


def parse_jsonl(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of JSON-lines bytes: a trailing partial line (a writer may be mid-write) and
    lines that are not a JSON object (corrupt, invalid UTF-8, too deeply nested) are skipped."""
    out: list[dict[str, Any]] = []
    lines = raw.split(b"\n")
    for line in lines[:-1]:  # the last piece has no newline yet (or is empty)
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_jsonl(path: str | os.PathLike[str], offset: int = 0) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file from byte ``offset`` on (see :func:`parse_jsonl`);
    [] when the file is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            if offset > 0:
                fh.seek(offset)
            return parse_jsonl(fh.read())
    except OSError:
        return []


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
