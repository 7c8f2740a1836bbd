"""Saving: safetensors (tensors only, no code) with the model card in the header metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from ..errors import ConfigError
from ..fileio import atomic_write_bytes, jsonable
from .card import build_card, unwrap
from .reading import CARD_KEY

__all__ = ["save_checkpoint"]


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
    payload = st_save(_state_tensors(unwrap(model)), metadata={CARD_KEY: card_json, "format": "pt"})
    return atomic_write_bytes(path, payload)
