"""ONNX models of any architecture, exported with torch.onnx.export at its defaults: loaded through
the same safe loader, evaluated, attacked and drawn like any other model; hostile files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jacreg.checkpoints import load_checkpoint
from jacreg.cli import main
from jacreg.data import load_dataset
from jacreg.errors import CheckpointError
from jacreg.regularizer import jacobian_norms

onnx = pytest.importorskip("onnx")


class SkipGelu(nn.Module):
    """Not in the registry: a residual block with GELU; it takes [0, 1] images (normalises inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.GELU()
        self.head = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv((x - 0.1307) / 0.3081))
        h = h + self.act(self.conv2(h))
        return self.head(nn.functional.max_pool2d(h, 2).flatten(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[nn.Module, Path]:
    """The net after one epoch of SGD on mnist-5k, exported at torch.onnx.export's defaults (weights in
    a file beside the model, a fixed batch of 2)."""
    torch.manual_seed(0)
    x, y = load_dataset("mnist-5k", "train", limit=2000)
    net = SkipGelu()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, len(x), 100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
        opt.step()
    net.eval()
    path = tmp_path_factory.mktemp("onnx") / "skipgelu.onnx"
    torch.onnx.export(net, (x[:2],), str(path))
    assert Path(str(path) + ".data").is_file()  # the default keeps the weights beside the model
    return net, path


def test_same_predictions_and_any_batch(exported):
    net, path = exported
    model, meta = load_checkpoint(path)
    assert meta["arch"] == "onnx" and meta["input_shape"] == [1, 28, 28] and meta["num_classes"] == 10
    assert meta["dataset"] == "mnist-5k" and meta["fixed_batch"] == 2
    x, _ = load_dataset("mnist-5k", "test", limit=37)  # not a multiple of the exported batch
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-4)
    assert torch.allclose(jacobian_norms(model, x[:5]), jacobian_norms(net, x[:5]), rtol=1e-3)


def test_eval_robustness_and_cells_from_the_command_line(exported, tmp_path, capsys):
    net, path = exported
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "--samples", "300", "--device", "cpu", "--json", str(out)]) == 0
    x, y = load_dataset("mnist-5k", "test", limit=300)
    with torch.no_grad():
        torch_accuracy = float((net(x).argmax(1) == y).float().mean())
    result = json.loads(out.read_text())
    assert result["clean_accuracy"] == pytest.approx(torch_accuracy) and torch_accuracy > 0.7
    rob = tmp_path / "fgsm.json"
    assert main(["robustness", str(path), "--attack", "fgsm", "--eps", "0,0.1,0.2", "--samples", "100",
                 "--device", "cpu", "--quiet", "--json", str(rob)]) == 0
    acc = json.loads(rob.read_text())["accuracy"]
    assert acc[0] > acc[1] > acc[2]
    npz = tmp_path / "c.npz"
    assert main(["cells", str(path), "--resolution", "21", "--extent", "3", "--npz", str(npz)]) == 0
    assert npz.stat().st_size > 0


def test_an_upload_must_carry_its_weights(exported, tmp_path):
    _, path = exported
    with pytest.raises(CheckpointError, match="external_data=False"):
        load_checkpoint(path.read_bytes())
    inline = onnx.load(str(path))
    one = tmp_path / "one.onnx"
    onnx.save(inline, str(one), save_as_external_data=False)
    model, meta = load_checkpoint(one.read_bytes())
    assert meta["arch"] == "onnx" and model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def _tampered(path: Path, change) -> bytes:
    model = onnx.load(str(path), load_external_data=False)
    change(model)
    return model.SerializeToString()


def test_hostile_onnx_files(exported, tmp_path):
    _, path = exported
    escape = tmp_path / "model.onnx"

    def point_outside(model):
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = "../../../etc/passwd"

    escape.write_bytes(_tampered(path, point_outside))
    with pytest.raises(CheckpointError, match="beside the model"):
        load_checkpoint(escape)

    def custom_op(model):
        model.graph.node[0].domain = "com.evil"

    custom = tmp_path / "custom.onnx"
    custom.write_bytes(_tampered(path, custom_op))
    with pytest.raises(CheckpointError, match="custom operators"):
        load_checkpoint(custom)
    with pytest.raises(CheckpointError, match="not a valid ONNX model"):
        load_checkpoint(b"\x08\x07" + b"\xff" * 64)
