"""The home view: explains the project, lists the models, and says what to do when there are none."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def test_home_lists_the_zoo(zoo_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value.startswith("jacreg")
    table = at.dataframe[0].value
    assert set(table["model"]) == {"lenet-none", "lenet-jr"}
    assert set(table["source"]) == {"zoo"}


def test_home_without_models_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("JACREG_MODELS_DIR", str(tmp_path / "empty-models"))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(tmp_path / "empty-runs"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("No models yet" in i.value for i in at.info)
