"""PyTorch ``.pt``/``.pth`` files: ``torch.load(weights_only=True)`` only, and finding the state dict.

No unsafe fallback: a pickle that names any Python object other than tensors and containers (a
module, a function, ``os.system``) is refused. Common wrappers are unwrapped (``{"state_dict": ...}``,
``model_state_dict``, ``model``, ``net``, ``ema``), DDP ``module.`` and ``torch.compile``
``_orig_mod.`` prefixes stripped, and keys with or without the ``body.`` prefix of
:class:`jacreg.architectures.Normalized` accepted.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["NORMALIZATION_KEYS", "find_state_dict", "first_line", "normalise_keys", "torch_load"]

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "state_dict_ema", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")
NORMALIZATION_KEYS = ("mean", "std")

_REFUSED = ("contains Python code or objects other than tensors and was refused (only weights are "
            "loaded, weights_only=True). Save the state dict instead: torch.save(model.state_dict(), path), "
            "or use safetensors")


#: A torch zip archive may declare at most this many times its own size in its members.
MAX_EXPANSION = 4


def _check_archive(data: bytes, where: str) -> None:
    """A torch zip archive's members must be stored (torch writes them uncompressed) and add up to at
    most a few times the file: a small file cannot make the loader allocate gigabytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{where} is a corrupt or truncated PyTorch checkpoint ({exc})") from None
    declared = sum(m.file_size for m in members)
    if declared > MAX_EXPANSION * len(data) + (1 << 20) or any(m.compress_type != zipfile.ZIP_STORED
                                                               for m in members if m.file_size > (1 << 20)):
        raise CheckpointError(f"{where} declares {declared / 2**20:.0f} MiB of content in a "
                              f"{len(data) / 2**20:.1f} MiB file and was refused")


def torch_load(data: bytes, where: str) -> Any:
    """``torch.load(weights_only=True)`` of a file's bytes, every failure a CheckpointError."""
    if data[:4] == b"PK\x03\x04":
        _check_archive(data, where)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()
        first = next((line for line in detail if "Unsupported" in line or "global" in line.lower()), "")
        raise CheckpointError(f"{where} {_REFUSED}. {first}".strip()) from None
    except RuntimeError as exc:
        text = str(exc)
        if "TorchScript" in text:
            raise CheckpointError(f"{where} is a TorchScript archive, which contains code and was refused; "
                                  "save the state dict instead") from None
        raise CheckpointError(f"{where} is a corrupt or truncated PyTorch checkpoint "
                              f"({first_line(text)})") from None
    except Exception as exc:  # noqa: BLE001 - EOFError, struct.error, ValueError, ... from a damaged file
        raise CheckpointError(f"{where} is a corrupt or truncated PyTorch checkpoint "
                              f"({type(exc).__name__}: {first_line(str(exc))})") from None


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "no details"


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def find_state_dict(obj: Any, where: str, depth: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, unwrapping ``{"state_dict": ...}``-style containers."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < 4:
        for key in WRAPPER_KEYS:
            if key in obj:
                try:
                    return find_state_dict(obj[key], where, depth + 1)
                except CheckpointError:
                    continue
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{where} holds no state dict of tensors (top-level keys: {keys}); expected a "
                              f"state dict, possibly under one of {', '.join(WRAPPER_KEYS)}")
    raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict of tensors")


def normalise_keys(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Strip DDP/compile prefixes and add the ``body.`` prefix of Normalized where it is missing."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if k.startswith(prefix):
                    k, changed = k[len(prefix):], True
        if k not in NORMALIZATION_KEYS and not k.startswith("body."):
            k = "body." + k
        if k in out:
            raise CheckpointError(f"{where} has the weight {k!r} twice (keys {key!r} and another)")
        out[k] = value
    return out
