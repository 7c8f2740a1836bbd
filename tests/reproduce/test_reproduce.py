"""jacreg.reproduce: a --quick run writes every table and figure from the model cards; reuse."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from jacreg import catalog, reproduce
from jacreg.checkpoints import read_metadata
from jacreg.cli import main
from jacreg.data import is_available
from jacreg.reproduce.timing import read_from_scratch


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("reproduce")
    out, zoo = root / "out", root / "zoo"
    zoo.mkdir()
    summary = root / "summary.json"
    common = ["--quick", "--out", str(out), "--zoo-dir", str(zoo), "--samples", "20", "--cell-samples", "1",
              "--device", "cpu"]
    assert main(["reproduce", "--zoo", *common]) == 0  # the zoo from scratch, then the rest reusing it
    code = main(["reproduce", "--seeds", "2", *common, "--json", str(summary)])
    assert code == 0
    return out, zoo, json.loads(summary.read_text())


def _model(summary: dict, name: str) -> str:
    """The path of the seed-0 model file ``name`` (e.g. ``lenet-jr.safetensors``)."""
    return next(m for m in summary["models"] if Path(m).name == name and "seed0" in m)


FASHION_HERE = is_available("fashion-mnist", "test")


def test_quick_writes_every_output(quick_run) -> None:
    out, zoo, summary = quick_run
    names = ("table1.csv", "table1.md", "fig2.png", "fig2.csv", "fig3.png", "fig3.csv", "cells.csv",
             "cells.md", "fig1_random.png", "fig_s2_adversarial.png", "report.md", "claims.csv", "claims.md",
             "iterations.csv", "iterations.md")
    for name in names + (("fig3_fashion.png",) if FASHION_HERE else ()):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("fig2.png", "fig3.png", "fig1_random.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # quick models never land in the zoo folder
    assert not list(zoo.glob("*.safetensors"))
    names = {Path(m).name for m in summary["models"]}
    studies = {k for k, s in reproduce.SETTINGS.items() if s.role == "study"}
    assert {f"lenet-{k}.safetensors" for k in set(reproduce.SETTINGS) - studies} <= names
    assert {n.removeprefix("lenet-").removesuffix(".safetensors") for n in names} & studies == {
        "fgsm-at-0.1", "jr-0.03"}  # --quick: one study of each kind
    assert ({"lenet-none-fashion.safetensors", "lenet-jr-fashion.safetensors"} <= names) == FASHION_HERE
    if not FASHION_HERE:  # never a failure: the summary says how to get the data
        assert "dataset-fashion-mnist" in summary["fashion_note"]


def test_table1_rows_and_columns(quick_run) -> None:
    out, _, _ = quick_run
    rows = _rows(out / "table1.csv")
    fashion = [f"lenet-{k}-fashion" for k in reproduce.FASHION_KEYS] if FASHION_HERE else []
    assert [r["model"] for r in rows] == [f"lenet-{k}" for k in reproduce.TABLE1] + fashion
    assert all(r["seeds"] == "2" and r["accuracy_std"] != "" for r in rows)  # error bars over the seeds
    for r in rows:
        acc, jn = float(r["accuracy"]), float(r["jacobian_norm"])
        assert 0.0 <= acc <= 1.0 and jn > 0 and r["test_samples"] == "20"
        key = r["model"].removeprefix("lenet-")
        if key.endswith("-fashion"):  # the paper has no Fashion-MNIST row: nothing beside it
            assert r["paper_accuracy"] == r["paper_jacobian_norm"] == ""
            continue
        assert float(r["paper_accuracy"]) == reproduce.PAPER_TABLE1[key][0]
        assert float(r["paper_jacobian_norm"]) == reproduce.PAPER_TABLE1[key][1]
    md = (out / "table1.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per regularizer and dataset
    assert "32.9" in md and "mnist-5k" in md


def test_fig2_fig3_and_cells_tables(quick_run) -> None:
    out, _, _ = quick_run
    fig2 = _rows(out / "fig2.csv")
    assert {r["estimator"] for r in fig2} == {label for _, label in reproduce.FIG2}
    assert all(r["epoch"] == "1" for r in fig2)
    fig3 = _rows(out / "fig3.csv")
    assert {r["attack"] for r in fig3} == {"noise", "fgsm", "pgd"}
    assert {r["model"] for r in fig3} == {f"lenet-{k}" for k, _ in reproduce.FIG3}
    for attack in ("fgsm", "pgd"):
        for key, _ in reproduce.FIG3:
            acc = [float(r["accuracy"]) for r in fig3
                   if r["attack"] == attack and r["model"] == f"lenet-{key}"]
            assert acc == sorted(acc, reverse=True), (attack, key)  # never rises with the budget
    cells = _rows(out / "cells.csv")
    assert [c["model"] for c in cells] == [f"lenet-{k}" for k in reproduce.ZOO]
    assert all(float(c["adversarial_radius_median"]) > 0 for c in cells)
    claims = _rows(out / "claims.csv")
    assert [c["model"] for c in claims] == [f"lenet-{k}" for k in reproduce.CLAIMS
                                            if k in ("none", "l2", "dropout", "jr", "fgsm-at", "jr-fgsm-at",
                                                     "fgsm-at-0.1", "jr-0.03")]
    by_model = {c["model"]: c for c in claims}
    assert by_model["lenet-jr"]["seeds"] == "2" and by_model["lenet-jr"]["jacobian_norm_std"] != ""
    study = by_model["lenet-jr-0.03"]
    assert study["seeds"] == "1" and study["jacobian_norm_std"] == ""
    iterations = _rows(out / "iterations.csv")
    assert [(r["setting"], r["epochs"]) for r in iterations] == [("none", "1"), ("none", "2"), ("none", "3")]


def test_cards_and_report(quick_run) -> None:
    out, _, summary = quick_run
    card = read_metadata(_model(summary, "lenet-jr.safetensors"))
    assert card["config"]["jr"] == 0.01 and card["command"].startswith("python -m jacreg train")
    m = card["metrics"]
    assert m["evaluation"]["samples"] == 20 and "pgd_accuracy_32_255" in m
    assert m["cells"]["samples"] == 1
    report = (out / "report.md").read_text()
    assert "mnist-5k" in report and "## Table 1" in report and "fig3.png" in report
    if not (out / "table2.md").is_file():  # offline: Table 2 is left out and the report says why
        assert "Left out" in report and "usps" in report


def test_zoo_mode_reuses_models_and_writes_readme(quick_run) -> None:
    out, zoo, summary = quick_run
    path = Path(_model(summary, "lenet-none.safetensors"))
    before = os.stat(path).st_mtime_ns
    code = main(["reproduce", "--quick", "--zoo", "--out", str(out), "--zoo-dir", str(zoo), "--samples", "20",
                 "--cell-samples", "1", "--device", "cpu"])
    assert code == 0
    assert os.stat(path).st_mtime_ns == before  # same config and evaluation: nothing retrained or re-saved
    text = (zoo / "README.md").read_text()
    # the first --zoo invocation trained every model: its time is kept, and this one's is added beside it
    scratch = read_from_scratch(zoo)
    zoo_models = len(reproduce.ZOO) + (len(reproduce.FASHION_KEYS) if FASHION_HERE else 0)
    assert scratch is not None and scratch.models == zoo_models and scratch.seconds > 0
    assert f"took **{scratch.seconds / 60:.1f} minutes** for {zoo_models} models" in text
    assert f"(0 of {zoo_models} models trained in it" in text
    for key in reproduce.ZOO:
        assert f"lenet-{key}.safetensors" in text
    assert "python -m jacreg train" in text
    # the dashboard's first view lies beside the plain and JR models it names, and reads back valid
    folder = path.parent
    view = catalog.first_view(folder)
    assert view is not None, (folder / catalog.FIRST_VIEW_FILE).read_text()
    assert view["models"] == ["lenet-none", "lenet-jr"] and view["plane"] == "adversarial"
    assert 0 <= view["sample"] < 10 and view["extent"] > 0 and view["dataset"] == "mnist-5k"


def test_config_matching(tmp_path) -> None:
    opts = reproduce.Options(quick=True, out=str(tmp_path))
    config = reproduce.train_config(reproduce.SETTINGS["jr"], opts)
    card = {"config": config.to_dict(), "history": [{"epoch": 1}]}
    assert reproduce.config_matches(card, config)
    assert not reproduce.config_matches({**card, "history": []}, config)
    assert not reproduce.config_matches({**card, "config": {**config.to_dict(), "jr": 0.02}}, config)
    assert reproduce.train_config(reproduce.SETTINGS["fgsm-at"], opts).adv_eps == pytest.approx(32 / 255)
