"""Model cards: what a checkpoint says about its model, checked before anything is built from it.

A card is untrusted input. :func:`validate_card` checks the type and range of every field a model is
built from (architecture, classes, input shape, normalisation, dropout) *before* any allocation, so
that a small file cannot make the loader build a huge model or run a huge input through it.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .. import __version__, architectures
from .. import data as datasets
from ..errors import CheckpointError, ConfigError

__all__ = ["MAX_CLASSES", "MAX_INPUT_VALUES", "REQUIRED_KEYS", "build_card", "dataset_defaults",
           "resolve_card", "unwrap", "validate_card"]

REQUIRED_KEYS = ("arch", "dataset", "num_classes")
NORMALIZATION_KEYS = ("mean", "std")
#: The largest number of classes a card may claim.
MAX_CLASSES = 100_000
#: The largest input a card may claim (values per sample: 3 x 512 x 512; ImageNet's 224 x 224 is 150,528).
MAX_INPUT_VALUES = 3 * 512 * 512
MAX_CHANNELS = 16
MAX_TEXT = 500


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel wrappers."""
    inner = getattr(model, "module", None)
    while isinstance(inner, nn.Module):
        model, inner = inner, getattr(inner, "module", None)
    return model


def dataset_defaults(dataset: Any) -> dict[str, Any]:
    """input_shape/num_classes/mean/std of a registered dataset; {} for an unknown or no dataset."""
    if not isinstance(dataset, str) or not dataset:
        return {}
    try:
        s = datasets.dataset_spec(dataset)
    except ConfigError:
        return {}
    return {"input_shape": s.input_shape, "num_classes": s.num_classes, "mean": s.mean, "std": s.std}


def _integer(value: Any, what: str, lo: int, hi: int, where: str) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ok, value = True, int(value)
    if not ok or not lo <= value <= hi:
        raise CheckpointError(f"{where}: {what} must be an integer from {lo} to {hi:,}, got {value!r:.60}")
    return int(value)


def _numbers(value: Any, what: str, where: str, positive: bool = False) -> list[float]:
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_CHANNELS:
        raise CheckpointError(f"{where}: {what} must be a list of 1 to {MAX_CHANNELS} numbers, "
                              f"got {value!r:.60}")
    out = []
    for v in value:
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not number or (positive and v <= 0):
            kind = "positive finite numbers" if positive else "finite numbers"
            raise CheckpointError(f"{where}: {what} must hold {kind}, got {v!r:.60}")
        out.append(float(v))
    return out


