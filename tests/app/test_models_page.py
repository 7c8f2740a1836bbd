"""The Models page: cards of zoo models and runs, side-by-side comparison, download, delete a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture()
def run_dir(zoo_dir: Path) -> Path:
    """A finished run (as the CLI leaves it) next to the two zoo models."""
    import os

    d = Path(os.environ["JACREG_RUNS_DIR"]) / "20250101-000000-abcdef"
    d.mkdir()
    shutil.copy(zoo_dir / "lenet-jr.safetensors", d / "model.safetensors")
    return d


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/models.py")
    at.run()
    assert not at.exception
    return at


def test_cards_compare_and_download(zoo_dir: Path) -> None:
    from jacreg import jobs

    jobs.record_robustness(zoo_dir / "lenet-jr.safetensors",
                           {"attack": "fgsm", "epsilons": [0.0, 0.1], "accuracy": [0.9, 0.4], "samples": 20})
    at = _app()
    assert "Models" in at.title[0].value
    table = at.dataframe[0].value
    assert list(table["model"]) == ["lenet-jr", "lenet-none"]
    assert table["clean accuracy"].between(0.3, 1.0).all()
    ms = at.multiselect(key="models_compare")
    ms.set_value(["zoo:lenet-jr", "zoo:lenet-none"]).run()
    assert not at.exception
    assert any(s.value == "Side by side" for s in at.subheader)
    assert len(at.download_button) == 2
    # zoo models cannot be deleted from the page
    assert not [b for b in at.button if b.label == "Delete for good"]
    regs = [m.value for m in at.metric if m.label == "Regularizers"]
    assert sorted(regs) == ["jr", "none"]
    charts = [c.key for c in at.get("plotly_chart")]
    assert {"compare_curves", "curves_zoo:lenet-jr", "curves_zoo:lenet-none"} <= set(charts)
    rob = [c for c in charts if c.startswith("rob_")]
    assert rob and all(c.startswith("rob_zoo:lenet-jr_") for c in rob)  # stored results only


def test_delete_a_trained_run(run_dir: Path) -> None:
    at = _app()
    key = f"run:{run_dir.name}"
    at.multiselect(key="models_compare").set_value([key]).run()
    delete = [b for b in at.button if b.label == "Delete for good"]
    assert len(delete) == 1
    delete[0].click().run()
    assert not at.exception
    assert not run_dir.exists()
    assert key not in [str(k) for k in at.multiselect(key="models_compare").options]
