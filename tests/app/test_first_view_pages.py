"""The pages open on the zoo's first view (models/first_view.json), Table 1 on Home, the progressive map
for slow models and the "> R" radius, driven by AppTest on private folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from jacreg import architectures
from jacreg.checkpoints import save_checkpoint
from tests.helpers import text

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
CELLS = "views/cells.py"
VIEW = {"models": ["lenet-none", "lenet-jr"], "sample": 2, "plane": "adversarial", "extent": 1.5,
        "radii": {"lenet-none": 0.4, "lenet-jr": 0.9}, "dataset": "mnist-5k"}


def _open(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture()
def view_zoo(zoo_dir) -> Path:
    (zoo_dir / "first_view.json").write_text(json.dumps(VIEW), encoding="utf-8")
    return zoo_dir


def _captions(at: AppTest) -> list[str]:
    return [text(c) for c in at.caption]


def test_cells_page_opens_on_the_first_view(view_zoo):
    at = _open(CELLS)
    assert not at.error and not at.warning
    state = at.session_state
    assert state["selected_models"] == ["zoo:lenet-none", "zoo:lenet-jr"]
    assert (state["cells_sample"], state["cells_plane"], state["cells_extent"]) == (2, "adversarial", 1.5)
    assert (state["cells_a"], state["cells_b"]) == ("zoo:lenet-none", "zoo:lenet-jr")
    line = next(c for c in _captions(at) if c.startswith("lenet-none vs lenet-jr"))
    assert line.startswith("lenet-none vs lenet-jr on an adversarial plane through test digit 2: "
                           "the lenet-jr cell is")
    table = next(d.value for d in at.dataframe if "in-plane radius" in d.value.columns)
    r0, r1 = (float(r) for r in table["in-plane radius"])
    found = re.search(r"is (\d+\.\d) times (wider|narrower)", line)
    assert found is not None
    k = float(found.group(1))                                  # from the figure's circles
    assert k == pytest.approx(max(r1 / r0, r0 / r1), abs=0.051)
    # another sample: no longer the first view, no caption
    at.number_input(key="cells_sample").set_value(3).run()
    assert not any(c.startswith("lenet-none vs lenet-jr") for c in _captions(at))


def test_url_parameters_win_over_the_first_view(view_zoo):
    at = _open(CELLS, models="zoo:lenet-jr", sample="3", res="21")
    assert at.session_state["selected_models"] == ["zoo:lenet-jr"]
    assert at.session_state["cells_sample"] == 3 and at.session_state["cells_plane"] == "random"
    assert at.session_state["cells_extent"] == 5.0
    assert not any(c.startswith("lenet-none vs") for c in _captions(at))


def test_robustness_page_compares_the_first_views_models(view_zoo):
    at = _open("views/robustness.py")
    attacking = next(text(m) for m in at.markdown if text(m).startswith("Attacking"))
    assert attacking == "Attacking: **lenet-none (zoo)**, **lenet-jr (zoo)**"


@pytest.mark.parametrize("content", [
    b"{not json", json.dumps({**VIEW, "models": ["lenet-none", "lenet-gone"]}).encode(),
    json.dumps({**VIEW, "extent": -3}).encode(), b'{"extent": NaN}',
    json.dumps({**VIEW, "sample": 999_999}).encode(), json.dumps({**VIEW, "extent": 1e300}).encode(),
])
def test_a_hostile_first_view_never_breaks_a_page(zoo_dir, content):
    (zoo_dir / "first_view.json").write_bytes(content)
    for page in (None, CELLS, "views/robustness.py"):
        at = _open(page)
        assert not at.error
    state = at.session_state
    assert state["selected_models"] in (["zoo:lenet-jr"], ["zoo:lenet-none", "zoo:lenet-jr"])
    if state["selected_models"] == ["zoo:lenet-jr"]:     # refused: the first model, as without a file
        assert "first_view" not in state


def test_home_shows_table1_beside_the_paper(zoo_dir, tmp_path, monkeypatch):
    folder = tmp_path / "reproduction"
    folder.mkdir()
    monkeypatch.setenv("JACREG_REPRODUCTION_DIR", str(folder))
    (folder / "table1.csv").write_text(
        "regularizer,model,accuracy,accuracy_std,paper_accuracy,jacobian_norm,jacobian_norm_std,"
        "paper_jacobian_norm,seeds,test_samples\nnone,lenet-none,0.972,0.003,0.989,5.65,0.41,32.9,3,1000\n"
        "Jacobian (JR),lenet-jr,0.965,,0.99,1.59,,1.1,1,1000\n", encoding="utf-8")
    at = _open()
    assert "Table 1, reproduced" in [s.value for s in at.subheader]
    table = next(d.value for d in at.dataframe if "test accuracy" in d.value.columns)
    assert list(table["test accuracy"]) == ["97.2% ± 0.3", "96.5%"]
    assert list(table["paper: accuracy"]) == ["98.9%", "99.0%"]
    assert list(table["paper: ||J||_F"]) == ["32.9", "1.1"]
    assert list(table["mean ||J||_F"]) == ["5.65 ± 0.41", "1.59"]
    for bad in (b"\x00\xff garbage", b"a,b\n1,2\n"):
        (folder / "table1.csv").write_bytes(bad)
        at = _open()
        assert "Table 1, reproduced" not in [s.value for s in at.subheader]
    (folder / "table1.csv").unlink()
    assert "Table 1, reproduced" not in [s.value for s in _open().subheader]


def test_slow_models_get_a_coarse_preview_first(zoo_dir, monkeypatch):
    monkeypatch.setenv("JACREG_PREVIEW_SECONDS", "0")       # every map counts as slow
    at = _open(CELLS, models="zoo:lenet-none", res="41")
    assert not at.error
    assert len(at.get("plotly_chart")) == 1                   # the preview's placeholder was emptied
    grid = next(c for c in _captions(at) if c.startswith("41x41 grid"))
    assert "Shown first as a coarse 13x13 preview" in grid
    at.run()                                                   # computed in this session: no preview again
    assert not any("preview" in c for c in _captions(at))
    monkeypatch.setenv("JACREG_PREVIEW_SECONDS", "1e9")
    at = _open(CELLS, models="zoo:lenet-none", res="31")
    assert not any("preview" in c for c in _captions(at))


def test_a_radius_beyond_the_search_shows_what_was_searched(zoo_dir):
    flat = architectures.create("lenet")
    with torch.no_grad():
        for p in flat.parameters():
            p.zero_()                                          # constant logits: one class everywhere
    save_checkpoint(flat, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "flat"},
                    zoo_dir / "flat.safetensors")
    at = _open(CELLS, models="zoo:flat", res="21", extent="2")
    table = next(d.value for d in at.dataframe if "in-plane radius" in d.value.columns)
    shown = str(table["in-plane radius"][0])
    assert re.fullmatch(r"> \d+(\.\d+)?", shown), shown
    assert 2 <= float(shown[2:]) <= 8                          # beyond the window, up to 4 x extent
