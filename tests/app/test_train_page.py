"""The Train page: render, start a tiny run from the form, watch it finish, open it elsewhere."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from jacreg import jobs
from jacreg.catalog import list_snapshots
from tests.helpers import text

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("JACREG_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/train.py")
    at.run()
    assert not at.exception
    yield at
    for job in jobs.list_jobs():  # a failed test leaves no training process behind
        if job.is_active():
            jobs.stop_job(job.id, grace=2)


def _fill_tiny(at: AppTest) -> None:
    at.selectbox(key="train_preset").set_value("Jacobian (JR)").run()
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_batch_size").set_value(50)
    at.number_input(key="train_limit_batches").set_value(2)
    at.number_input(key="train_eval_samples").set_value(20)
    at.selectbox(key="train_device").set_value("cpu")
    at.text_input(key="train_name").set_value("page-jr")


def test_render_and_presets(app: AppTest) -> None:
    assert "Train" in app.title[0].value
    assert any("No runs yet" in i.value for i in app.info)
    app.selectbox(key="train_preset").set_value("all combined").run()
    assert app.number_input(key="train_l2").value == pytest.approx(5e-4)
    assert app.number_input(key="train_dropout").value == pytest.approx(0.5)
    assert app.number_input(key="train_jr").value == pytest.approx(0.01)
    app.selectbox(key="train_preset").set_value("none").run()
    assert app.number_input(key="train_jr").value == 0.0
    assert not app.exception


def test_start_watch_finish_and_open_on_cells(app: AppTest, tmp_path: Path) -> None:
    _fill_tiny(app)
    app.form_submit_button[0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    started = jobs.list_jobs()
    assert len(started) == 1 and started[0].config["jr"] == 0.01 and started[0].config["epochs"] == 2
    assert any("page-jr" in text(m) for m in app.markdown)
    status = started[0].wait(120)
    assert status["state"] == "finished", started[0].log_tail()
    assert started[0].config["snapshot_every"] == 1                 # on by default for LeNet'
    assert [s.epoch for s in list_snapshots(started[0].checkpoint_path)] == [1, 2]
    app.run()
    assert any("Finished 2 epoch(s)" in s.value for s in app.success)
    assert len(app.get("plotly_chart")) >= 1
    opener = next(b for b in app.button if b.label == "Open on Cells")
    assert not opener.disabled
    opener.click().run()
    assert app.session_state["selected_models"] == [f"run:{started[0].id}"]
    assert not app.exception
    assert app.title[0].value == "Decision cells"


def test_snapshots_are_on_by_default_for_small_models(app: AppTest) -> None:
    assert app.number_input(key="train_snapshot_every").value == 1
    app.selectbox(key="train_arch").set_value("resnet18").run()
    assert app.number_input(key="train_snapshot_every").value == 0      # 11.7 M parameters: off
    app.selectbox(key="train_arch").set_value("lenet").run()
    assert app.number_input(key="train_snapshot_every").value == 1
    assert not app.exception


def test_invalid_config_is_refused_with_the_reason(app: AppTest) -> None:
    app.selectbox(key="train_adv").set_value("fgsm")
    app.number_input(key="train_adv_eps").set_value(0.0)
    app.form_submit_button[0].click().run()
    assert any("--adv-eps" in text(e) for e in app.error)
    assert jobs.list_jobs() == []


def test_killed_run_shows_failed_then_resume_and_stop(app: AppTest) -> None:
    _fill_tiny(app)
    app.number_input(key="train_epochs").set_value(40)
    app.number_input(key="train_limit_batches").set_value(1)
    app.form_submit_button[0].click().run()
    job = jobs.list_jobs()[0]
    deadline = time.monotonic() + 120
    while not any(e["event"] == "checkpoint" for e in job.events()):
        assert time.monotonic() < deadline, job.log_tail()
        time.sleep(0.02)
    os.kill(job.raw_status()["pid"], signal.SIGKILL)
    job.wait(15)
    app.run()
    assert any("killed by SIGKILL" in text(e) for e in app.error), [e.value for e in app.error]
    next(b for b in app.button if b.label == "Resume").click().run()
    assert not app.exception
    status = job.status()
    assert status["state"] == "running" and status["attempt"] == 2
    next(b for b in app.button if b.label == "Stop").click().run()
    assert not app.exception
    assert job.wait(30)["state"] == "stopped"
    app.run()
    assert any("Stopped after" in w.value for w in app.warning)
    assert next(b for b in app.button if b.label == "Resume")  # can continue again
