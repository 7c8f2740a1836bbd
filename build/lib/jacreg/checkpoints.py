"""Checkpoints: safetensors with a model card, and a safe loader for files users bring.

Format written here: safetensors (tensors only, no code) whose header metadata holds the model card
as JSON under the key ``"jacreg"``::

    {"name", "arch", "dataset", "num_classes", "input_shape", "mean", "std", "dropout",
     "config" (the TrainConfig as a dict), "metrics", "history", "jacreg_version", "created"}

:func:`load_checkpoint` is the one loader for the CLI, the app and uploads. It takes safetensors
files and PyTorch ``.pt``/``.pth`` state dicts and never runs code from a file:

* size limit first, then format sniffing by magic bytes (safetensors header, torch zip ``PK``,
  legacy torch pickle ``0x80``); anything else is refused;
* torch files go through ``torch.load(..., weights_only=True)`` (always passed explicitly, which no
  environment variable can override) and there is no unsafe fallback: a pickle that names any
  Python object other than tensors and containers (a module, a function, ``os.system``) is refused;
* common wrappers are unwrapped (``{"state_dict": ...}``, ``model_state_dict``, ``model``, ``net``,
  ``ema``), DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes stripped, and keys with or
  without the ``body.`` prefix of :class:`jacreg.architectures.Normalized` accepted;
* the model is built from the card (or from the caller's choice of architecture and dataset for a
  file without a card), loaded with ``strict=True``, checked for NaN/inf weights, and run once on a
  zero input to check that it returns one logit per class.

Every failure raises :class:`jacreg.errors.CheckpointError` with a message that says what is wrong.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import __version__, architectures
from . import data as datasets
from . import device as _device
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write_bytes, jsonable

CARD_KEY = "jacreg"
DEFAULT_MAX_BYTES = 200 * 2**20
#: safetensors refuses headers above 100 MB; so do we (a garbage length is refused before reading).
MAX_HEADER_BYTES = 100 * 2**20
REQUIRED_KEYS = ("arch", "dataset", "num_classes")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "state_dict_ema", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")
NORMALIZATION_KEYS = ("mean", "std")

Source = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]


# --------------------------------------------------------------------------------------------------
# Saving


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)
    while isinstance(inner, nn.Module):  # DDP / DataParallel
        model, inner = inner, getattr(inner, "module", None)
    return model


def _first_dropout(model: nn.Module) -> float:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            return float(m.p)
    return 0.0


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that own their memory (safetensors refuses shared or strided ones)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def build_card(model: nn.Module, meta: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The model card that :func:`save_checkpoint` stores: ``meta`` completed from the model.

    Fills ``input_shape`` (the dataset's, else the architecture's), ``mean``/``std`` (the model's
    normalisation buffers), ``dropout``, ``name``, ``jacreg_version`` and ``created`` (UTC, ISO 8601)
    when they are missing.

    Raises:
        ConfigError: ``meta`` lacks arch, dataset or num_classes, or names an unknown architecture.
    """
    if not isinstance(meta, Mapping):
        raise ConfigError(f"meta must be a dict with at least {', '.join(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if meta.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"the model card needs {', '.join(REQUIRED_KEYS)}; missing: {', '.join(missing)}")
    card = dict(meta)
    arch_spec = architectures.spec(str(card["arch"]))
    try:
        card["num_classes"] = int(card["num_classes"])
    except (TypeError, ValueError):
        raise ConfigError(f"num_classes must be an integer, got {card['num_classes']!r}") from None
    inner = _unwrap(model)
    if card.get("input_shape") is None:
        card["input_shape"] = list(_dataset_defaults(str(card["dataset"])).get("input_shape")
                                   or arch_spec.defaults.input_shape)
    for key in NORMALIZATION_KEYS:
        if card.get(key) is None:
            buf = getattr(inner, key, None)
            card[key] = ([float(v) for v in buf.flatten().tolist()] if isinstance(buf, torch.Tensor)
                         else list(getattr(arch_spec.defaults, key)))
    if card.get("dropout") is None:
        card["dropout"] = _first_dropout(inner)
    if name is not None and not card.get("name"):
        card["name"] = name
    card.setdefault("jacreg_version", __version__)
    card.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return card


def save_checkpoint(model: nn.Module, meta: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save ``model``'s weights as safetensors with the model card in the header, atomically.

    Args:
        model: the network (a :class:`~jacreg.architectures.Normalized`, possibly DDP-wrapped).
        meta: the model card; at least ``arch``, ``dataset``, ``num_classes``. Also usual: ``name``,
            ``config`` (TrainConfig as a dict), ``metrics``, ``history``. Values must be JSON-able
            (tuples, Paths, tensors and dataclasses are converted).
        path: the ``.safetensors`` file to write (folders are created). A crash leaves the previous
            file intact.

    Returns:
        The path written.

    Raises:
        ConfigError: ``meta`` is incomplete or not JSON-able.
    """
    card = build_card(model, meta, name=Path(path).stem)
    try:
        card_json = json.dumps(card, default=jsonable, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the model card cannot be stored as JSON: {exc}") from exc
    payload = st_save(_state_tensors(_unwrap(model)), metadata={CARD_KEY: card_json, "format": "pt"})
    return atomic_write_bytes(path, payload)


# --------------------------------------------------------------------------------------------------
# Reading


def file_hash(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (the cache key for uploads)."""
    return hashlib.sha256(bytes(data)).hexdigest()


def _header_length(prefix: bytes, total: int) -> int | None:
    """Header length when ``prefix`` starts a safetensors file of ``total`` bytes, else None."""
    if len(prefix) < 9 or prefix[8:9] != b"{":
        return None
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        return None
    return n


def _parse_header(raw: bytes, where: str) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: the safetensors header is corrupt ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header is not a JSON object")
    return header


def _card_from_header(header: Mapping[str, Any], where: str) -> dict[str, Any]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or CARD_KEY not in meta:
        return {}
    try:
        card = json.loads(meta[CARD_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: the model card in the metadata is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: the model card in the metadata is not a JSON object")
    return card


def read_metadata(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> dict[str, Any]:
    """The model card of a safetensors checkpoint, reading only its header (no tensors).

    Args:
        source: a path, or the file's bytes.

    Returns:
        The card as a dict; ``{}`` for a safetensors file without one.

    Raises:
        CheckpointError: the file is missing, not safetensors, truncated, or its card is not JSON.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = "the uploaded file"
        n = _header_length(data[:9], len(data))
        if n is None:
            raise CheckpointError(f"{where} is not a safetensors file")
        if 8 + n > len(data):
            raise CheckpointError(f"{where} is a truncated safetensors file (header cut off)")
        return _card_from_header(_parse_header(data[8:8 + n], where), where)
    path = Path(source)
    where = str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(9)
            n = _header_length(prefix, size)
            if n is None:
                raise CheckpointError(f"{where} is not a safetensors file")
            if 8 + n > size:
                raise CheckpointError(f"{where} is a truncated safetensors file (header cut off)")
            fh.seek(8)
            raw = fh.read(n)
    except OSError as exc:
        raise _os_error(exc, where) from None
    return _card_from_header(_parse_header(raw, where), where)


def _os_error(exc: OSError, where: str) -> CheckpointError:
    """A CheckpointError that says why a checkpoint file could not be read."""
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(f"no such checkpoint: {where}")
    if isinstance(exc, IsADirectoryError):
        return CheckpointError(f"{where} is a folder, not a checkpoint file")
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read {where}: permission denied")
    return CheckpointError(f"cannot read {where}: {exc}")


def _read_source(source: Source, max_bytes: int) -> tuple[bytes, str, str]:
    """(bytes, a name for messages, a default model name), enforcing the size limit."""
    limit_text = f"{max_bytes / 2**20:.0f} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where, name = "the uploaded file", "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where, name = str(path), path.stem
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise CheckpointError(f"{where} is {size / 2**20:.1f} MiB, over the limit of {limit_text} "
                                      "(max_bytes)")
            data = path.read_bytes()
        except OSError as exc:
            raise _os_error(exc, where) from None
    elif hasattr(source, "getvalue"):
        data = bytes(source.getvalue())
        where = f"the uploaded file {getattr(source, 'name', '')}".rstrip()
        name = Path(str(getattr(source, "name", "upload"))).stem or "upload"
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError("the file object must be opened in binary mode")
        data = bytes(data)
        where = f"the file {getattr(source, 'name', '')}".rstrip()
        name = Path(str(getattr(source, "name", "upload"))).stem or "upload"
    else:
        raise CheckpointError(f"cannot read a checkpoint from a {type(source).__name__}; "
                              "pass a path or bytes")
    if len(data) > max_bytes:
        raise CheckpointError(f"{where} is {len(data) / 2**20:.1f} MiB, over the limit of {limit_text} "
                              "(max_bytes)")
    if not data:
        raise CheckpointError(f"{where} is empty")
    return data, where, name


def sniff(data: bytes) -> str:
    """The checkpoint format from magic bytes: ``"safetensors"``, ``"torch-zip"``, ``"torch-pickle"``
    or ``"unknown"``."""
    if _header_length(data[:9], len(data)) is not None:
        return "safetensors"
    if data[:4] == b"PK\x03\x04":
        return "torch-zip"
    if data[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


_REFUSED = ("contains Python code or objects other than tensors and was refused (only weights are "
            "loaded, weights_only=True). Save the state dict instead: torch.save(model.state_dict(), path), "
            "or use safetensors")


def _torch_load(data: bytes, where: str) -> Any:
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
                              f"({_first_line(text)})") from None
    except Exception as exc:  # noqa: BLE001 - EOFError, struct.error, ValueError, ... from a damaged file
        raise CheckpointError(f"{where} is a corrupt or truncated PyTorch checkpoint "
                              f"({type(exc).__name__}: {_first_line(str(exc))})") from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "no details"


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _find_state_dict(obj: Any, where: str, depth: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, unwrapping ``{"state_dict": ...}``-style containers."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < 4:
        for key in WRAPPER_KEYS:
            if key in obj:
                try:
                    return _find_state_dict(obj[key], where, depth + 1)
                except CheckpointError:
                    continue
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{where} holds no state dict of tensors (top-level keys: {keys}); expected a "
                              f"state dict, possibly under one of {', '.join(WRAPPER_KEYS)}")
    raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict of tensors")


def _normalise_keys(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
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


def _dataset_defaults(dataset: str | None) -> dict[str, Any]:
    """input_shape/num_classes/mean/std of a registered dataset; {} for an unknown or no dataset."""
    if not dataset:
        return {}
    try:
        s = datasets.dataset_spec(dataset)
    except ConfigError:
        return {}
    return {"input_shape": s.input_shape, "num_classes": s.num_classes, "mean": s.mean, "std": s.std}


def _short(keys: list[str], n: int = 4) -> str:
    text = ", ".join(keys[:n])
    return text + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _head_weight(expected: Mapping[str, torch.Tensor]) -> str | None:
    """The last 2-D weight of the model: the classifier layer whose rows are the classes."""
    keys = [k for k, v in expected.items() if k.endswith("weight") and v.ndim == 2]
    return keys[-1] if keys else None


def _check_match(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, num_classes: int,
                 where: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return
    head = _head_weight(expected)
    if not missing and not unexpected and head is not None:
        head_bias = head[: -len("weight")] + "bias"
        fw, mw = state[head].shape, expected[head].shape
        if set(wrong) <= {head, head_bias} and head in wrong and fw[1:] == mw[1:]:
            raise CheckpointError(
                f"{where}: wrong number of classes: the weights have {fw[0]} outputs but the model card / "
                f"your choice says num_classes={num_classes}; pass num_classes={fw[0]} "
                "(or the matching dataset)")
    parts = []
    if missing:
        parts.append(f"missing {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected {_short(unexpected)}")
    if wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong]
        parts.append(f"shape mismatch (file vs {arch}) {_short(shapes, 3)}")
    raise CheckpointError(f"{where}: the weights do not fit architecture {arch!r} (wrong architecture?): "
                          + "; ".join(parts))


def _check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{where} has non-finite (NaN or inf) weights in {_short(bad)}; the training "
                              "that produced it diverged")


def _resolve_card(card: Mapping[str, Any], arch: str | None, dataset: str | None, num_classes: int | None,
                  where: str, name: str) -> dict[str, Any]:
    """The card to build from: the file's card, with the caller's explicit choices taking precedence."""
    meta = dict(card)
    if arch is not None:
        meta["arch"] = arch
    if dataset is not None:
        meta["dataset"] = dataset
    if num_classes is not None:
        meta["num_classes"] = num_classes
    if not meta.get("arch"):
        what = "has no model card" if not card else "has a model card without an architecture"
        raise CheckpointError(f"{where} {what}: choose the architecture (arch=, one of "
                              f"{', '.join(architectures.names())}) and the dataset (dataset=) "
                              "or num_classes")
    if meta["arch"] not in architectures.names():
        raise CheckpointError(f"{where}: unknown architecture {meta['arch']!r}; choose one of "
                              f"{', '.join(architectures.names())}")
    if dataset is not None:
        datasets.dataset_spec(dataset)  # ConfigError listing the valid names
    defaults = _dataset_defaults(meta.get("dataset"))
    arch_spec = architectures.spec(meta["arch"])
    if meta.get("num_classes") in (None, ""):
        if "num_classes" not in defaults:
            raise CheckpointError(f"{where}: the number of classes is unknown: choose the dataset (dataset=) "
                                  "or num_classes")
        meta["num_classes"] = defaults["num_classes"]
    try:
        meta["num_classes"] = int(meta["num_classes"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: num_classes must be an integer, "
                              f"got {meta['num_classes']!r}") from None
    if meta["num_classes"] < 2:
        raise CheckpointError(f"{where}: num_classes must be at least 2, got {meta['num_classes']}")
    for key in ("input_shape", "mean", "std"):
        if meta.get(key) is None:
            meta[key] = defaults.get(key) or getattr(arch_spec.defaults, key)
        meta[key] = list(meta[key])
    if meta.get("dropout") is None:
        meta["dropout"] = arch_spec.default_dropout
    if not meta.get("dataset"):
        meta["dataset"] = None
    if not card:
        meta.setdefault("name", name)
    return meta


def load_checkpoint(source: Source, *, arch: str | None = None, dataset: str | None = None,
                    num_classes: int | None = None, device: str | torch.device = "cpu",
                    max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint safely: safetensors (with or without a card) or a PyTorch state dict.

    Never executes code from the file (see the module docstring for every check).

    Args:
        source: a path, the file's bytes (e.g. from ``st.file_uploader(...).getvalue()``), or a binary
            file object.
        arch, dataset, num_classes: the caller's choice; required for a file without a model card
            (``arch`` and one of ``dataset``/``num_classes``); when given, they take precedence over
            the card.
        device: where the model goes (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        max_bytes: refuse larger files (default 200 MiB).

    Returns:
        ``(model, meta)``: the model in eval mode on ``device`` (a
        :class:`~jacreg.architectures.Normalized` taking [0, 1] images), and the model card as a dict
        (arch, dataset, num_classes, input_shape, mean, std, dropout, ..., plus ``format`` and
        ``sha256``; files without a card get ``source`` = ``"upload"`` or ``"file"``).

    Raises:
        CheckpointError: too large, empty, not a checkpoint, truncated, contains code, no card and no
            architecture chosen, weights that do not fit, NaN/inf weights, wrong number of classes.
        ConfigError: an unknown dataset or device was passed.
    """
    dev = _device.pick(device)
    data, where, name = _read_source(source, max_bytes)
    fmt = sniff(data)
    if fmt == "unknown":
        raise CheckpointError(f"{where} is not a safetensors or PyTorch checkpoint (unrecognised first bytes "
                              f"{data[:8]!r})")
    if fmt == "safetensors":
        card = read_metadata(data)
        try:
            state = st_load(data)
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
            raise CheckpointError(f"{where} is a corrupt or truncated safetensors file "
                                  f"({_first_line(str(exc))})") from None
        if not state:
            raise CheckpointError(f"{where} contains no tensors")
    else:
        card = {}
        state = _find_state_dict(_torch_load(data, where), where)
    meta = _resolve_card(card, arch, dataset, num_classes, where, name)
    state = _normalise_keys(state, where)
    try:
        model = architectures.create(meta["arch"], num_classes=meta["num_classes"],
                                     input_shape=meta["input_shape"], dropout=meta["dropout"],
                                     mean=meta["mean"], std=meta["std"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: the model card describes a model that cannot be built: "
                              f"{exc}") from None
    for key in NORMALIZATION_KEYS:  # files saved without the Normalized wrapper: use the card's values
        buf = getattr(model, key)
        if key not in state:
            state[key] = buf.detach().clone()
        elif state[key].numel() == buf.numel():
            state[key] = state[key].reshape(buf.shape)
    _check_match(model, state, meta["arch"], meta["num_classes"], where)
    _check_finite(state, where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: the weights do not fit architecture {meta['arch']!r} (wrong "
                              f"architecture?): {_first_line(str(exc))}") from None
    model.eval()
    meta["mean"] = [float(v) for v in model.mean.flatten().tolist()]
    meta["std"] = [float(v) for v in model.std.flatten().tolist()]
    if any(s <= 0 for s in meta["std"]):
        raise CheckpointError(f"{where}: the normalisation buffer std must be positive, got {meta['std']}")
    shape = tuple(int(v) for v in meta["input_shape"])
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure of a dummy forward is a bad checkpoint
        raise CheckpointError(f"{where}: the model fails on an input of shape {shape} "
                              f"({_first_line(str(exc))}); wrong input_shape in the card?") from None
    if tuple(out.shape) != (1, meta["num_classes"]):
        raise CheckpointError(f"{where}: wrong number of classes: the model returns shape "
                              f"{tuple(out.shape)}, expected (1, {meta['num_classes']})")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{where}: the model returns non-finite logits on a zero input")
    meta["format"] = "safetensors" if fmt == "safetensors" else "torch"
    meta["sha256"] = file_hash(data)
    if not card:
        meta["source"] = "file" if isinstance(source, (str, os.PathLike)) else "upload"
    return model.to(dev), meta
