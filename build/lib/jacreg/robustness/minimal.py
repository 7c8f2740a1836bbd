"""The full-space distance to the nearest adversarial example (foolbox's DeepFool and FMN, L2).

The in-plane radius of a cross section (:func:`jacreg.cells.boundary_distance`) can only be larger
than the full-space distance; this gives the other side of the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..device import eval_copy
from ..errors import ConfigError, ShapeError
from .catalog import BOUNDS, foolbox

__all__ = ["minimal_adversarial_distance"]


def minimal_adversarial_distance(model: nn.Module, x0: Any, y0: int | Sequence[int] | None = None, *,
                                 attack: Literal["fmn", "deepfool"] = "fmn", steps: int | None = None,
                                 device: str | torch.device | None = None) -> float | np.ndarray:
    """L2 distance to the nearest adversarial example a minimisation attack finds (full input space).

    ``"deepfool"``: foolbox 3's L2 DeepFool (Moosavi-Dezfooli et al. 2016). ``"fmn"`` (default):
    L2 Fast Minimum-Norm (Pintor et al. 2021) started from DeepFool's adversarial example (after a
    binary search towards the sample), so it is never farther than DeepFool; started from the
    sample itself, foolbox's FMN can stall on the boundary of nearly linear models. Bounds are
    (0, 1): unlike the in-plane radius, the adversarial example is a valid image. The result is an
    upper bound on the true minimal distance; a 2-D plane through the sample cannot be nearer than
    the full space, so compare it with :func:`boundary_distance`.

    Args:
        model: takes [0, 1] images, returns logits.
        x0: one image (C, H, W) or a batch (N, C, H, W).
        y0: label(s) to move away from; default the model's own prediction (as the in-plane radius).
        attack: ``"fmn"`` or ``"deepfool"``.
        steps: iterations of the attack (default: foolbox's, 100 for FMN and 50 for DeepFool).

    Returns:
        A float for one image (inf if no adversarial example was found), else an (N,) array; 0 where
        the model already misclassifies ``y0``.
    """
    fb = foolbox()
    if attack not in ("fmn", "deepfool"):
        raise ConfigError(f"unknown minimisation attack {attack!r}: use fmn or deepfool")
    x = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0).detach().float()
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ShapeError(f"expected (C, H, W) or (N, C, H, W) images, got {tuple(x.shape)}")
    net, dev = eval_copy(model, device, frozen=True)
    x = x.to(dev)
    with torch.inference_mode():
        pred = net(x).argmax(1)
    if y0 is None:
        y = pred.clone()
    else:
        y = torch.as_tensor(np.atleast_1d(np.asarray(y0)), dtype=torch.long, device=dev)
        if y.numel() != x.shape[0]:
            raise ShapeError(f"{y.numel()} labels for {x.shape[0]} images")
    fmodel = fb.PyTorchModel(net, bounds=BOUNDS, device=dev)

    def distances(adv: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            ok = (net(adv).argmax(1) != y).cpu().numpy()
        d = (adv - x).flatten(1).norm(dim=1).double().cpu().numpy()
        d[~ok] = math.inf
        return d

    kwargs: dict[str, Any] = {} if steps is None or attack == "fmn" else {"steps": int(steps)}
    with torch.enable_grad():
        _, adv, _ = fb.attacks.L2DeepFoolAttack(**kwargs)(fmodel, x, y, epsilons=None)
    dist = distances(adv)
    if attack == "fmn":
        start = torch.where(torch.as_tensor(np.isfinite(dist), device=dev).view(-1, 1, 1, 1), adv, x)
        fmn = fb.attacks.L2FMNAttack(**({} if steps is None else {"steps": int(steps)}))
        found = np.isfinite(dist)
        with torch.enable_grad():
            if found.any():  # refine DeepFool's points (FMN binary-searches towards x first)
                idx = torch.as_tensor(np.nonzero(found)[0], device=dev)
                sub = fb.criteria.Misclassification(y[idx])
                _, adv_f, _ = fmn(fmodel, x[idx], sub, epsilons=None, starting_points=start[idx])
                adv[idx] = adv_f
            if (~found).any():
                idx = torch.as_tensor(np.nonzero(~found)[0], device=dev)
                _, adv_f, _ = fmn(fmodel, x[idx], y[idx], epsilons=None)
                adv[idx] = adv_f
        dist = np.minimum(dist, distances(adv))
    dist[(pred != y).cpu().numpy()] = 0.0
    return float(dist[0]) if single else dist
