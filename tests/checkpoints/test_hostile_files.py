"""Hostile checkpoint files: every one ends in a one-line CheckpointError, fast, in bounded memory,
and never echoes the file's contents."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import zipfile

import pytest
import torch

from jacreg import architectures
from jacreg.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from jacreg.errors import CheckpointError, ConfigError


def _safetensors_with_card(card: object, tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    """A safetensors file whose metadata holds ``card`` (any JSON text), built by hand."""
    from safetensors.torch import save

    tensors = tensors or {"w": torch.zeros(2)}
    text = card if isinstance(card, str) else json.dumps(card)
    return save(tensors, metadata={"jacreg": text})


@pytest.fixture(scope="module")
def lenet_state() -> dict[str, torch.Tensor]:
    return architectures.create("lenet").state_dict()


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.mark.parametrize("card, phrase", [
    ({"arch": "lenet", "num_classes": 10, "input_shape": 28}, "input_shape"),
    ({"arch": "lenet", "num_classes": 10, "input_shape": "1,28,28"}, "input_shape"),
    ({"arch": "lenet", "num_classes": 10, "input_shape": [1, 28, 28], "mean": 0.1}, "mean"),
    ({"arch": "lenet", "num_classes": 10, "mean": ["a"]}, "mean"),
    ({"arch": "lenet", "num_classes": 10, "std": [0.0]}, "std"),
    ({"arch": "lenet", "num_classes": float("inf")}, "num_classes"),
    ({"arch": "lenet", "num_classes": 1e30}, "num_classes"),
    ({"arch": "lenet", "num_classes": "ten"}, "num_classes"),
    ({"arch": "lenet", "num_classes": True}, "num_classes"),
    ({"arch": ["lenet"], "num_classes": 10}, "arch"),
    ({"arch": "lenet", "num_classes": 10, "dropout": 2}, "dropout"),
    ({"arch": "lenet", "num_classes": 10, "name": {"x": 1}}, "name"),
    ({"arch": "lenet", "num_classes": 10, "input_shape": [1, 6000, 6000]}, "too large"),
    ({"arch": "lenet", "num_classes": 10, "input_shape": [1, -28, 28]}, "input_shape"),
])
def test_bad_card_values_are_refused_before_any_work(lenet_state, card, phrase):
    data = _safetensors_with_card(card, lenet_state)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(data)
    assert phrase in _one_line(err.value)
    assert time.perf_counter() - t0 < 5


def test_deeply_nested_card_and_header_are_refused():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(_safetensors_with_card(deep))
    header = ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()
    data = struct.pack("<Q", len(header)) + header
    with pytest.raises(CheckpointError, match="corrupt"):
        read_metadata(data)


def test_a_small_file_cannot_claim_a_huge_model(lenet_state, monkeypatch):
    """A card claiming a large input that fits the limit but not the weights is refused by the shape
    check on the meta device: the real model (a 120 x 253,344 first dense layer at 3x512x512) is never
    allocated."""
    card = {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "input_shape": [3, 512, 512]}
    data = _safetensors_with_card(card, lenet_state)
    devices: list[str] = []
    real = architectures.create

    def create(*args, **kwargs):
        devices.append(torch.empty(0).device.type)  # the default device where the model is built
        return real(*args, **kwargs)

    monkeypatch.setattr(architectures, "create", create)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(data)
    assert devices == ["meta"]


def test_non_regular_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(result, lambda: load_checkpoint(fifo)), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "a FIFO made the loader hang"
    assert isinstance(result[0], CheckpointError) and "named pipe" in str(result[0])
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="device"):
        load_checkpoint(zero)
    with pytest.raises(CheckpointError, match="device"):
        read_metadata(zero)
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def _catch(out: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        out.append(exc)


def test_messages_never_echo_file_contents(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN 123\n")
    link = tmp_path / "model.safetensors"
    link.symlink_to(secret)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(link)
    assert "TOP-SECRET" not in str(err.value) and "not a safetensors, PyTorch or ONNX model" in str(err.value)


def test_command_line_paths_are_named_as_paths(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_safetensors_with_card({"arch": "lenet", "num_classes": "x"}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value) and "uploaded" not in str(err.value)
    with pytest.raises(CheckpointError, match="the uploaded file"):
        load_checkpoint(bad.read_bytes())


def test_a_zip_that_declares_far_more_than_it_holds_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (64 << 20))  # 64 MiB of zeros deflate to ~64 KiB
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    data = buf.getvalue()
    assert len(data) < (1 << 20)
    with pytest.raises(CheckpointError, match="declares"):
        load_checkpoint(data)


def test_size_limit_holds_whatever_the_file_claims(tmp_path):
    big = tmp_path / "big.pt"
    big.write_bytes(b"\x80" + b"\0" * 2048)
    with pytest.raises(CheckpointError, match="over the limit"):
        load_checkpoint(big, max_bytes=1024)
    with pytest.raises(CheckpointError, match="max_bytes"):
        load_checkpoint(big, max_bytes=0)


def test_saving_refuses_a_card_out_of_range(tmp_path):
    net = architectures.create("lenet")
    with pytest.raises(ConfigError, match="num_classes"):
        save_checkpoint(net, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": -3},
                        tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
