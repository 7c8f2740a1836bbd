"""Reading checkpoint files safely: regular files only, hard size caps, format sniffing, headers.

Threat model: the bytes and the path come from a user (an upload, a command-line argument). Nothing
here executes code from a file or trusts a size or a length it reads: a FIFO or a device is refused
before a byte is read, a file is read with a cap of ``max_bytes + 1`` bytes (``st_size`` is not
trusted), a safetensors header is bounded before it is read, and messages never echo file contents.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import CheckpointError

__all__ = ["CARD_KEY", "DEFAULT_MAX_BYTES", "MAX_HEADER_BYTES", "Blob", "Source", "card_from_header",
           "file_hash", "header_length", "os_error", "parse_header", "read_blob", "read_metadata", "sniff"]

CARD_KEY = "jacreg"
DEFAULT_MAX_BYTES = 200 * 2**20
#: safetensors refuses headers above 100 MB; so do we (a garbage length is refused before reading).
MAX_HEADER_BYTES = 100 * 2**20

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


@dataclass(frozen=True)
class Blob:
    """A checkpoint's bytes, what to call it in messages, a default model name, and whether it came
    from a path (the CLI, the zoo) or from an upload."""

    data: bytes
    where: str
    name: str
    from_path: bool


def file_hash(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (the cache key for uploads)."""
    return hashlib.sha256(bytes(data)).hexdigest()


def os_error(exc: OSError, where: str) -> CheckpointError:
    """A CheckpointError that says why a checkpoint file could not be read."""
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(f"no such checkpoint: {where}")
    if isinstance(exc, IsADirectoryError):
        return CheckpointError(f"{where} is a folder, not a checkpoint file")
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read {where}: permission denied")
    if exc.errno == errno.ELOOP:
        return CheckpointError(f"cannot read {where}: too many levels of symbolic links")
    return CheckpointError(f"cannot read {where}: {exc.strerror or exc}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "device"),
                       (stat.S_ISBLK, "device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _open_regular(path: Path, where: str) -> int:
    """A file descriptor of ``path``, which must be a regular file (after following links).

    Opened non-blocking, so a FIFO cannot hang the open, and checked with ``fstat`` on the open
    descriptor, so the file cannot be swapped between the check and the read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise os_error(exc, where) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise os_error(exc, where) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointError(f"{where} is a {_kind(mode)}, not a checkpoint file")
    os.set_blocking(fd, True)
    return fd


def _read_capped(fd: int, cap: int) -> bytes:
    """At most ``cap`` bytes from ``fd`` (closed afterwards), whatever its size claims."""
    with os.fdopen(fd, "rb") as fh:
        return fh.read(cap)


def _limit_text(max_bytes: int) -> str:
    return f"{max_bytes / 2**20:.0f} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"


def read_blob(source: Source, max_bytes: int = DEFAULT_MAX_BYTES) -> Blob:
    """The bytes of a checkpoint from a path, bytes, or a (binary) file object, with the size limit.

    Raises:
        CheckpointError: missing, not a regular file, unreadable, empty, or over ``max_bytes``.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise CheckpointError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    over = f"over the limit of {_limit_text(max_bytes)} (max_bytes)"
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = Blob(bytes(source), "the uploaded file", "upload", False)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        blob = Blob(_read_capped(_open_regular(path, where), max_bytes + 1), where, path.stem, True)
    elif hasattr(source, "getvalue"):
        name = str(getattr(source, "name", "") or "")
        blob = Blob(bytes(source.getvalue()), f"the uploaded file {name}".rstrip(),
                    Path(name).stem or "upload", False)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError("the file object must be opened in binary mode")
        name = str(getattr(source, "name", "") or "")
        blob = Blob(bytes(data), f"the file {name}".rstrip(), Path(name).stem or "upload", False)
    else:
        raise CheckpointError(f"cannot read a checkpoint from a {type(source).__name__}; "
                              "pass a path or bytes")
    if len(blob.data) > max_bytes:
        raise CheckpointError(f"{blob.where} is {over}")
    if not blob.data:
        raise CheckpointError(f"{blob.where} is empty")
    return blob


def sniff(data: bytes) -> str:
    """The checkpoint format from magic bytes: ``"safetensors"``, ``"torch-zip"``, ``"torch-pickle"``,
    ``"onnx"`` (a protobuf ModelProto starts with field 1, ir_version, a small varint) or ``"unknown"``."""
    if header_length(data[:9]) is not None:
        return "safetensors"
    if data[:4] == b"PK\x03\x04":
        return "torch-zip"
    if data[:1] == b"\x80":
        return "torch-pickle"
    if len(data) > 2 and data[0] == 0x08 and 1 <= data[1] <= 64:
        return "onnx"
    return "unknown"


def header_length(prefix: bytes) -> int | None:
    """The header length when ``prefix`` starts a safetensors file, else None (also when the length
    is implausible: below 2 or above :data:`MAX_HEADER_BYTES`)."""
    if len(prefix) < 9 or prefix[8:9] != b"{":
        return None
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        return None
    return int(n)


def parse_header(raw: bytes, where: str) -> dict[str, Any]:
    """The JSON object of a safetensors header (CheckpointError when corrupt or absurdly nested)."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the safetensors header is corrupt ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header is not a JSON object")
    return header


def card_from_header(header: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The model card stored in a header's metadata ({} when there is none)."""
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or CARD_KEY not in meta:
        return {}
    try:
        card = json.loads(meta[CARD_KEY])
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the model card in the metadata is not valid JSON "
                              f"({type(exc).__name__})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: the model card in the metadata is not a JSON object")
    return card


def _card_of_bytes(data: bytes, where: str) -> dict[str, Any]:
    n = header_length(data[:9])
    if n is None:
        raise CheckpointError(f"{where} is not a safetensors file")
    if 8 + n > len(data):
        raise CheckpointError(f"{where} is a truncated safetensors file (header cut off)")
    return card_from_header(parse_header(data[8:8 + n], where), where)


def read_metadata(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *,
                  where: str | None = None) -> dict[str, Any]:
    """The model card of a safetensors checkpoint, reading only its header (no tensors).

    Args:
        source: a path, or the file's bytes.
        where: what to call the file in messages (default: its path, or "the uploaded file").

    Returns:
        The card as a dict; ``{}`` for a safetensors file without one.

    Raises:
        CheckpointError: missing, not a regular file, not safetensors, truncated, or its card is not JSON.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _card_of_bytes(bytes(source), where or "the uploaded file")
    path = Path(source)
    where = where or str(path)
    with os.fdopen(_open_regular(path, where), "rb") as fh:
        try:
            prefix = fh.read(9)
            n = header_length(prefix)
            if n is None:
                raise CheckpointError(f"{where} is not a safetensors file")
            fh.seek(8)
            raw = fh.read(n)
        except OSError as exc:
            raise os_error(exc, where) from None
    if len(raw) < n:
        raise CheckpointError(f"{where} is a truncated safetensors file (header cut off)")
    return card_from_header(parse_header(raw, where), where)
