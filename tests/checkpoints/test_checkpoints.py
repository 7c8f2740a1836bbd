"""Checkpoints: safetensors round trip with a model card, and the safe loader for untrusted files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from jacreg import architectures, checkpoints
from jacreg.checkpoints import file_hash, load_checkpoint, read_metadata, save_checkpoint
from jacreg.errors import CheckpointError, ConfigError

LENET_META = {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10}


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.create("lenet").eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def saved(lenet, tmp_path) -> Path:
    meta = dict(LENET_META, name="lenet-test", config={"lr": 0.1, "out": Path("models/x.safetensors")},
                metrics={"clean_accuracy": 0.97, "jacobian_norm_mean": 1.5},
                history=[{"epoch": 1, "loss": 0.3}])
    return save_checkpoint(lenet, meta, tmp_path / "m.safetensors")


def _torch_bytes(obj, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Round trip


def test_round_trip(lenet, saved, x, tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left behind
    model, meta = load_checkpoint(saved)
    assert not model.training
    assert isinstance(model, architectures.Normalized)
    with torch.no_grad():
        assert torch.equal(model(x), lenet(x))
    assert meta["arch"] == "lenet" and meta["dataset"] == "mnist-5k" and meta["num_classes"] == 10
    assert meta["name"] == "lenet-test"
    assert meta["config"] == {"lr": 0.1, "out": "models/x.safetensors"}
    assert meta["metrics"]["clean_accuracy"] == 0.97 and meta["history"] == [{"epoch": 1, "loss": 0.3}]
    assert meta["input_shape"] == [1, 28, 28]
    assert meta["mean"] == pytest.approx([0.1307]) and meta["std"] == pytest.approx([0.3081])
    assert meta["jacreg_version"] and meta["created"].endswith("+00:00")
    assert meta["format"] == "safetensors" and meta["sha256"] == file_hash(saved.read_bytes())


def test_save_overwrites_atomically_and_fills_defaults(lenet, tmp_path):
    path = tmp_path / "sub" / "ddnet.safetensors"
    ddnet = architectures.create("ddnet", dropout=0.3)
    save_checkpoint(lenet, LENET_META, path)
    save_checkpoint(ddnet, {"arch": "ddnet", "dataset": "cifar10", "num_classes": 10}, path)
    assert [p.name for p in path.parent.iterdir()] == ["ddnet.safetensors"]
    card = read_metadata(path)
    assert card["arch"] == "ddnet" and card["input_shape"] == [3, 32, 32] and card["dropout"] == 0.3
    assert card["name"] == "ddnet" and len(card["mean"]) == 3


def test_save_requires_card_fields(lenet, tmp_path):
    for missing in ("arch", "dataset", "num_classes"):
        meta = {k: v for k, v in LENET_META.items() if k != missing}
        with pytest.raises(ConfigError, match=missing):
            save_checkpoint(lenet, meta, tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="unknown architecture"):
        save_checkpoint(lenet, dict(LENET_META, arch="vgg"), tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="JSON"):
        save_checkpoint(lenet, dict(LENET_META, config={"f": object()}), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_handles_shared_and_wrapped_tensors(tmp_path):
    model = architectures.create("lenet")
    weight = model.body.classifier[-1].weight
    model.body.register_buffer("alias", weight.detach()[:, :3])  # a view sharing storage
    wrapped = torch.nn.DataParallel(model)  # keys of the wrapper start with "module."
    path = save_checkpoint(wrapped, LENET_META, tmp_path / "shared.safetensors")
    tensors = load_file(path)
    assert "body.alias" in tensors and "module.body.alias" not in tensors
    assert torch.equal(tensors["body.alias"], weight.detach()[:, :3])


# --------------------------------------------------------------------------------------------------
# read_metadata


def test_read_metadata_reads_only_the_header(saved):
    raw = saved.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header_only = raw[: 8 + n]  # all tensor data cut off: only the header is needed
    assert read_metadata(header_only)["name"] == "lenet-test"
    assert read_metadata(saved) == read_metadata(raw)
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(header_only)


def test_read_metadata_without_card_and_errors(lenet, tmp_path):
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({k: v.contiguous() for k, v in lenet.state_dict().items()}))
    assert read_metadata(plain) == {}
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_metadata(_torch_bytes(lenet.state_dict()))
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_metadata(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_metadata(tmp_path / "missing.safetensors")
    bad_card = st_save({"a": torch.zeros(1)}, metadata={"jacreg": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(bad_card)


# --------------------------------------------------------------------------------------------------
# PyTorch state dicts


@pytest.mark.parametrize("variant", ["plain", "state_dict", "model_state_dict", "model", "net", "ema",
                                     "ddp", "no-body-prefix", "legacy-format", "compiled-ddp"])
def test_torch_state_dicts_load(lenet, x, variant):
    sd = {k: v.clone() for k, v in lenet.state_dict().items()}
    kwargs = {}
    if variant in ("state_dict", "model_state_dict", "model", "net", "ema"):
        obj = {variant: sd, "epoch": 7, "optimizer": {"lr": 0.1}}
    elif variant == "ddp":
        obj = {"state_dict": {"module." + k: v for k, v in sd.items()}}
    elif variant == "compiled-ddp":
        obj = {"module._orig_mod." + k: v for k, v in sd.items()}
    elif variant == "no-body-prefix":  # a bare LeNet saved without our Normalized wrapper (and its mean/std)
        obj = {k[len("body."):]: v for k, v in sd.items() if k.startswith("body.")}
    else:
        obj = sd
        if variant == "legacy-format":
            kwargs["_use_new_zipfile_serialization"] = False
    blob = _torch_bytes(obj, **kwargs)
    assert blob[:4] == b"PK\x03\x04" if variant != "legacy-format" else blob[:1] == b"\x80"
    model, meta = load_checkpoint(blob, arch="lenet", dataset="mnist")
    with torch.no_grad():
        assert torch.equal(model(x), lenet(x))
    assert meta["arch"] == "lenet" and meta["num_classes"] == 10 and meta["source"] == "upload"
    assert meta["format"] == "torch"


def test_torch_file_path_and_file_object(lenet, x, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(lenet.state_dict(), path)
    model, meta = load_checkpoint(path, arch="lenet", num_classes=10)
    assert meta["name"] == "weights" and meta["source"] == "file"
    buf = io.BytesIO(path.read_bytes())
    buf.name = "weights.pth"
    model2, meta2 = load_checkpoint(buf, arch="lenet", num_classes=10)
    with torch.no_grad():
        assert torch.equal(model(x), model2(x))
    assert meta2["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Malicious and foreign files


class _Payload:
    """Unpickling this would run ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    """Unpickling this would create ``marker`` through ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """The test payload is live (so the refusals below mean something)."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("container", ["torch-zip", "torch-legacy", "pickle-2", "pickle-4"])
