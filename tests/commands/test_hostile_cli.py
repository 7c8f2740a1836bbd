"""Hostile command lines: each ends in one line on stderr and exit 2 (or the correct result), within
seconds, before any long work, and nothing existing is overwritten without --force."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jacreg.checkpoints import read_metadata
from jacreg.cli import main


def _run(args: list[str], capsys) -> tuple[int, str]:
    t0 = time.perf_counter()
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert time.perf_counter() - t0 < 20, f"{args} took too long to fail"
    return rc, err[-1] if err else ""


@pytest.mark.parametrize("extra, phrase", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--samples", "0"], "--samples"),
    (["--samples", "1e3"], "integer"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--device", "cuda:7"], "cuda"),
])
def test_eval_bad_arguments(trained_checkpoint, capsys, extra, phrase):
    rc, last = _run(["eval", str(trained_checkpoint), *extra], capsys)
    assert rc == 2 and phrase in last


@pytest.mark.parametrize("extra, phrase", [
    (["--extent", "1e308"], "extent"),
    (["--extent", "nan"], "extent"),
    (["--extent", "inf"], "extent"),
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--sample", "-3"], "--sample"),
    (["--resolution", "100000"], "--resolution"),
    (["--stats", "-1"], "--stats"),
    (["--batch-size", "0"], "--batch-size"),
    (["--plane", "samples", "--through", "1"], "two indices"),
])
def test_cells_bad_arguments(trained_checkpoint, capsys, extra, phrase):
    rc, last = _run(["cells", str(trained_checkpoint), "--resolution", "21", *extra], capsys)
    assert rc == 2 and phrase in last, last


@pytest.mark.parametrize("extra, phrase", [
    (["--param", "steps=1000000000"], "steps"),
    (["--param", "steps=-2"], "steps"),
    (["--param", "rel_stepsize=nan"], "finite"),
    (["--eps", ",".join(["0.1"] * 101)], "at most 100"),
    (["--eps", "0,1e309"], "finite"),
    (["--seed", "4294967296"], "--seed"),
])
def test_robustness_bad_arguments(trained_checkpoint, capsys, extra, phrase):
    rc, last = _run(["robustness", str(trained_checkpoint), "--samples", "5", "--quiet", *extra], capsys)
    assert rc == 2 and phrase in last, last


@pytest.mark.parametrize("option", ["--json", "--npz", "--png"])
def test_unwritable_outputs_fail_before_the_work(trained_checkpoint, tmp_path, capsys, option):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "out.bin"  # a file where a folder should be
    rc, last = _run(["cells", str(trained_checkpoint), "--resolution", "1001", option, str(target)], capsys)
    assert rc == 2 and str(target) in last and "folder" in last
    args = ["robustness", str(trained_checkpoint), "--samples", "1000", "--json", str(tmp_path)]
    rc, last = _run(args, capsys)
    assert rc == 2 and "is a folder" in last


def test_train_outputs_and_events_are_checked_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for option in ("--out", "--events", "--json"):
        target = blocker / ("m.safetensors" if option == "--out" else "x.json")
        args = ["train", "--epochs", "1", "--limit-batches", "1", "--eval-samples", "0", "--device", "cpu",
                "--out", str(tmp_path / "m.safetensors"), option, str(target)]
        rc, last = _run(args, capsys)
        assert rc == 2 and str(target) in last, last
    assert not (tmp_path / "m.safetensors").exists()


def test_train_never_replaces_a_model_without_force(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(trained_checkpoint.read_bytes())
    before = out.read_bytes()
    base = ["train", "--epochs", "1", "--limit-batches", "1", "--eval-samples", "0", "--device", "cpu",
            "--quiet", "--out", str(out)]
    rc, last = _run(base, capsys)
    assert rc == 2 and "--force" in last and out.read_bytes() == before
    assert main([*base, "--force"]) == 0
    assert out.read_bytes() != before and read_metadata(out)["config"]["limit_batches"] == 1
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # the usual mode, not a temp file's private one


@pytest.mark.parametrize("name", ["-x", "--resume", "--epochs=1000"])
def test_names_that_look_like_options_are_just_names(tmp_path, capsys, name):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--epochs", "1", "--limit-batches", "1", "--eval-samples", "0", "--device", "cpu",
                 "--quiet", "--out", str(out), f"--name={name}"]) == 0
    assert read_metadata(out)["name"] == name
    assert f"--name={name}" in read_metadata(out)["command"]


@pytest.mark.parametrize("name, phrase", [("a\0b", "control"), ("a\nb", "control"), ("x" * 101, "at most")])
def test_bad_names_are_refused(tmp_path, capsys, name, phrase):
    args = ["train", "--epochs", "1", "--out", str(tmp_path / "m.safetensors"), "--name", name]
    rc, last = _run(args, capsys)
    assert rc == 2 and phrase in last


def test_missing_and_special_checkpoint_paths(tmp_path, capsys):
    for path, phrase in ((tmp_path / "missing.safetensors", "no such checkpoint"), (tmp_path, "folder"),
                         (Path("/dev/null"), "device")):
        rc, last = _run(["eval", str(path)], capsys)
        assert rc == 2 and phrase in last, last
