"""The pages with jobs on Ray (a private head on 127.0.0.1): the sidebar checks the address, the
Train page runs a job there with live curves, Stop keeps its last epoch and Resume stays on Ray,
the Robustness page computes its curves there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from jacreg import architectures, jobs
from jacreg.checkpoints import load_checkpoint, save_checkpoint
from jacreg.jobs import remote
from tests.ray_head import RayHead, ray_head

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head() as h:
        yield h
        remote.disconnect()  # the checks connected this process: leave before the head goes


@pytest.fixture()
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    models = tmp_path / "models"
    torch.manual_seed(0)
    save_checkpoint(architectures.create("lenet").eval(),
                    {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "lenet-zoo"},
                    models / "lenet-zoo.safetensors")
    monkeypatch.setenv("JACREG_MODELS_DIR", str(models))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield tmp_path
    for job in jobs.list_jobs():  # a failed test leaves no training process behind
        if job.is_active():
            jobs.stop_job(job.id, grace=2)


def _on_ray(page: str, address: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(page)
    at.run()
    at.selectbox(key="backend").set_value("Ray").run()
    at.text_input(key="ray_address").set_value(address).run()
    assert not at.exception, at.exception
    return at


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sidebar_checks_the_address(head: RayHead, folders: Path) -> None:
    at = _on_ray("views/home.py", "127.0.0.1:9")
    at.button(key="ray_check_button").click().run()
    assert any("cannot reach the Ray head at 127.0.0.1:9" in e.value for e in at.sidebar.error)
    at.text_input(key="ray_address").set_value(head.address).run()
    at.button(key="ray_check_button").click().run()
    assert any(f"at {head.address}: 1 node(s), 1 CPUs, no GPU" in s.value for s in at.sidebar.success), \
        [s.value for s in at.sidebar.success]
    assert not at.sidebar.error


def test_train_page_runs_on_ray_with_live_curves_stop_and_resume(head: RayHead, folders: Path) -> None:
    at = _on_ray("views/train.py", head.address)
    assert at.selectbox(key="train_device").options == ["auto", "cpu"]
    at.selectbox(key="train_preset").set_value("Jacobian (JR)").run()
    at.number_input(key="train_epochs").set_value(400)  # never reached: Stop lands mid-run, even late
    at.number_input(key="train_batch_size").set_value(50)
    at.number_input(key="train_limit_batches").set_value(1)
    at.number_input(key="train_eval_samples").set_value(10)
    at.text_input(key="train_name").set_value("ray-jr")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = jobs.list_jobs()[0]
    assert job.raw_status()["argv"][-4:] == ["--backend", "ray", "--ray-address", head.address]
    _wait(lambda: any(e["event"] == "checkpoint" for e in job.events()) or not job.is_active(), 120,
          "the first epoch on Ray")
    at.run()  # what the page's polling fragment shows meanwhile
    assert job.is_active(), job.log_tail()
    assert len(at.get("plotly_chart")) == 1
    assert any("on Ray at" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Stop").click().run()
    assert job.wait(30)["state"] == "stopped"
    at.run()
    assert any("Stopped after" in w.value for w in at.warning)
    _, card = load_checkpoint(job.checkpoint_path)
    assert card["backend"]["address"] == head.address and card["metrics"]["epoch"] >= 1
    assert card["metrics"]["epoch"] < 400, card["metrics"]
    next(b for b in at.button if b.label == "Resume").click().run()
    assert job.raw_status()["argv"][-5:] == ["--resume", "--backend", "ray", "--ray-address", head.address]
    jobs.stop_job(job.id, grace=5)


def test_robustness_page_computes_on_ray(head: RayHead, folders: Path) -> None:
    at = _on_ray("views/robustness.py", head.address)
    at.multiselect(key="rob_attacks").set_value(["fgsm"])
    at.number_input(key="rob_samples").set_value(20)
    at.checkbox(key="rob_probe").uncheck()
    at.run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runner = at.session_state["rob_runner"]
    assert isinstance(runner, remote.RayCurveRunner)
    runner.join(120)
    assert runner.snapshot()["done"] and not runner.snapshot()["errors"], runner.snapshot()["errors"]
    at.run()
    assert len(at.get("plotly_chart")) == 1
    assert at.session_state["rob_results"][0]["samples"] == 20
