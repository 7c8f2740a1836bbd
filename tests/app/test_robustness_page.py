"""The Robustness page driven by AppTest: a good upload joins the zoo model and a tiny run completes;
a malicious upload is refused with st.error, runs nothing, and the page keeps working."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from streamlit.testing.v1 import AppTest
from torch import nn

from jacreg.checkpoints import save_checkpoint
from tests.helpers import quick_lenet, text

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGE = "views/robustness.py"


@pytest.fixture(scope="module")
def nets() -> tuple[nn.Module, nn.Module]:
    return quick_lenet(0, samples=2000, shuffle=False), quick_lenet(1, samples=2000, shuffle=False)


@pytest.fixture()
def zoo(nets, tmp_path, monkeypatch) -> Path:
    """A private models folder with one checkpoint, and an empty runs folder, set as the app's."""
    models, runs = tmp_path / "models", tmp_path / "runs"
    runs.mkdir()
    save_checkpoint(nets[0], {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "lenet-zoo"},
                    models / "lenet-zoo.safetensors")
    monkeypatch.setenv("JACREG_MODELS_DIR", str(models))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(runs))
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    return models


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _wait_for_run(at: AppTest, timeout: float = 60.0) -> None:
    """Poll like the page's fragment does until the background run has finished and been collected."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        runner = at.session_state["rob_runner"]
        if runner.snapshot()["done"]:
            at.run()  # collects the results (and reruns the whole page)
            at.run()
            return
        time.sleep(0.2)
        at.run()
    raise AssertionError("the robustness run did not finish")


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


class _Payload:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_page_renders_with_the_zoo(zoo):
    at = _page()
    assert at.title[0].value == "Robustness"
    assert any("lenet-zoo" in text(m) for m in at.markdown)
    assert not at.error
    assert not _button(at, "Run").disabled and _button(at, "Stop").disabled


def test_good_upload_and_a_tiny_run(zoo, nets, tmp_path):
    at = _page()
    blob = tmp_path / "mine.safetensors"
    card = {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "mine"}
    save_checkpoint(nets[1], card, blob)
    at.file_uploader(key="rob_upload").set_value(("mine.safetensors", blob.read_bytes(),
                                                  "application/octet-stream")).run()
    assert not at.exception and not at.error
    attacking = next(text(m) for m in at.markdown if text(m).startswith("Attacking:"))
    assert "lenet-zoo" in attacking and "mine" in attacking

    at.multiselect(key="rob_attacks").set_value(["fgsm", "pgd"]).run()
    at.text_input(key="rob_eps_linf").set_value("0.1,0").run()  # unsorted: sorted with a note
    assert any("sorted" in c.value for c in at.caption)
    at.number_input(key="rob_samples").set_value(20).run()
    at.number_input(key="rob_batch").set_value(10).run()
    _button(at, "Run").click().run()
    assert not at.exception
    _wait_for_run(at)
    assert not at.exception and not at.error
    results = at.session_state["rob_results"]
    assert sorted((r["model"], r["attack"]) for r in results) == [
        ("lenet-zoo (zoo)", "fgsm"), ("lenet-zoo (zoo)", "pgd"),
        ("mine (upload)", "fgsm"), ("mine (upload)", "pgd")]
    for r in results:
        assert r["samples"] == 20 and r["epsilons"] == [0.0, 0.1]
        assert r["accuracy"][1] <= r["accuracy"][0]
    assert len(at.session_state["rob_probes"]) == 2
    assert len(at.get("plotly_chart")) == 2  # one chart per attack, a line per model
    table = at.dataframe[0].value
    assert len(table) == 4
    assert {b.label for b in at.get("download_button")} >= {"CSV", "PNG"}
    assert any("Sanity" in m.value for m in at.markdown)  # the badge
    # results survive reruns
    at.run()
    assert len(at.session_state["rob_results"]) == 4 and len(at.get("plotly_chart")) == 2


def test_stop_keeps_the_page_working(zoo):
    at = _page()
    at.multiselect(key="rob_attacks").set_value(["pgd"]).run()
    at.number_input(key="rob_samples").set_value(200).run()
    at.number_input(key="rob_batch").set_value(10).run()
    _button(at, "Run").click().run()
    assert not _button(at, "Stop").disabled and _button(at, "Run").disabled
    assert at.get("progress")  # the live panel polls the run
    _button(at, "Stop").click().run()
    _wait_for_run(at, timeout=30)
    assert not at.exception
    assert at.session_state["rob_runner"].snapshot()["stopped"]
    assert not _button(at, "Run").disabled


def test_malicious_upload_is_refused_and_never_runs(zoo, nets, tmp_path):
    at = _page()
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"state_dict": nets[0].state_dict(), "evil": _Payload(marker)}, buf)
    evil = ("evil.pt", buf.getvalue(), "application/octet-stream")
    at.file_uploader(key="rob_upload").set_value(evil).run()
    assert not at.exception
    assert len(at.error) == 1 and "evil.pt" in text(at.error[0])
    assert not marker.exists()
    attacking = next(text(m) for m in at.markdown if text(m).startswith("Attacking:"))
    assert "evil" not in attacking and "lenet-zoo" in attacking
    # the page still works: a tiny run on the zoo model completes
    at.multiselect(key="rob_attacks").set_value(["fgsm"]).run()
    at.number_input(key="rob_samples").set_value(10).run()
    at.checkbox(key="rob_probe").uncheck().run()
    _button(at, "Run").click().run()
    _wait_for_run(at)
    assert not at.exception and not marker.exists()
    assert [r["model"] for r in at.session_state["rob_results"]] == ["lenet-zoo (zoo)"]


def test_file_without_a_card_is_recognised_or_opens_the_chooser(zoo, nets):
    at = _page()
    bare = st_save({k: v.contiguous() for k, v in nets[1].state_dict().items()})  # weights, no card
    at.file_uploader(key="rob_upload").set_value(("bare.safetensors", bare, "application/octet-stream")).run()
    assert not at.exception and not at.error
    assert any("bare.safetensors has no model card" in text(c) and "lenet" in text(c) for c in at.caption)
    attacking = next(text(m) for m in at.markdown if text(m).startswith("Attacking:"))
    assert "bare" in attacking
    foreign = st_save({"encoder.weight": torch.zeros(16, 8)})
    upload = ("foreign.safetensors", foreign, "application/octet-stream")
    at.file_uploader(key="rob_upload").set_value(upload).run()
    assert not at.exception and len(at.error) == 1 and "foreign.safetensors" in text(at.error[0])
    assert "choose the architecture" in text(at.error[0])
    assert at.session_state["rob_needs_arch"]  # the chooser is open
    at.selectbox(key="rob_up_arch").set_value("lenet").run()
    assert not at.exception
