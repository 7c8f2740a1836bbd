"""Hostile inputs on the pages: names users control are shown as text (a Markdown image in a name
makes no browser fetch anything), hostile uploads end in one st.error, and nothing raises."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from safetensors.torch import save as st_save
from streamlit.testing.v1 import AppTest

from jacreg import architectures
from jacreg.checkpoints import save_checkpoint
from jacreg.fileio import atomic_write_json
from tests.helpers import text

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
RUN = "20260101-000000-abcdef"
EVIL = "![x](http://host.invalid/p.png) **bold** [link](http://host.invalid) :red[alarm] $x$"


@pytest.fixture()
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    models, runs = tmp_path / "models", tmp_path / "runs"
    net = architectures.create("lenet").eval()
    run = runs / RUN
    save_checkpoint(net, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": EVIL},
                    run / "model.safetensors")
    save_checkpoint(net, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10},
                    models / "plain.safetensors")
    atomic_write_json(run / "config.json", {"kind": "train", "name": EVIL, "config": {"arch": "lenet"}})
    atomic_write_json(run / "status.json", {"state": "failed", "message": EVIL, "ended": time.time()})
    (run / "events.jsonl").write_text(json.dumps({"event": "error", "message": EVIL}) + "\n")
    monkeypatch.setenv("JACREG_MODELS_DIR", str(models))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(runs))
    return models, runs


def _page(view: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(view)
    at.run()
    return at


def _markdown_sources(at: AppTest) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "subheader", "title"):
        out += [str(e.value) for e in at.get(kind)]
    return out


@pytest.mark.parametrize("view", ["views/robustness.py", "views/models.py", "views/train.py",
                                  "views/cells.py", "views/home.py"])
def test_names_are_rendered_as_text(folders, view):
    at = _page(view, models=f"run:{RUN}")
    assert not at.exception, at.exception
    sources = _markdown_sources(at)
    shown = [s for s in sources if "host.invalid" in text(s)]
    if view in ("views/robustness.py", "views/models.py", "views/train.py"):
        assert shown, f"{view} does not show the name at all"
    # shown as typed, and nowhere as live Markdown (an image, a link, bold, a colour, LaTeX)
    assert all(EVIL in text(s) for s in shown), shown
    for piece in ("![x](", "](http", "**bold**", ":red[", "$x$"):
        assert not any(piece in s for s in sources), piece


@pytest.mark.parametrize("card, phrase", [
    ({"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "input_shape": [1, 6000, 6000]},
     "too large"),
    ({"arch": "lenet", "num_classes": "1e30"}, "num_classes"),
    ("[" * 50_000, "not valid JSON"),
])
def test_hostile_uploads_end_in_one_error(folders, card, phrase):
    at = _page("views/robustness.py")
    raw = card if isinstance(card, str) else json.dumps(card)
    blob = st_save({"w": architectures.create("lenet").state_dict()["body.features.0.weight"]},
                   metadata={"jacreg": raw})
    t0 = time.perf_counter()
    at.file_uploader(key="rob_upload").set_value(("x.safetensors", blob, "application/octet-stream")).run()
    assert time.perf_counter() - t0 < 30
    assert not at.exception
    assert len(at.error) == 1 and phrase in text(at.error[0])
