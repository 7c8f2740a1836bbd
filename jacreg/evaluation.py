"""Evaluation: clean accuracy and mean ||J||_F (the paper's Table 1 columns) of a model or checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import load_checkpoint
from .data import load_dataset
from .device import pick
from .errors import ConfigError, ShapeError
from .regularizer import jacobian_norms

__all__ = ["evaluate", "evaluate_checkpoint", "load_test_split"]


def load_test_split(meta: dict[str, Any], *, dataset: str | None = None, limit: int | None = None,
                  data_root: str | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The first ``limit`` test samples a model with card ``meta`` is evaluated on.

    Args:
        dataset: the dataset to use (default: the card's).

    Returns:
        ``(dataset name, x, y)``.

    Raises:
        ConfigError: no dataset given and none in the card.
        ShapeError: the dataset's images do not have the model's input shape.
        DatasetUnavailable: the data cannot be loaded here.
    """
    name = dataset or meta.get("dataset")
    if not name:
        raise ConfigError("the checkpoint names no dataset: pass --dataset")
    x, y = load_dataset(str(name), split="test", limit=limit, data_root=data_root)
    expected = tuple(meta.get("input_shape") or x.shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise ShapeError(f"{name} has images of shape {tuple(x.shape[1:])}, the model takes {expected}; "
                         "pass the model's --dataset")
    return str(name), x, y


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 250,
             device: str | torch.device | None = None, jacobian: bool = True,
             on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Clean accuracy and mean ||J||_F (paper convention: w.r.t. the normalised input).

    The model's train/eval mode is restored afterwards.
    """
    if len(x) == 0:
        raise ConfigError("no samples to evaluate")
    dev = next(model.parameters()).device if device is None else pick(device)
    was_training = model.training
    model.eval()
    correct, norm_sum = 0, 0.0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            with torch.no_grad():
                correct += int((model(xb).argmax(1) == yb).sum())
            if jacobian:
                norm_sum += float(jacobian_norms(model, xb, normalized=True).sum())
            if on_batch:
                on_batch(len(xb))
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"clean_accuracy": correct / len(x), "samples": len(x)}
    if jacobian:
        out["jacobian_norm_mean"] = norm_sum / len(x)
    return out


def evaluate_checkpoint(path: str | Path, *, dataset: str | None = None, samples: int | None = None,
                        batch_size: int = 250, device: str = "auto", data_root: str | None = None,
                        arch: str | None = None,
                        on_batch: Callable[[int], None] | None = None,
                        on_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely and evaluate it on the first ``samples`` test images
    (``python -m jacreg eval``).

    Args:
        arch, dataset: for a file without a model card (see :func:`jacreg.checkpoints.load_checkpoint`);
            ``dataset`` also chooses the test data.
        on_start: called with the number of test samples once they are loaded.
        on_batch: called with the number of samples of each evaluated batch.

    Raises:
        ConfigError: bad ``samples``/``batch_size``, or no dataset known.
        ShapeError: the dataset's images do not fit the model.
        CheckpointError, DatasetUnavailable: from the loader.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if samples is not None and samples < 1:
        raise ConfigError("--samples must be at least 1")
    model, meta = load_checkpoint(path, arch=arch, dataset=dataset, device=str(pick(device)))
    ds, x, y = load_test_split(meta, dataset=dataset, limit=samples, data_root=data_root)
    if on_start is not None:
        on_start(len(x))
    result = evaluate(model, x, y, batch_size=batch_size, on_batch=on_batch)
    result.update({"checkpoint": str(path), "dataset": ds})
    if meta.get("inferred"):
        result["note"] = meta["inferred"]
    return result
