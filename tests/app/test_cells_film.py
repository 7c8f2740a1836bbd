"""The Cells page's film (app/film.py) driven by AppTest: the zoo pair with snapshots plays, and a
zoo without snapshots says how to make them."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGE = "views/cells.py"


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    params.setdefault("res", "21")
    params.setdefault("extent", "3")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _chart(at: AppTest, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id).proto.spec)


def test_the_zoo_pair_plays_through_training(snapshot_zoo):
    at = _page(models="zoo:lenet-none")
    assert at.session_state["film_runs"] == ["zoo:lenet-none"]          # the selected model with snapshots
    at.multiselect(key="film_runs").set_value(["zoo:lenet-none", "zoo:lenet-jr"])
    at.number_input(key="film_res").set_value(21)
    at.run()
    assert not [c for c in at.get("plotly_chart") if "film_" in (c.proto.id or "")]   # not before asked
    next(b for b in at.button if b.label == "Make the film").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    film = _chart(at, "film_chart")
    assert [f["name"] for f in film["frames"]] == ["1", "2", "3"]          # an epoch slider and frames
    assert [s["label"] for s in film["layout"]["sliders"][0]["steps"]] == ["1", "2", "3"]
    assert film["layout"]["updatemenus"][0]["buttons"][0]["label"].endswith("Play")
    assert [a["text"] for a in film["layout"]["annotations"][:2]] == ["lenet-none", "lenet-jr"]
    curve = _chart(at, "film_radius")
    assert [t["name"] for t in curve["data"]] == ["lenet-none: measured", "lenet-none: linearised",
                                                  "lenet-jr: measured", "lenet-jr: linearised"]
    table = next(d.value for d in at.dataframe if "linearised" in d.value.columns)
    assert list(table["run"]) == ["lenet-none"] * 3 + ["lenet-jr"] * 3
    assert list(table["epoch"]) == [1, 2, 3] * 2
    labels = {b.label for b in at.get("download_button")}
    assert {"HTML (plays offline)", "GIF", "Radii (CSV)"} <= labels
    # another sample: the film of the old one is not shown; it is asked for again
    at.number_input(key="cells_sample").set_value(4).run()
    assert not [c for c in at.get("plotly_chart") if "film_chart" in (c.proto.id or "")]
    assert any("press **Make the film**" in c.value for c in at.caption)


def test_no_snapshots_says_how_to_make_them(zoo_dir):
    at = _page(models="zoo:lenet-none")
    info = [i.value for i in at.info if "snapshots" in i.value]
    assert info and "--snapshot-every 1" in info[0] and "models/<name>.epochs/" in info[0]
    assert not at.error
