"""Adversarial directions without foolbox: the FGSM direction and FGSM/PGD training examples.

One implementation of the sign-gradient step serves the adversarial planes of the decision-cell
figures (the paper's Fig. S2: planes spanned by two models' FGSM directions) and adversarial
training (:mod:`jacreg.training`). Robustness *evaluation* uses foolbox (:mod:`jacreg.robustness`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import eval_copy
from .errors import ConfigError, ShapeError

__all__ = ["ATTACKS", "adversarial_examples", "fgsm_direction", "loss_gradient"]

#: Adversarial example generators for training.
ATTACKS: tuple[str, ...] = ("fgsm", "pgd")


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d CE(model(x), y) / d x`` per sample, shape of ``x`` (the model's mode is not changed).

    Where the cross-entropy saturates in float32 (a very confident model whose gradient at a sample
    is exactly zero), that sample's gradient is the one of the logit margin
    ``max_{k != y} z_k - z_y`` instead: the direction the cross-entropy gradient tends to as the top
    softmax goes to one. Only its sign is used by FGSM, so the two scales need not match.

    Raises:
        ShapeError: the model does not return (B, C) logits, or a label is out of range.
    """
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        logits = model(xx)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ShapeError(f"the model must return logits of shape (B, C), got {tuple(logits.shape)}")
        if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
            raise ShapeError(f"label {int(y.max())} out of range for a model with output "
                             f"{tuple(logits.shape)}")
        (g,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), xx)
        flat = g.reshape(len(g), -1).ne(0).any(dim=1)
        if not bool(flat.all()):
            idx = torch.nonzero(~flat).flatten()
            xs = x[idx].detach().requires_grad_(True)
            z = model(xs).float()
            own = z.gather(1, y[idx].view(-1, 1)).squeeze(1)
            others = z.scatter(1, y[idx].view(-1, 1), float("-inf")).amax(dim=1)
            (gm,) = torch.autograd.grad((others - own).sum(), xs)
            g = g.clone()
            g[idx] = gm
    return g.detach()


def fgsm_direction(model: nn.Module, x0: Any, y0: int, *,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """The FGSM direction ``sign(grad_x CE(model(x0), y0))`` (Goodfellow et al. 2015) of one image.

    See :func:`loss_gradient` for a saturated cross-entropy. The model is not changed (an eval copy
    is used if it is in training mode or on another device).

    Returns:
        A float32 CPU tensor of ``x0``'s shape with entries in {-1, 0, 1}; all zero if the model is
        flat at ``x0``.
    """
    t = x0 if isinstance(x0, torch.Tensor) else torch.as_tensor(np.asarray(x0))
    t = t.detach().to(torch.float32)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ShapeError(f"expected one image of shape (C, H, W), got shape {tuple(t.shape)}")
    net, dev = eval_copy(model, device)
    g = loss_gradient(net, t.unsqueeze(0).to(dev), torch.tensor([int(y0)], device=dev))
    return g[0].sign().to("cpu", torch.float32)


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
                         steps: int = 10, step_size: float | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015) or L-inf PGD with a random start (Madry et al. 2018) in [0, 1].

    Used to make adversarial *training* examples (fast, no foolbox); the model's train/eval mode is
    left as the caller set it.

    Raises:
        ConfigError: an unknown attack.
    """
    x = x.detach()
    if attack == "fgsm":
        steps, alpha, delta = 1, eps, torch.zeros_like(x)
    elif attack == "pgd":
        alpha = step_size if step_size is not None else 2.5 * eps / steps
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    else:
        raise ConfigError(f"unknown adversarial attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    for _ in range(steps):
        grad = loss_gradient(model, (x + delta).clamp(0, 1), y)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()