def validate_card(card: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check the fields a model is built from; returns a copy with them normalised.

    Checked when present: ``arch`` (a registered name), ``dataset`` (text), ``num_classes`` (2 to
    :data:`MAX_CLASSES`), ``input_shape`` (three positive integers, at most :data:`MAX_INPUT_VALUES`
    values), ``mean``/``std`` (1 or C finite numbers, std positive), ``dropout`` (in [0, 1)),
    ``name`` (text).

    Raises:
        CheckpointError: a field has the wrong type or is out of range (the message names it).
    """
    out = dict(card)
    for key in ("arch", "dataset", "name"):
        v = out.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > MAX_TEXT):
            raise CheckpointError(f"{where}: {key} must be text (at most {MAX_TEXT} characters), "
                                  f"got {v!r:.60}")
    if out.get("arch") is not None and out["arch"] not in architectures.names():
        raise CheckpointError(f"{where}: unknown architecture {out['arch']!r:.60}; choose one of "
                              f"{', '.join(architectures.names())}")
    if out.get("num_classes") is not None:
        out["num_classes"] = _integer(out["num_classes"], "num_classes", 2, MAX_CLASSES, where)
    if out.get("input_shape") is not None:
        shape = out["input_shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) != 3:
            raise CheckpointError(f"{where}: input_shape must be [C, H, W], got {shape!r:.60}")
        c, h, w = (_integer(v, "input_shape", 1, MAX_INPUT_VALUES, where) for v in shape)
        if c > MAX_CHANNELS or c * h * w > MAX_INPUT_VALUES:
            raise CheckpointError(f"{where}: input_shape {[c, h, w]} is too large (at most {MAX_CHANNELS} "
                                  f"channels and {MAX_INPUT_VALUES:,} values per sample)")
        out["input_shape"] = [c, h, w]
    for key in NORMALIZATION_KEYS:
        if out.get(key) is not None:
            out[key] = _numbers(out[key], key, where, positive=key == "std")
    channels = out["input_shape"][0] if out.get("input_shape") else None
    for key in NORMALIZATION_KEYS:
        if channels is not None and out.get(key) is not None and len(out[key]) not in (1, channels):
            raise CheckpointError(f"{where}: {key} has {len(out[key])} values for {channels} input channels")
    if out.get("dropout") is not None:
        d = out["dropout"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise CheckpointError(f"{where}: dropout must be a number in [0, 1), got {d!r:.60}")
        out["dropout"] = float(d)
    return out


def build_card(model: nn.Module, meta: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The model card that :func:`~jacreg.checkpoints.save_checkpoint` stores: ``meta`` completed from
    the model.

    Fills ``input_shape`` (the dataset's, else the architecture's), ``mean``/``std`` (the model's
    normalisation buffers), ``dropout``, ``name``, ``jacreg_version`` and ``created`` (UTC, ISO 8601)
    when they are missing.

    Raises:
        ConfigError: ``meta`` lacks arch, dataset or num_classes, or a field is out of range.
    """
    if not isinstance(meta, Mapping):
        raise ConfigError(f"meta must be a dict with at least {', '.join(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if meta.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"the model card needs {', '.join(REQUIRED_KEYS)}; missing: {', '.join(missing)}")
    try:
        card = validate_card(meta, "the model card")
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    arch_spec = architectures.spec(str(card["arch"]))
    inner = unwrap(model)
    if card.get("input_shape") is None:
        card["input_shape"] = list(dataset_defaults(card["dataset"]).get("input_shape")
                                   or arch_spec.defaults.input_shape)
    for key in NORMALIZATION_KEYS:
        if card.get(key) is None:
            buf = getattr(inner, key, None)
            card[key] = ([float(v) for v in buf.flatten().tolist()] if isinstance(buf, torch.Tensor)
                         else list(getattr(arch_spec.defaults, key)))
    if card.get("dropout") is None:
        card["dropout"] = next((float(m.p) for m in inner.modules() if isinstance(m, nn.Dropout)), 0.0)
    if name is not None and not card.get("name"):
        card["name"] = name
    card.setdefault("jacreg_version", __version__)
    card.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return card


def resolve_card(card: Mapping[str, Any], arch: str | None, dataset: str | None, num_classes: int | None,
                 where: str, name: str) -> dict[str, Any]:
    """The card to build from: the file's card, with the caller's explicit choices taking precedence,
    defaults from the dataset and the architecture, every field validated.

    Raises:
        CheckpointError: no architecture, unknown classes, or a field out of range.
        ConfigError: the caller named an unknown dataset.
    """
    meta = validate_card(card, where)
    if arch is not None:
        meta["arch"] = arch
    if dataset is not None:
        datasets.dataset_spec(dataset)  # ConfigError listing the valid names
        meta["dataset"] = dataset
    if num_classes is not None:
        meta["num_classes"] = num_classes
    meta = validate_card(meta, where)
    if not meta.get("arch"):
        what = "has no model card" if not card else "has a model card without an architecture"
        raise CheckpointError(f"{where} {what}: choose the architecture (arch=, one of "
                              f"{', '.join(architectures.names())}) and the dataset (dataset=) "
                              "or num_classes")
    defaults = dataset_defaults(meta.get("dataset"))
    arch_spec = architectures.spec(meta["arch"])
    if meta.get("num_classes") is None:
        if "num_classes" not in defaults:
            raise CheckpointError(f"{where}: the number of classes is unknown: choose the dataset (dataset=) "
                                  "or num_classes")
        meta["num_classes"] = defaults["num_classes"]
    for key in ("input_shape", "mean", "std"):
        if meta.get(key) is None:
            meta[key] = list(defaults.get(key) or getattr(arch_spec.defaults, key))
    if meta.get("dropout") is None:
        meta["dropout"] = arch_spec.default_dropout
    if not meta.get("dataset"):
        meta["dataset"] = None
    if not card:
        meta.setdefault("name", name)
    return validate_card(meta, where)