@pytest.mark.parametrize("payload", [_Payload, _OpenPayload])
def test_malicious_pickle_never_executes(lenet, tmp_path, monkeypatch, container, payload):
    # Even this environment variable must not turn the safe loader into an unsafe one.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    obj = {"state_dict": lenet.state_dict(), "evil": payload(marker)}
    if container == "torch-zip":
        blob = _torch_bytes(obj)
    elif container == "torch-legacy":
        blob = _torch_bytes(obj, _use_new_zipfile_serialization=False)
    else:
        blob = pickle.dumps(obj, protocol=int(container[-1]))
    path = tmp_path / "evil.pt"
    path.write_bytes(blob)
    for source in (blob, path):
        with pytest.raises(CheckpointError, match="code or objects other than tensors and was refused"):
            load_checkpoint(source, arch="lenet", num_classes=10)
    assert not marker.exists()


def test_pickled_module_refused(lenet):
    blob = _torch_bytes(lenet)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_checkpoint(blob, arch="lenet", num_classes=10)
    assert "state_dict" in str(info.value)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated; users still have such files
def test_torchscript_refused(x):
    scripted = torch.jit.trace(architectures.create("lenet").eval(), x)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    with pytest.raises(CheckpointError, match="TorchScript|refused"):
        load_checkpoint(buf.getvalue(), arch="lenet", num_classes=10)


def test_no_state_dict_inside(lenet):
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(_torch_bytes({"epoch": 3, "lr": 0.1}), arch="lenet", num_classes=10)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(_torch_bytes([torch.zeros(2)]), arch="lenet", num_classes=10)


# --------------------------------------------------------------------------------------------------
# Damaged files and limits


