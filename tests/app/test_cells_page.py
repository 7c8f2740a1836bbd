"""The Cells page driven by AppTest: one and three models, URL state, the probe, statistics, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from torch import nn

from jacreg import architectures
from jacreg.checkpoints import save_checkpoint
from tests.helpers import quick_lenet

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGE = "views/cells.py"
NAMES = ("lenet-a", "lenet-b", "lenet-c")


@pytest.fixture(scope="module")
def nets() -> list[nn.Module]:
    return [quick_lenet(s, samples=1000, shuffle=False) for s in range(len(NAMES))]


@pytest.fixture()
def zoo(nets, tmp_path, monkeypatch) -> Path:
    """A private models folder with three MNIST LeNets and one CIFAR-shaped model."""
    models, runs = tmp_path / "models", tmp_path / "runs"
    runs.mkdir()
    for name, net in zip(NAMES, nets, strict=True):
        save_checkpoint(net, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": name},
                        models / f"{name}.safetensors")
    cifar = architectures.create("lenet", input_shape=(3, 32, 32))
    save_checkpoint(cifar, {"arch": "lenet", "dataset": "cifar10", "num_classes": 10, "name": "zz-cifar",
                            "input_shape": [3, 32, 32]}, models / "zz-cifar.safetensors")
    monkeypatch.setenv("JACREG_MODELS_DIR", str(models))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(runs))
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    return models


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    params.setdefault("res", "21")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def _query(at: AppTest) -> dict[str, str]:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def _table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_page_renders_and_computes_one_cross_section(zoo):
    at = _page(models="zoo:lenet-a")
    assert at.title[0].value == "Decision cells"
    assert not at.error
    fig = _figure(at)
    assert len(fig["layout"]["images"]) == 1
    table = _table(at, "in-plane radius")
    assert list(table["model"]) == ["lenet-a"] and len(table) == 1
    assert float(table["linearised radius"][0]) > 0                  # the dashed circle's number, beside it
    assert any(s["line"].get("dash") == "dash" for s in fig["layout"]["shapes"])
    assert {b.label for b in at.get("download_button")} >= {"NPZ", "PNG"}
    assert _query(at)["models"] == "zoo:lenet-a" and _query(at)["res"] == "21"


def test_three_models_side_by_side_on_an_adversarial_plane(zoo):
    at = _page(models="zoo:lenet-a,zoo:lenet-b,zoo:lenet-c", plane="adversarial", extent="2", sample="4")
    assert not at.error
    fig = _figure(at)
    assert len(fig["layout"]["images"]) == 3
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert [t.split("<br>")[0] for t in titles[:3]] == list(NAMES)
    table = _table(at, "in-plane radius")
    assert list(table["model"]) == list(NAMES)
    assert at.session_state["cells_a"] == "zoo:lenet-a" and at.session_state["cells_b"] == "zoo:lenet-b"
    # the sample's true label and every model's prediction
    preds = _table(at, "correct")
    assert list(preds["model"]) == list(NAMES)


def test_the_view_lives_in_the_url(zoo):
    at = _page(models="zoo:lenet-b", sample="7", plane="random", seed="3", extent="4.5")
    assert at.session_state["cells_sample"] == 7 and at.session_state["cells_seed"] == 3
    assert at.session_state["cells_extent"] == 4.5
    at.number_input(key="cells_seed").set_value(11).run()
    qp = _query(at)
    assert qp["seed"] == "11" and qp["sample"] == "7" and qp["plane"] == "random" and qp["extent"] == "4.5"
    assert qp["models"] == "zoo:lenet-b" and qp["dataset"] == "mnist-5k"
    # another page and back: the view is kept
    at.switch_page("views/home.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    assert at.session_state["cells_seed"] == 11 and at.session_state["cells_extent"] == 4.5
    assert _query(at)["seed"] == "11"


def test_probe_shows_the_image_and_predictions_at_a_point(zoo):
    at = _page(models="zoo:lenet-a,zoo:lenet-b")
    at.number_input(key="cells_pa").set_value(3.0).run()
    at.number_input(key="cells_pb").set_value(-1.0).run()
    assert not at.exception and not at.error
    probe = at.dataframe[-1].value
    assert list(probe["model"]) == ["lenet-a", "lenet-b"] and set(probe.columns) >= {"prediction", "p"}
    captions = [img.proto.imgs[0].caption for img in at.get("image") if img.proto.imgs]
    assert any(c.startswith("(u, v) = (3.000, -1.000)") for c in captions), captions


def test_samples_plane_and_statistics(zoo):
    at = _page(models="zoo:lenet-a", plane="samples", through="5,9", extent="12")
    assert not at.error
    fig = _figure(at)
    assert any(t.get("mode") == "markers+text" for t in fig["data"])  # the other two samples are marked
    at.number_input(key="cells_stats_n").set_value(2).run()
    at.number_input(key="cells_stats_res").set_value(11).run()
    next(b for b in at.button if b.label == "Compute statistics").click().run()
    assert not at.exception and not at.error
    stats = _table(at, "radius mean")
    assert sorted(stats["planes"]) == ["adversarial", "random"] and set(stats["samples"]) == {2}


@pytest.mark.parametrize("params, bad", [
    ({"extent": "-1"}, "extent"),
    ({"extent": "0"}, "extent"),
    ({"extent": "1e308"}, "extent"),
    ({"extent": "nan"}, "extent"),
    ({"res": "5"}, "res"),
    ({"res": "1500"}, "res"),
    ({"seed": "99999999999999999999999"}, "seed"),
    ({"seed": "-3"}, "seed"),
    ({"sample": "-1"}, "sample"),
    ({"plane": "![x](http://host/p.png)"}, "plane"),
])
def test_bad_link_values_are_ignored_with_a_warning(zoo, params, bad):
    """A shared link with a value out of range: a warning names it, the page draws with the default."""
    params.setdefault("models", "zoo:lenet-a")
    at = _page(**params)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(bad in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.get("plotly_chart")


@pytest.mark.parametrize("params, message", [
    ({"sample": "5000"}, "does not exist"),
])
def test_a_sample_beyond_the_test_set_falls_back_to_the_first(zoo, params, message):
    params.setdefault("models", "zoo:lenet-a")
    at = _page(**params)
    assert not at.exception and not at.error
    assert any(message in w.value for w in at.warning)
    assert at.number_input(key="cells_sample").value == 0


@pytest.mark.parametrize("params, message", [
    ({"plane": "samples", "through": "3,3"}, "degenerate"),
    ({"plane": "samples", "through": "1,x"}, "two indices"),
    ({"models": "zoo:lenet-a,zoo:zz-cifar"}, "different input shapes"),
])
def test_bad_input_shows_an_error(zoo, params, message):
    params.setdefault("models", "zoo:lenet-a")
    at = _page(**params)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]
    assert not at.get("plotly_chart")
