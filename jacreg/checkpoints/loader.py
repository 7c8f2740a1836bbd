"""Loading a checkpoint users bring: the one loader of the CLI, the app and uploads.

Order of the checks (each before any work it protects): regular file and size cap; format by magic
bytes; the card's fields validated; the model built on the ``meta`` device (no memory) and its
parameter shapes compared with the file's; only then the real model built, loaded with
``strict=True``, checked for NaN/inf weights, and run once on a zero input of the card's (bounded)
shape to check that it returns one logit per class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from torch import nn

from .. import architectures
from .. import data as datasets
from .. import device as _device
from ..errors import CheckpointError, ConfigError
from .card import resolve_card
from .matching import Match, describe_matches, match_architectures
from .onnx_models import load_onnx
from .reading import DEFAULT_MAX_BYTES, Source, file_hash, read_blob, read_metadata, sniff
from .torch_files import NORMALIZATION_KEYS, find_state_dict, first_line, normalise_keys, torch_load

__all__ = ["load_checkpoint"]


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


def load_checkpoint(source: Source, *, arch: str | None = None, dataset: str | None = None,
                    num_classes: int | None = None, device: str | torch.device = "cpu",
                    max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model safely: safetensors (with or without a card), a PyTorch state dict, or ONNX.

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
    blob = read_blob(source, max_bytes)
    data, where = blob.data, blob.where
    fmt = sniff(data)
    if fmt == "unknown":
        raise CheckpointError(f"{where} is not a safetensors, PyTorch or ONNX model (unrecognised format)")
    if fmt == "onnx":
        folder = Path(str(source)).parent if blob.from_path else None
        model, meta = load_onnx(data, where, dataset, folder=folder, max_bytes=max_bytes)
        _check_forward(model, meta, where)
        meta.update(sha256=file_hash(data), name=meta.get("name") or blob.name)
        return model.to(dev), meta
    if fmt == "safetensors":
        card = read_metadata(data, where=where)
        try:
            state = st_load(data)
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
            raise CheckpointError(f"{where} is a corrupt or truncated safetensors file "
                                  f"({first_line(str(exc))})") from None
        if not state:
            raise CheckpointError(f"{where} contains no tensors")
    else:
        card = {}
        state = find_state_dict(torch_load(data, where), where)
    state = normalise_keys(state, where)
    inferred = None
    if arch is None and not card.get("arch"):
        inferred = _infer_architecture(state, where, dataset)
        arch = inferred.arch
        num_classes = num_classes if num_classes is not None else inferred.num_classes
        dataset = dataset or inferred.dataset
    meta = resolve_card(card, arch, dataset, num_classes, where, blob.name)
    if inferred is not None:
        meta["inferred"] = (f"{where} has no model card: its weights fit {inferred.describe()}, loaded as "
                            "that (--arch / --dataset, or the architecture and dataset of an upload, "
                            "override it)")
    with torch.device("meta"):  # shapes only: nothing is allocated before the weights are known to fit
        skeleton = _build(meta, where)
    _complete_normalization(skeleton, state, meta)
    _check_match(skeleton, state, meta["arch"], meta["num_classes"], where)
    _check_finite(state, where)
    model = _build(meta, where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: the weights do not fit architecture {meta['arch']!r} (wrong "
                              f"architecture?): {first_line(str(exc))}") from None
    model.eval()
    meta["mean"] = [float(v) for v in model.mean.flatten().tolist()]
    meta["std"] = [float(v) for v in model.std.flatten().tolist()]
    if any(not s > 0 for s in meta["std"]):
        raise CheckpointError(f"{where}: the normalisation buffer std must be positive, got {meta['std']}")
    _check_forward(model, meta, where)
    meta["format"] = "safetensors" if fmt == "safetensors" else "torch"
    meta["sha256"] = file_hash(data)
    if not card:
        meta["source"] = "file" if blob.from_path else "upload"
    return model.to(dev), meta


def _infer_architecture(state: Mapping[str, torch.Tensor], where: str, dataset: str | None) -> Match:
    """The one registered architecture a card-less file fits, or a CheckpointError in plain words."""
    matches = match_architectures(state)
    if dataset is not None:
        shape = datasets.dataset_spec(dataset).input_shape
        matches = [replace(m, dataset=dataset) for m in matches if m.input_shape == shape] or matches
    choose = (f"choose the architecture (--arch / arch=, one of {', '.join(architectures.names())}) and the "
              "dataset (--dataset / dataset=)")
    if not matches:
        raise CheckpointError(f"{where} has no model card and its weights fit none of the registered "
                              f"architectures: {choose}, or upload the model as ONNX")
    if len(matches) > 1:
        raise CheckpointError(f"{where} has no model card and its weights fit several architectures "
                              f"({describe_matches(matches)}): {choose}")
    return matches[0]


def _build(meta: Mapping[str, Any], where: str) -> architectures.Normalized:
    try:
        return architectures.create(meta["arch"], num_classes=meta["num_classes"],
                                    input_shape=meta["input_shape"], dropout=meta["dropout"],
                                    mean=meta["mean"], std=meta["std"])
    except (ConfigError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: the model card describes a model that cannot be built: "
                              f"{first_line(str(exc))}") from None


def _complete_normalization(model: nn.Module, state: dict[str, torch.Tensor],
                            meta: Mapping[str, Any]) -> None:
    """Files saved without the Normalized wrapper get the card's mean and std (one value per
    channel, or one for all); stored ones are reshaped to the buffers' (1, C, 1, 1)."""
    channels = int(meta["input_shape"][0])
    for key in NORMALIZATION_KEYS:
        shape = getattr(model, key).shape
        if key not in state:
            values = list(meta[key]) * (channels if len(meta[key]) == 1 else 1)
            state[key] = torch.tensor(values, dtype=torch.float32).reshape(shape)
        elif state[key].numel() == shape.numel():
            state[key] = state[key].reshape(shape)


def _check_forward(model: nn.Module, meta: Mapping[str, Any], where: str) -> None:
    """One forward pass on a zero input of the card's shape: one finite logit per class."""
    shape = tuple(int(v) for v in meta["input_shape"])
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure of a dummy forward is a bad checkpoint
        raise CheckpointError(f"{where}: the model fails on an input of shape {shape} "
                              f"({first_line(str(exc))}); wrong input_shape in the card?") from None
    if tuple(out.shape) != (1, meta["num_classes"]):
        raise CheckpointError(f"{where}: wrong number of classes: the model returns shape "
                              f"{tuple(out.shape)}, expected (1, {meta['num_classes']})")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{where}: the model returns non-finite logits on a zero input")
