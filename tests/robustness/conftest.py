"""Fixtures of the robustness tests: a LeNet' trained one epoch, and the first test digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jacreg.data import load_dataset

#: Test samples the curves attack: few, so that every file runs in seconds.
N = 40


@pytest.fixture(scope="module")
def model(lenet: nn.Module) -> nn.Module:
    """The session's LeNet' (about 90% test accuracy), eval mode; tests check that it never changes."""
    return lenet


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("mnist-5k", split="test", limit=N)
