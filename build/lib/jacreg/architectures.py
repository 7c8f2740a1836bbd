"""Model registry: LeNet' (MNIST), DDNet (CIFAR-10), ResNet-18 (ImageNet-size inputs).

Every model built here takes images in [0, 1] (NCHW) and returns logits. Normalisation is a
buffer inside the model (``Normalized``), as RobustBench does, so attacks use bounds (0, 1).
The paper's convention for the Jacobian is the derivative of the logits with respect to the
*normalised* input, i.e. the input of ``model.body``; :func:`split_normalization` exposes that
split so the regularizer and ``eval`` report ||J||_F on the same scale as the paper's Table 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .data import DatasetSpec, dataset_spec
from .errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    """Per-architecture facts (timm-style): how to build it, and the dataset it was made for, whose
    input shape, classes and normalisation are its defaults (constants live with the data)."""

    name: str
    description: str
    dataset: str
    default_dropout: float
    builder: Callable[..., nn.Module]

    @property
    def defaults(self) -> DatasetSpec:
        """The spec of the architecture's own dataset: default input shape, classes, mean and std."""
        return dataset_spec(self.dataset)


class Normalized(nn.Module):
    """``body((x - mean) / std)``: a network that takes [0, 1] images.

    The mean and std are buffers (saved in the state dict, moved with ``.to``).
    """

    def __init__(self, body: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError("mean and std must have one value per channel")
        if any(s <= 0 for s in std):
            raise ConfigError("std must be positive")
        self.body = body
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to the body's input space."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


def split_normalization(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """Return ``(normalize, body)`` with ``model(x) == body(normalize(x))``.

    For a :class:`Normalized` model (also wrapped in DDP/DataParallel) this is its own split; for
    any other module, ``normalize`` is the identity and ``body`` is the model itself.
    """
    inner = getattr(model, "module", model)
    if isinstance(inner, Normalized):
        if inner is model:
            return inner.normalize, inner.body
        # A DDP/DataParallel wrapper: keep calling through the wrapper for the body.
        return inner.normalize, _BodyThroughWrapper(model)
    return (lambda x: x), model


class _BodyThroughWrapper(nn.Module):
    """Calls a wrapped Normalized model on already-normalised input, through the wrapper."""

    def __init__(self, wrapper: nn.Module) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        inner = self.wrapper.module
        assert isinstance(inner, Normalized)
        return self.wrapper(z * inner.std + inner.mean)


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


class LeNet(nn.Module):
    """LeNet' of the paper (61,706 parameters on MNIST): two tanh conv blocks, three fc layers.

    conv 1->6 5x5 pad 2, tanh, maxpool 2; conv 6->16 5x5, tanh, maxpool 2;
    fc 400->120, tanh, dropout; fc 120->84, tanh, dropout; fc 84->10. Xavier init.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2),
        )
        flat = _flat_size(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120), nn.Tanh(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.Tanh(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DDNet(nn.Module):
    """DDNet for CIFAR-10 (1,147,978 parameters): 4 ReLU convs (3x3, no pad), 2 maxpools,
    fc 3200->256->256->10 with ReLU and dropout."""

    def __init__(self, input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 dropout: float = 0.5) -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = _flat_size(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(input_shape: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000,
              dropout: float = 0.0) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    if input_shape[0] != 3:
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    if dropout > 0:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net


ARCHITECTURES: dict[str, ArchSpec] = {
    "lenet": ArchSpec("lenet", "LeNet' (paper, MNIST): 2 tanh conv + 3 fc, 61,706 parameters", "mnist",
                      0.0, LeNet),
    "ddnet": ArchSpec("ddnet", "DDNet (paper, CIFAR-10): 4 ReLU conv + 3 fc, 1,147,978 parameters",
                      "cifar10", 0.5, DDNet),
    "resnet18": ArchSpec("resnet18", "ResNet-18 (torchvision) for ImageNet-size inputs", "imagenet", 0.0,
                         _resnet18),
}


def names() -> list[str]:
    """Registered architecture names."""
    return sorted(ARCHITECTURES)


def spec(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of a registered architecture (ConfigError if unknown)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; choose one of {', '.join(names())}") from None


def create(name: str, *, num_classes: int | None = None, input_shape: Sequence[int] | None = None,
           dropout: float | None = None, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None) -> Normalized:
    """Build a registered architecture wrapped in :class:`Normalized` (takes [0, 1] images).

    Args:
        name: ``"lenet"``, ``"ddnet"`` or ``"resnet18"``.
        num_classes: number of logits (default: the architecture's).
        input_shape: (C, H, W) of the images (default: the architecture's).
        dropout: dropout probability in the classifier (default: the architecture's).
        mean, std: per-channel normalisation (default: the architecture's dataset).
    """
    s = spec(name)
    ds = s.defaults
    shape = tuple(int(v) for v in (input_shape or ds.input_shape))
    if len(shape) != 3 or min(shape) <= 0:
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    p = s.default_dropout if dropout is None else float(dropout)
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {p}")
    k = ds.num_classes if num_classes is None else int(num_classes)
    if k < 2:
        raise ConfigError(f"num_classes must be at least 2, got {k}")
    m = tuple(mean) if mean is not None else ds.mean
    sd = tuple(std) if std is not None else ds.std
    if len(m) != shape[0]:
        if len(m) == 1:
            m, sd = m * shape[0], sd * shape[0]
        else:
            raise ConfigError(f"mean has {len(m)} values for {shape[0]} input channels")
    try:
        body = s.builder(input_shape=shape, num_classes=k, dropout=p)
    except RuntimeError as exc:  # e.g. an input too small for the conv stack
        raise ConfigError(f"{name} cannot take inputs of shape {shape}: {exc}") from exc
    return Normalized(body, m, sd)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
