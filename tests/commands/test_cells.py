"""python -m jacreg cells: the NPZ contract, statistics, and one-line user errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jacreg import architectures
from jacreg.checkpoints import save_checkpoint
from jacreg.cli import main
from jacreg.data import load_dataset
from tests.helpers import SHAPE


@pytest.fixture(scope="module")
def ckpts(lenet, tmp_path_factory):
    root = tmp_path_factory.mktemp("cells_ckpt")
    torch.manual_seed(7)
    other = architectures.create("lenet").eval()
    a, b = root / "plain.safetensors", root / "other.safetensors"
    save_checkpoint(lenet, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "plain"}, a)
    save_checkpoint(other, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "other"}, b)
    cifar = architectures.create("lenet", input_shape=(3, 32, 32))
    c = root / "cifar.safetensors"
    save_checkpoint(cifar, {"arch": "lenet", "dataset": "cifar10", "num_classes": 10, "name": "cifar",
                            "input_shape": [3, 32, 32]}, c)
    return a, b, c


def test_cli_writes_the_npz_contract(ckpts, tmp_path, capsys):
    a, b, _ = ckpts
    out, png, js = tmp_path / "o.npz", tmp_path / "o.png", tmp_path / "o.json"
    rc = main(["cells", str(a), str(b), "--sample", "3", "--plane", "adversarial", "--seed", "1",
               "--extent", "2", "--resolution", "31", "--npz", str(out), "--png", str(png), "--json", str(js),
               "--device", "cpu"])
    assert rc == 0
    with np.load(out) as z:
        assert z["origin"].shape == z["u"].shape == z["v"].shape == SHAPE
        assert abs(float((z["u"] * z["v"]).sum())) < 1e-5 and abs(float(np.linalg.norm(z["u"])) - 1) < 1e-5
        assert z["coords"].shape == (31,) and z["coords"][-1] == pytest.approx(2.0)
        assert z["labels"].shape == z["confidence"].shape == (2, 31, 31)
        assert np.issubdtype(z["labels"].dtype, np.integer)
        assert z["boundary_distance"].shape == (2,)
        assert z["predicted_distance"].shape == (2,) and np.isfinite(z["predicted_distance"]).all()
        x, _ = load_dataset("mnist-5k", limit=4)
        assert np.allclose(z["origin"], x[3].numpy())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    summary = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert summary["plane"] == "adversarial" and [m["name"] for m in summary["models"]] == ["plain", "other"]
    assert "plain" in capsys.readouterr().out


def test_cli_stats_and_samples_plane(ckpts, tmp_path, capsys):
    a, _, _ = ckpts
    rc = main(["cells", str(a), "--sample", "0", "--plane", "samples", "--through", "1,2", "--extent", "3",
               "--resolution", "21", "--npz", str(tmp_path / "s.npz"), "--stats", "2",
               "--stats-resolution", "15", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "random planes" in out and "adversarial planes" in out and "radius mean" in out


@pytest.mark.parametrize("extra, message", [
    (["--sample", "100000"], "does not exist"),
    (["--extent", "0"], "extent"),
    (["--extent", "-2"], "extent"),
    (["--resolution", "10"], "resolution"),
    (["--resolution", "1002"], "resolution"),
    (["--plane", "samples", "--through", "0,0"], "degenerate"),
    (["--plane", "sideways"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(ckpts, tmp_path, capsys, extra, message):
    a, _, _ = ckpts
    rc = main(["cells", str(a), "--resolution", "21", "--npz", str(tmp_path / "x.npz"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.npz").exists()


def test_cli_models_with_different_input_shapes(ckpts, tmp_path, capsys):
    a, _, c = ckpts
    rc = main(["cells", str(a), str(c), "--resolution", "21", "--npz", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "input shapes" in err and len(err.splitlines()) == 1
    rc = main(["cells", str(tmp_path / "missing.safetensors"), "--npz", str(tmp_path / "x.npz")])
    assert rc == 2


def test_cli_writes_the_film_as_html_and_gif(snapshot_pair, tmp_path, capsys):
    import json

    from PIL import Image

    none, jr = snapshot_pair / "lenet-none.safetensors", snapshot_pair / "lenet-jr.safetensors"
    gif, js = tmp_path / "film.gif", tmp_path / "film.json"
    rc = main(["cells", str(none), str(jr), "--sample", "2", "--extent", "3", "--resolution", "15",
               "--film", str(gif), "--film-ms", "200", "--json", str(js), "--device", "cpu"])
    assert rc == 0
    movie = Image.open(gif)
    assert movie.n_frames == 3 and movie.info["duration"] == 200          # one frame per epoch
    out = capsys.readouterr().out
    assert "film: 6 frames of 2 run(s)" in out and "linearised" in out
    summary = json.loads(js.read_text())
    frames = summary["film_frames"]
    assert [(f["run"], f["epoch"]) for f in frames] == [(n, e) for n in ("lenet-none", "lenet-jr")
                                                        for e in (1, 2, 3)]
    assert all("predicted_radius" in f and "radius" in f for f in frames)
    assert all("predicted_distance" in m for m in summary["models"])
    html = tmp_path / "film.html"
    assert main(["cells", str(jr), "--extent", "3", "--resolution", "11", "--film", str(html),
                 "--device", "cpu"]) == 0
    page = html.read_text()
    assert "Plotly.addFrames" in page and "<script src=" not in page      # plays offline


@pytest.mark.parametrize("film, message", [("film.mp4", ".html or .gif"),
                                           ("film.html", "--snapshot-every 1")])
def test_cli_film_errors_are_one_line(ckpts, tmp_path, capsys, film, message):
    a, _, _ = ckpts
    rc = main(["cells", str(a), "--resolution", "15", "--film", str(tmp_path / film), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