def test_truncated_files(lenet, saved):
    raw = saved.read_bytes()
    zipped = _torch_bytes(lenet.state_dict())
    legacy = _torch_bytes(lenet.state_dict(), _use_new_zipfile_serialization=False)
    for blob, phrase in [(raw[: len(raw) // 2], "truncated"), (raw[:20], "truncated"),
                         (zipped[: len(zipped) // 2], "corrupt or truncated PyTorch"),
                         (legacy[: len(legacy) // 2], "corrupt or truncated PyTorch")]:
        with pytest.raises(CheckpointError, match=phrase):
            load_checkpoint(blob, arch="lenet", num_classes=10)


@pytest.mark.parametrize("blob", [b"hello, I am not a checkpoint", random.Random(0).randbytes(4096),
                                  b"\x89PNG\r\n\x1a\n" + bytes(100), b"{}"])
def test_garbage_refused(blob):
    if blob[:1] == b"\x80" or blob[:4] == b"PK\x03\x04":
        blob = b"G" + blob
    with pytest.raises(CheckpointError, match="not a safetensors, PyTorch or ONNX model|corrupt"):
        load_checkpoint(blob, arch="lenet", num_classes=10)


def test_empty_and_missing(tmp_path):
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(b"")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="path or bytes"):
        load_checkpoint(12345)  # type: ignore[arg-type]


def test_size_limit(saved):
    size = saved.stat().st_size
    with pytest.raises(CheckpointError, match="over the limit of 1000 bytes"):
        load_checkpoint(saved, max_bytes=1000)
    with pytest.raises(CheckpointError, match="over the limit of 1 MiB"):
        load_checkpoint(saved.read_bytes() + bytes(2**20), max_bytes=2**20)
    load_checkpoint(saved, max_bytes=size)  # exactly at the limit is fine


# --------------------------------------------------------------------------------------------------
# Weights that do not fit


def _with_card(state: dict, card: dict) -> bytes:
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata={"jacreg": json.dumps(card)})


def test_wrong_architecture():
    ddnet = architectures.create("ddnet")
    lenet_card = checkpoints.build_card(architectures.create("lenet"), LENET_META)
    with pytest.raises(CheckpointError, match="wrong architecture") as info:
        load_checkpoint(_with_card(ddnet.state_dict(), lenet_card))
    assert "lenet" in str(info.value) and "body." in str(info.value)
    buf = _torch_bytes(ddnet.state_dict())
    with pytest.raises(CheckpointError, match="wrong architecture"):
        load_checkpoint(buf, arch="lenet", dataset="mnist-5k")


def test_wrong_number_of_classes(tmp_path):
    five = architectures.create("lenet", num_classes=5)
    with pytest.raises(CheckpointError, match="wrong number of classes.*5 outputs.*num_classes=10"):
        load_checkpoint(_torch_bytes(five.state_dict()), arch="lenet", dataset="mnist-5k")
    card = checkpoints.build_card(five, dict(LENET_META, num_classes=5))
    card["num_classes"] = 10  # a card that lies about the classes
    with pytest.raises(CheckpointError, match="wrong number of classes"):
        load_checkpoint(_with_card(five.state_dict(), card))
    model, meta = load_checkpoint(_torch_bytes(five.state_dict()), arch="lenet", num_classes=5)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5) and meta["num_classes"] == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(lenet, bad):
    sd = {k: v.clone() for k, v in lenet.state_dict().items()}
    sd["body.features.0.weight"][0, 0, 0, 0] = bad
    card = checkpoints.build_card(lenet, LENET_META)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(_with_card(sd, card))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(_torch_bytes(sd), arch="lenet", num_classes=10)


def test_bad_normalisation_buffer(lenet):
    sd = {k: v.clone() for k, v in lenet.state_dict().items()}
    sd["std"] = torch.zeros_like(sd["std"])
    with pytest.raises(CheckpointError, match="std must be positive"):
        load_checkpoint(_torch_bytes(sd), arch="lenet", num_classes=10)


# --------------------------------------------------------------------------------------------------
# Files without a model card


def test_cardless_registry_weights_are_recognised(lenet, x):
    """A bare state dict of a registry model loads as the one architecture its keys and shapes fit."""
    for sd in (lenet.state_dict(), lenet.body.state_dict()):  # with and without the normalisation
        blob = st_save({k: v.contiguous() for k, v in sd.items()})
        model, meta = load_checkpoint(blob)
        with torch.no_grad():
            assert torch.equal(model(x), lenet(x))
        assert (meta["arch"], meta["dataset"], meta["input_shape"]) == ("lenet", "mnist-5k", [1, 28, 28])
        assert "has no model card" in meta["inferred"]
        assert "lenet with 10 classes on 1x28x28" in meta["inferred"]
    ddnet = architectures.create("ddnet", num_classes=100)
    _, meta = load_checkpoint(_torch_bytes(ddnet.body.state_dict()))
    assert (meta["arch"], meta["num_classes"], meta["input_shape"]) == ("ddnet", 100, [3, 32, 32])


def test_cardless_choices_override_and_foreign_weights_get_a_plain_message(lenet):
    blob = st_save({k: v.contiguous() for k, v in lenet.state_dict().items()})
    _, meta = load_checkpoint(blob, arch="lenet", dataset="mnist")
    assert meta["dataset"] == "mnist" and "inferred" not in meta
    _, meta = load_checkpoint(blob, dataset="fashion-mnist")  # the dataset chosen, the architecture inferred
    assert meta["arch"] == "lenet" and meta["dataset"] == "fashion-mnist"
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_checkpoint(blob, arch="vgg16", num_classes=10)
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_checkpoint(blob, arch="lenet", dataset="svhn")
    foreign = st_save({"encoder.weight": torch.zeros(16, 8), "decoder.weight": torch.zeros(8, 16)})
    with pytest.raises(CheckpointError, match="fit none of the registered architectures.*--arch.*ONNX"):
        load_checkpoint(foreign)
    wrong = {k: v.clone() for k, v in lenet.state_dict().items()}
    wrong["body.classifier.1.weight"] = torch.zeros(120, 399)
    with pytest.raises(CheckpointError, match="fit none"):
        load_checkpoint(_torch_bytes(wrong))


def test_caller_choice_overrides_card(saved):
    with pytest.raises(CheckpointError, match="wrong architecture"):
        load_checkpoint(saved, arch="ddnet")
    _, meta = load_checkpoint(saved, dataset="mnist")
    assert meta["dataset"] == "mnist" and meta["name"] == "lenet-test"


def test_device_argument(saved):
    model, _ = load_checkpoint(saved, device="auto")
    assert next(model.parameters()).device.type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError):
        load_checkpoint(saved, device="tpu:9")


def test_file_hash():
    assert file_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert file_hash(b"abc") != file_hash(b"abd")
