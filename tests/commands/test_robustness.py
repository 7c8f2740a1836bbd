"""python -m jacreg robustness: the files it writes and one-line user errors."""

from __future__ import annotations

import json

import pytest

from jacreg.checkpoints import load_checkpoint
from jacreg.cli import main
from jacreg.data import load_dataset
from tests.helpers import clean_accuracy


def test_cli_happy_path(trained_checkpoint, tmp_path, capsys):
    out_json, out_csv, out_png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    code = main(["robustness", str(trained_checkpoint), "--dataset", "mnist-5k", "--attack", "pgd",
                 "--eps", "0.1,0,0.05", "--samples", "20", "--param", "steps=5", "--device", "cpu",
                 "--json", str(out_json), "--csv", str(out_csv), "--png", str(out_png), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out_json.read_text())
    for key in ("attack", "epsilons", "accuracy", "samples", "seconds", "clean_accuracy", "min_epsilons",
                "mean_l2", "warnings"):
        assert key in result
    assert result["attack"] == "pgd" and result["samples"] == 20 and result["epsilons"] == [0.0, 0.05, 0.1]
    assert "sorted" in captured.err
    x, y = load_dataset("mnist-5k", limit=20)  # --samples N = the first N test samples
    m, _ = load_checkpoint(trained_checkpoint)
    assert result["accuracy"][0] == pytest.approx(clean_accuracy(m, x, y))
    assert len(out_csv.read_text().strip().splitlines()) == 4
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(captured.out.strip().splitlines()[-1])["accuracy"] == result["accuracy"]


@pytest.mark.parametrize("args, phrase", [
    (["--eps=-0.1,0.1"], ">= 0"),
    (["--eps", "0,2"], "beyond the input range"),
    (["--samples", "0"], "--samples"),
    (["--attack", "bim"], "unknown attack"),
    (["--param", "stepz=3"], "stepz"),
])
def test_cli_user_errors_exit_2(trained_checkpoint, capsys, args, phrase):
    assert main(["robustness", str(trained_checkpoint), "--quiet", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert phrase in err and "Traceback" not in err and len(err.splitlines()) == 1
