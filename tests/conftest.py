"""Shared fixtures: small checkpoints trained briefly on the embedded MNIST subset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import quick_lenet

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
torch.set_num_threads(min(2, torch.get_num_threads()))


def _train(out: Path, **kw) -> Path:
    from jacreg.training import TrainConfig, train

    config = TrainConfig(arch="lenet", dataset="mnist-5k", epochs=1, batch_size=100, lr=0.1,
                         device="cpu", eval_samples=200, out=str(out), log_every=1000, **kw)
    train(config)
    return out


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory) -> Path:
    """A folder with `lenet-none.safetensors` and `lenet-jr.safetensors` (1 epoch on mnist-5k)."""
    root = tmp_path_factory.mktemp("checkpoints")
    _train(root / "lenet-none.safetensors", name="lenet-none")
    _train(root / "lenet-jr.safetensors", name="lenet-jr", jr=0.05)
    for p in root.glob("*.state.pt"):
        p.unlink()
    return root


@pytest.fixture(scope="session")
def trained_checkpoint(checkpoints_dir) -> Path:
    """Path of a LeNet' trained one epoch on mnist-5k (about 85% test accuracy), with its card."""
    return checkpoints_dir / "lenet-none.safetensors"


@pytest.fixture()
def zoo_dir(checkpoints_dir, tmp_path, monkeypatch) -> Path:
    """A private models folder (plain + JR LeNet') and an empty runs folder, set as the app's."""
    zoo = tmp_path / "models"
    shutil.copytree(checkpoints_dir, zoo)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("JACREG_MODELS_DIR", str(zoo))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(runs))
    return zoo


@pytest.fixture(scope="session")
def snapshot_pair(tmp_path_factory) -> Path:
    """A folder with `lenet-none` and `lenet-jr` trained 3 short epochs (4 batches each) with a
    snapshot after every epoch: `<name>.safetensors` and `<name>.epochs/epoch-00{1,2,3}.safetensors`."""
    from jacreg.training import TrainConfig, train

    root = tmp_path_factory.mktemp("snapshots")
    for name, jr in (("lenet-none", 0.0), ("lenet-jr", 0.05)):
        train(TrainConfig(arch="lenet", dataset="mnist-5k", epochs=3, limit_batches=4, batch_size=100, lr=0.1,
                          jr=jr, device="cpu", eval_samples=0, out=str(root / f"{name}.safetensors"),
                          name=name, snapshot_every=1, log_every=1000))
    for p in root.glob("*.state.pt"):
        p.unlink()
    return root


@pytest.fixture()
def snapshot_zoo(snapshot_pair, tmp_path, monkeypatch) -> Path:
    """A private models folder holding the snapshot pair (the zoo's film), set as the app's, with an
    empty runs folder."""
    zoo = tmp_path / "models"
    shutil.copytree(snapshot_pair, zoo)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("JACREG_MODELS_DIR", str(zoo))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(runs))
    return zoo


@pytest.fixture(scope="session")
def lenet() -> nn.Module:
    """LeNet' after one epoch of plain SGD on mnist-5k (about 90% test accuracy), eval mode."""
    return quick_lenet(0)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 8 test digits of mnist-5k."""
    from jacreg.data import load_dataset

    return load_dataset("mnist-5k", split="test", limit=8)
