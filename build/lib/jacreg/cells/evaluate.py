"""Evaluating models on a plane: labels and top softmax at plane coordinates, in device-sized batches.

Every evaluation runs under ``torch.inference_mode()`` on a model in eval mode; the caller's model
is never changed (:func:`jacreg.device.eval_copy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import eval_copy
from ..errors import ConfigError, ShapeError
from .plane import Plane

__all__ = ["MAX_EXTENT", "MAX_RESOLUTION", "MIN_RESOLUTION", "PlaneEvaluator", "check_grid",
           "check_model_input", "predict"]

#: Allowed grid resolutions (points per side).
MIN_RESOLUTION, MAX_RESOLUTION = 11, 1001
#: The largest half width of a cross section (L2, pixel units). The L2 diameter of the [0, 1] box of a
#: 3x224x224 image is 388; much farther out every model is extrapolating far from any image.
MAX_EXTENT = 10_000.0


def _auto_batch_size(dev: torch.device, numel: int) -> int:
    """Points per forward pass: about 64 floats of activations per input value, a quarter of the
    free accelerator memory (256 MiB on the CPU)."""
    per_sample = max(1, numel) * 4 * 64
    if dev.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
        except RuntimeError:
            free = 2 << 30
        return int(np.clip(free // 4 // per_sample, 64, 16384))
    return int(np.clip((256 << 20) // per_sample, 16, 4096))


class PlaneEvaluator:
    """Labels and max-softmax of one model at plane coordinates, in device-sized batches."""

    def __init__(self, model: nn.Module, plane: Plane, device: str | torch.device | None,
                 batch_size: int | None) -> None:
        self.model, self.device = eval_copy(model, device)
        self.shape = plane.shape
        self.origin = plane.origin.reshape(-1).to(self.device)
        self.basis = torch.stack([plane.u.reshape(-1), plane.v.reshape(-1)]).to(self.device)
        self.batch_size = (int(batch_size) if batch_size is not None
                           else _auto_batch_size(self.device, plane.origin.numel()))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.count = 0
        self.num_classes = 0

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        b = np.asarray(b, dtype=np.float32).reshape(-1)
        n = a.size
        labels = np.empty(n, dtype=np.int64)
        conf = np.empty(n, dtype=np.float32)
        ab = torch.from_numpy(np.stack([a, b], axis=1))
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                chunk = ab[s:s + self.batch_size].to(self.device)
                x = torch.addmm(self.origin, chunk, self.basis).view(-1, *self.shape)
                logits = self.model(x)
                if logits.dim() != 2:
                    raise ShapeError("model output must be (batch, classes) logits, "
                                     f"got {tuple(logits.shape)}")
                self.num_classes = int(logits.shape[1])
                p, k = torch.softmax(logits.float(), dim=1).max(dim=1)
                labels[s:s + len(chunk)] = k.cpu().numpy()
                conf[s:s + len(chunk)] = p.cpu().numpy()
        self.count += n
        return labels, conf


def check_grid(extent: float, resolution: int) -> None:
    """Validate a cross section's extent and resolution.

    Raises:
        ConfigError: extent not a number in (0, MAX_EXTENT], or resolution outside [11, 1001].
    """
    try:
        e = float(extent)
    except (TypeError, ValueError):
        raise ConfigError(f"extent must be a number, got {extent!r:.40}") from None
    if not math.isfinite(e) or e <= 0 or e > MAX_EXTENT:
        raise ConfigError(f"extent must be positive and at most {MAX_EXTENT:g} (L2 units of [0, 1] pixels), "
                          f"got {extent}")
    whole = isinstance(resolution, int) or (isinstance(resolution, float) and resolution.is_integer())
    if isinstance(resolution, bool) or not whole:
        raise ConfigError(f"resolution must be an integer, got {resolution!r:.40}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise ConfigError(f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} points "
                          f"per side, got {resolution}")


def check_model_input(model: nn.Module, ev: PlaneEvaluator, index: int) -> tuple[int, float]:
    """Label and confidence at the origin; ShapeError if the model cannot take the plane's inputs."""
    try:
        lab, conf = ev(np.zeros(1), np.zeros(1))
    except RuntimeError as exc:
        raise ShapeError(f"model {index} cannot take inputs of shape {ev.shape} (the plane's sample): "
                         f"{str(exc).splitlines()[0]}") from None
    return int(lab[0]), float(conf[0])


def predict(models: nn.Module | Sequence[nn.Module], x: Any, *, device: str | torch.device | None = None,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Class and top softmax of each model on images ``x`` ((C, H, W) or (N, C, H, W); not clipped).

    Returns:
        ``(labels, confidence)``, each of shape (M, N).

    Raises:
        ShapeError: a model cannot take these images.
    """
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
    if xt.dim() == 3:
        xt = xt.unsqueeze(0)
    if xt.dim() != 4:
        raise ShapeError(f"expected (C, H, W) or (N, C, H, W) images, got shape {tuple(xt.shape)}")
    labels = np.empty((len(model_list), xt.shape[0]), dtype=np.int64)
    conf = np.empty((len(model_list), xt.shape[0]), dtype=np.float32)
    for m, model in enumerate(model_list):
        net, dev = eval_copy(model, device)
        with torch.inference_mode():
            for s in range(0, xt.shape[0], batch_size):
                try:
                    logits = net(xt[s:s + batch_size].to(dev))
                except RuntimeError as exc:
                    raise ShapeError(f"model {m} cannot take images of shape {tuple(xt.shape[1:])}: "
                                     f"{str(exc).splitlines()[0]}") from None
                p, k = torch.softmax(logits.float(), dim=1).max(dim=1)
                labels[m, s:s + batch_size] = k.cpu().numpy()
                conf[m, s:s + batch_size] = p.cpu().numpy()
    return labels, conf
