"""Which registered architecture a bare state dict is: files without a model card.

A plain ``torch.save(model.state_dict(), path)`` of a registry model says nothing about its
architecture, classes or input. Its keys and shapes do: for every registered architecture and every
registered input shape, the model is built on the ``meta`` device (no memory) with the classes the
file's last dense layer has, and its parameter names and shapes are compared with the file's. A file
that fits exactly one architecture and input shape is loaded as that (the caller says which).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .. import architectures
from .. import data as datasets
from ..errors import ConfigError
from .torch_files import NORMALIZATION_KEYS

__all__ = ["Match", "describe_matches", "match_architectures"]


@dataclass(frozen=True)
class Match:
    """An architecture, a number of classes, an input shape and a dataset that fit a state dict."""

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    dataset: str

    def describe(self) -> str:
        c, h, w = self.input_shape
        return f"{self.arch} with {self.num_classes} classes on {c}x{h}x{w} inputs ({self.dataset})"


def _head_classes(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """The classes of the file if it is ``arch``: the rows of the tensor it has where ``arch`` keeps its
    classifier (the model's last 2-D weight; a file's own key order means nothing)."""
    with torch.device("meta"):
        expected = architectures.create(arch).state_dict()
    heads = [k for k, v in expected.items() if k.endswith("weight") and v.ndim == 2]
    tensor = state.get(heads[-1]) if heads else None
    return int(tensor.shape[0]) if tensor is not None and tensor.ndim == 2 else None


def _fits(arch: str, num_classes: int, shape: tuple[int, int, int],
          state: Mapping[str, torch.Tensor]) -> bool:
    try:
        with torch.device("meta"):
            expected = architectures.create(arch, num_classes=num_classes, input_shape=shape).state_dict()
    except (ConfigError, RuntimeError, ValueError):
        return False
    body = {k: v for k, v in expected.items() if k not in NORMALIZATION_KEYS}
    given = {k: v for k, v in state.items() if k not in NORMALIZATION_KEYS}
    return set(body) == set(given) and all(tuple(given[k].shape) == tuple(v.shape) for k, v in body.items())


def _dataset_for(arch: str, num_classes: int, shape: tuple[int, int, int],
                 state: Mapping[str, torch.Tensor]) -> str | None:
    """The registered dataset the model is most likely for, preferring data that is here offline:
    the one whose normalisation the file stores, else one normalised as the architecture's own."""
    specs = [datasets.DATASETS[n] for n in datasets.names()]
    candidates = sorted((s for s in specs if s.input_shape == shape and s.num_classes == num_classes),
                        key=lambda s: not s.offline)
    if not candidates:
        return None

    def norm(spec: datasets.DatasetSpec) -> list[tuple[float, ...]]:
        reps = shape[0] // len(spec.mean)
        return [tuple(round(v, 4) for v in spec.mean * reps), tuple(round(v, 4) for v in spec.std * reps)]

    if all(k in state for k in NORMALIZATION_KEYS):
        target = [tuple(round(float(v), 4) for v in state[k].flatten().tolist()) for k in NORMALIZATION_KEYS]
    else:
        own = datasets.DATASETS[architectures.spec(arch).dataset]
        target = norm(own) if own.input_shape[0] == shape[0] else []
    return next((s.name for s in candidates if norm(s) == target), candidates[0].name)


def match_architectures(state: Mapping[str, torch.Tensor]) -> list[Match]:
    """Every registered architecture and input shape whose parameters the state dict fits exactly
    (keys already normalised: ``body.`` prefixes, no ``module.``)."""
    shapes = sorted({spec.input_shape for spec in datasets.DATASETS.values()})
    out = []
    for arch in architectures.names():
        classes = _head_classes(arch, state)
        if classes is None or not 2 <= classes <= 100_000:
            continue
        for shape in shapes:
            if _fits(arch, classes, shape, state):
                dataset = _dataset_for(arch, classes, shape, state)
                if dataset is not None:
                    out.append(Match(arch, classes, shape, dataset))
    # a fully convolutional network (global pooling) fits every input size: keep its own dataset's
    by_arch: dict[str, list[Match]] = {}
    for m in out:
        by_arch.setdefault(m.arch, []).append(m)
    kept = []
    for arch, ms in by_arch.items():
        own = [m for m in ms if m.dataset == architectures.spec(arch).dataset]
        kept += own if len(ms) > 1 and own else ms
    return kept


def describe_matches(matches: list[Match]) -> str:
    return "; ".join(m.describe() for m in matches)
