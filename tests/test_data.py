"""Dataset registry: the offline mnist-5k split, offline errors, local files of torchvision datasets."""

from __future__ import annotations

import bz2
import gzip
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from jacreg import data
from jacreg.errors import ConfigError, DatasetUnavailable, JacregError


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Tensor-sized datasets are cached per (name, split, root); tests that fake files start clean."""
    data._arrays.cache_clear()
    yield
    data._arrays.cache_clear()


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_specs():
    assert data.names()[0] == data.DEFAULT_DATASET == "mnist-5k"
    assert {"mnist-5k", "mnist", "fashion-mnist", "cifar10", "usps", "imagenet"} <= set(data.names())
    for name in data.names():
        s = data.dataset_spec(name)
        assert s.name == name
        assert len(s.input_shape) == 3 and len(s.mean) == len(s.std) == s.input_shape[0]
        assert len(s.class_names) == s.num_classes
        assert s.offline == (name == "mnist-5k" or name.endswith("-samples"))
    assert data.dataset_spec("cifar10").default_arch == "ddnet"
    assert data.dataset_spec("imagenet").class_names[0] == "tench"


def test_unknown_dataset_lists_names():
    with pytest.raises(ConfigError, match="mnist-5k"):
        data.dataset_spec("svhn")
    with pytest.raises(ConfigError, match="unknown dataset"):
        data.load_dataset("svhn")
    with pytest.raises(JacregError):
        data.get_dataset(["mnist"])  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["val", "TEST", ""])
def test_bad_split(split):
    with pytest.raises(ConfigError, match="train' or 'test"):
        data.load_dataset("mnist-5k", split=split)


@pytest.mark.parametrize("limit", [0, -3, 2.5, "10", True])
def test_bad_limit(limit):
    with pytest.raises(ConfigError, match="limit"):
        data.load_dataset("mnist-5k", limit=limit)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    assert data.resolve_data_root() == Path("~/.cache/jacreg").expanduser()
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert data.resolve_data_root() == tmp_path / "env"
    assert data.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"


# --------------------------------------------------------------------------------------------------
# mnist-5k


def test_mnist5k_shapes_and_ranges():
    x, y = data.load_dataset("mnist-5k", split="test")
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    xt, yt = data.load_dataset("mnist-5k", split="train")
    assert xt.shape == (4000, 1, 28, 28) and yt.shape == (4000,)
    # real digits: about 19% of MNIST pixels are ink, mean intensity near MNIST's 0.1307
    assert 0.11 < float(xt.mean()) < 0.15


def test_mnist5k_is_stratified_and_balanced_in_every_prefix():
    _, y = data.load_dataset("mnist-5k", split="test")
    _, yt = data.load_dataset("mnist-5k", split="train")
    assert torch.bincount(y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(yt, minlength=10).tolist() == [400] * 10
    for k in (1, 5, 20):  # the first 10k samples hold k of each class
        assert torch.bincount(y[: 10 * k], minlength=10).tolist() == [k] * 10
    assert y[:10].tolist() != list(range(10))  # classes are shuffled within a round


def test_mnist5k_train_and_test_are_disjoint():
    x, _ = data.load_dataset("mnist-5k", split="test")
    xt, _ = data.load_dataset("mnist-5k", split="train")
    test_rows = {bytes(r) for r in (x.flatten(1) * 255).round().to(torch.uint8).numpy()}
    train_rows = {bytes(r) for r in (xt.flatten(1) * 255).round().to(torch.uint8).numpy()}
    assert len(test_rows) == 1000 and len(train_rows) == 4000  # no duplicates inside a split either
    assert not test_rows & train_rows


def test_mnist5k_deterministic_and_limit_keeps_order():
    x1, y1 = data.load_dataset("mnist-5k", split="test")
    x1[:] = 0.5  # a caller changing its copy changes nothing cached
    x2, y2 = data.load_dataset("mnist-5k", split="test")
    x3, y3 = data.load_dataset("mnist-5k", split="test", limit=37)
    assert x3.shape == (37, 1, 28, 28) and torch.equal(x3, x2[:37]) and torch.equal(y3, y2[:37])
    assert torch.equal(y1, y2) and not torch.equal(x1, x2)
    x4, _ = data.load_dataset("mnist-5k", split="test", limit=10**6)
    assert x4.shape[0] == 1000
    assert torch.equal(data.load_dataset("mnist-5k", limit=np.int64(3))[1], y2[:3])


def test_mnist5k_get_dataset_items_match_load_dataset():
    ds = data.get_dataset("mnist-5k", split="train")
    x, y = data.load_dataset("mnist-5k", split="train", limit=5)
    assert len(ds) == 4000
    for i in range(5):
        xi, yi = ds[i]
        assert isinstance(yi, int) and yi == int(y[i])
        assert xi.shape == (1, 28, 28) and xi.dtype == torch.float32 and torch.equal(xi, x[i])
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 28, 28) and yb.dtype == torch.int64


# --------------------------------------------------------------------------------------------------
# Offline errors


def _no_network(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[0] if args else None)
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


@pytest.mark.parametrize("name", ["mnist", "cifar10", "usps", "fashion-mnist"])
def test_download_failure_is_a_clear_error(monkeypatch, tmp_path, name):
    calls = _no_network(monkeypatch)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    t0 = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as info:
        data.load_dataset(name, limit=10, data_root=tmp_path)
    assert time.perf_counter() - t0 < 20
    msg = str(info.value)
    assert "mnist-5k" in msg and str(tmp_path) in msg and "simulated: no network" in msg
    assert calls, "the downloader was not asked"
    if name == "fashion-mnist":
        assert "dataset-fashion-mnist" in msg


def test_download_failure_inside_torchvision_is_a_clear_error(monkeypatch, tmp_path):
    """The server probe passes, then torchvision's own download fails: still DatasetUnavailable."""
    calls = _no_network(monkeypatch)
    monkeypatch.setattr(data, "_probe", lambda url, timeout=0: None)
    with pytest.raises(DatasetUnavailable, match="mnist-5k"):
        data.load_dataset("mnist", data_root=tmp_path)
    assert calls  # torchvision tried its mirrors through the patched urlopen


