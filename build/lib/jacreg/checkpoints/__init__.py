"""Checkpoints: safetensors with a model card, and a safe loader for files users bring.

Format written here (:mod:`~jacreg.checkpoints.saving`): safetensors (tensors only, no code) whose
header metadata holds the model card as JSON under the key ``"jacreg"``::

    {"name", "arch", "dataset", "num_classes", "input_shape", "mean", "std", "dropout",
     "config" (the TrainConfig as a dict), "metrics", "history", "jacreg_version", "created"}

:func:`load_checkpoint` (:mod:`~jacreg.checkpoints.loader`) is the one loader for the CLI, the app and
uploads. It takes safetensors files and PyTorch ``.pt``/``.pth`` state dicts and never runs code from a
file: regular files only, read with a hard size cap (:mod:`~jacreg.checkpoints.reading`); format
sniffing by magic bytes; ``torch.load(..., weights_only=True)`` with no unsafe fallback
(:mod:`~jacreg.checkpoints.torch_files`); every card field validated before any allocation
(:mod:`~jacreg.checkpoints.card`); the model built on the meta device to compare shapes, then for
real, loaded with ``strict=True``, checked for NaN/inf weights and run once on a zero input.

Every failure raises :class:`jacreg.errors.CheckpointError` with a message that says what is wrong.
"""

from __future__ import annotations

from .card import MAX_CLASSES, MAX_INPUT_VALUES, REQUIRED_KEYS, build_card, validate_card
from .loader import load_checkpoint
from .reading import CARD_KEY, DEFAULT_MAX_BYTES, MAX_HEADER_BYTES, Source, file_hash, read_metadata, sniff
from .saving import save_checkpoint

__all__ = [
    "CARD_KEY",
    "DEFAULT_MAX_BYTES",
    "MAX_CLASSES",
    "MAX_HEADER_BYTES",
    "MAX_INPUT_VALUES",
    "REQUIRED_KEYS",
    "Source",
    "build_card",
    "file_hash",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "sniff",
    "validate_card",
]
