"""Small models for tests: a LeNet' after a few SGD steps on the embedded MNIST subset, and affine
classifiers whose decision regions in a plane are exact polygons."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from jacreg import architectures
from jacreg.cells import Plane
from jacreg.data import load_dataset
from jacreg.robustness import get_attack


def quick_lenet(seed: int = 0, samples: int = 4000, epochs: int = 1, shuffle: bool = True) -> nn.Module:
    """LeNet' trained with plain SGD (lr 0.1, momentum 0.9, batch 100) on the first ``samples``
    training digits of mnist-5k; one epoch gives about 90% test accuracy. Returned in eval mode."""
    torch.manual_seed(seed)
    x, y = load_dataset("mnist-5k", split="train", limit=samples)
    net = architectures.create("lenet")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), 100):
            idx = order[i:i + 100]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return net.eval()


SHAPE = (1, 28, 28)


D = 28 * 28


class Affine(nn.Module):
    """logits = W (x - x0) + b on flattened images: decision regions are exact polygons in a plane."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.float())
        self.b = nn.Parameter(b.float())
        self.register_buffer("x0", x0.reshape(-1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.x0) @ self.w.T + self.b


def halfplane_model(plane: Plane, direction: torch.Tensor, offset: float,
                     scale: float = 20.0) -> Affine:
    """Two classes: class 1 where (x - x0) . direction > offset, else class 0."""
    w = torch.zeros(2, D)
    w[1] = scale * direction.reshape(-1)
    return Affine(w, torch.tensor([0.0, -scale * offset]), plane.origin)


def analytic_distance(model: Affine, plane: Plane) -> float:
    """Exact in-plane distance from the origin to the complement of its (convex) class region."""
    w, b = model.w.detach().double(), model.b.detach().double()
    y0 = int(torch.argmax(b))
    u, v = plane.u.reshape(-1).double(), plane.v.reshape(-1).double()
    best = math.inf
    for k in range(w.shape[0]):
        if k == y0:
            continue
        dw, db = w[k] - w[y0], float(b[k] - b[y0])   # class k beats y0 where db + a*alpha + b*beta > 0
        alpha, beta = float(dw @ u), float(dw @ v)
        norm = math.hypot(alpha, beta)
        if norm > 0:
            best = min(best, abs(db) / norm)
    return best


def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` the model classifies as ``y``."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def curve_result(attack, eps, acc, raw=None, n=200, model=None):
    """A curve result as :func:`jacreg.robustness.curve` returns it, for the rules that read it."""
    spec = get_attack(attack)
    return {"attack": attack, "norm": spec.norm, "epsilons": eps, "accuracy": acc, "raw_accuracy": raw,
            "samples": n, "num_classes": 10, "model": model, "seconds": 1.0}


def text(element: object) -> str:
    """What a page element shows: its Markdown source with the escapes of user text removed."""
    return re.sub(r"\\(.)", r"\1", str(getattr(element, "value", element)))