@pytest.mark.timeout(60)
def test_real_offline_path_fails_fast(tmp_path):
    """Without monkeypatching: on a machine with no network the error comes quickly."""
    try:
        data._probe(data._TORCHVISION["mnist"][1], timeout=3)
    except (urllib.error.URLError, OSError):
        pass
    else:
        pytest.skip("this machine is online: the real path would download MNIST")
    t0 = time.perf_counter()
    with pytest.raises(DatasetUnavailable, match="mnist-5k"):
        data.load_dataset("mnist", limit=5, data_root=tmp_path)
    with pytest.raises(DatasetUnavailable, match="mnist-5k"):
        data.load_dataset("cifar10", limit=5, data_root=tmp_path)
    assert time.perf_counter() - t0 < 2 * data.PROBE_TIMEOUT_S + 5


def test_imagenet_missing_names_the_folder(tmp_path):
    with pytest.raises(DatasetUnavailable, match="ImageFolder") as info:
        data.load_dataset("imagenet", limit=2, data_root=tmp_path)
    assert str(tmp_path / "imagenet" / "val") in str(info.value) and "mnist-5k" in str(info.value)
    assert not data.is_available("imagenet", data_root=tmp_path)
    assert data.is_available("mnist-5k")


# --------------------------------------------------------------------------------------------------
# Local files (no download)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def _fake_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def test_mnist_from_local_torchvision_files(monkeypatch, tmp_path):
    calls = _no_network(monkeypatch)
    raw = tmp_path / "MNIST" / "raw"
    images, labels = _fake_digits(12)
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=False)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    x, y = data.load_dataset("mnist", split="test", limit=7, data_root=tmp_path)
    assert not calls
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(images[:7]).float().unsqueeze(1) / 255)
    assert y.tolist() == labels[:7].tolist()
    assert data.is_available("mnist", "train", data_root=tmp_path)


def test_fashion_mnist_from_debian_layout(monkeypatch, tmp_path):
    """Debian's dataset-fashion-mnist layout (gzipped idx files), faked in a temp folder."""
    calls = _no_network(monkeypatch)
    debian = tmp_path / "debian"
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    images, labels = _fake_digits(9, seed=1)
    _write_idx(debian / "t10k-images-idx3-ubyte.gz", images, compress=True)
    _write_idx(debian / "t10k-labels-idx1-ubyte.gz", labels, compress=True)
    x, y = data.load_dataset("fashion-mnist", split="test", data_root=tmp_path / "root")
    assert not calls
    assert torch.equal((x * 255).round().to(torch.uint8).squeeze(1), torch.from_numpy(images))
    assert y.tolist() == labels.tolist()
    assert data.is_available("fashion-mnist", "test", data_root=tmp_path / "root")
    # the train split is absent from this fake package: a download is attempted and fails cleanly
    with pytest.raises(DatasetUnavailable, match="mnist-5k"):
        data.load_dataset("fashion-mnist", split="train", data_root=tmp_path / "root")


def test_corrupt_idx_file_is_a_clear_error(monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    images, labels = _fake_digits(4)
    _write_idx(debian / "t10k-images-idx3-ubyte.gz", images, compress=True)
    with gzip.open(debian / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + np.asarray([4], dtype=">i4").tobytes() + b"\x01")  # 1 of 4 labels
    with pytest.raises(DatasetUnavailable, match="truncated or corrupt"):
        data.load_dataset("fashion-mnist", data_root=tmp_path)


@pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_installed_debian_package(monkeypatch, tmp_path):
    calls = _no_network(monkeypatch)
    x, y = data.load_dataset("fashion-mnist", split="test", data_root=tmp_path)
    assert not calls
    assert x.shape == (10000, 1, 28, 28) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10
    assert int(y[0]) == 9  # the first Fashion-MNIST test image is an ankle boot
    assert 0.27 < float(x.mean()) < 0.30


def test_usps_is_resized_to_28(monkeypatch, tmp_path):
    """USPS in torchvision's libsvm/bz2 format (values in [-1, 1], labels 1..10), faked locally."""
    calls = _no_network(monkeypatch)
    rng = np.random.default_rng(0)
    rows = []
    labels = [3, 1, 10]
    for label in labels:
        values = rng.uniform(-1, 1, size=256)
        rows.append(f"{label} " + " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(values)))
    with bz2.open(tmp_path / "usps.t.bz2", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    x, y = data.load_dataset("usps", split="test", data_root=tmp_path)
    assert not calls
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.tolist() == [label - 1 for label in labels]
    assert data.dataset_spec("usps").input_shape == (1, 28, 28)


def test_imagenet_image_folder(tmp_path):
    from PIL import Image

    for wnid in ("n01440764", "n01443537"):
        folder = tmp_path / "imagenet" / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (300, 260), color=(40 * i, 100, 200)).save(folder / f"img{i}.png")
    x, y = data.load_dataset("imagenet", split="test", data_root=tmp_path)
    assert x.shape == (4, 3, 224, 224) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.tolist() == [0, 1, 0, 1]  # classes interleaved: the first N samples cover the classes
    assert data.is_available("imagenet", "test", data_root=tmp_path)


@pytest.mark.parametrize("name, shape, classes", [
    ("mnist-samples", (1, 28, 28), 10), ("fashion-mnist-samples", (1, 28, 28), 10),
    ("cifar10-samples", (3, 32, 32), 10), ("cifar100-samples", (3, 32, 32), 100),
    ("imagenet-samples", (3, 224, 224), 1000),
])
def test_foolbox_sample_sets_load_offline_for_every_input_shape(name, shape, classes):
    x, y = data.load_dataset(name, "test", limit=8)
    assert tuple(x.shape) == (8, *shape) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < classes
    assert data.dataset_spec(name).num_classes == classes and not data.dataset_spec(name).trainable
    assert len(data.load_dataset(name, "test")[0]) == 20
    with pytest.raises(ConfigError, match="test images only"):
        data.load_dataset(name, "train")
    assert name not in data.names(trainable=True) and name in data.names()


def test_the_mnist_samples_are_the_first_mnist_test_digits():
    """foolbox's MNIST samples are the first digits of the MNIST test set (7, 2, 1, 0, 4, ...)."""
    _, y = data.load_dataset("mnist-samples", "test")
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
