"""The Jacobian page: render, compute norms per class, projection spread and timing for a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def test_empty_state(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JACREG_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("JACREG_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/jacobian.py")
    at.run()
    assert not at.exception
    assert any("No models yet" in i.value for i in at.info)


def test_compute_for_a_zoo_model(zoo_dir: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/jacobian.py")
    at.run()
    assert not at.exception
    at.selectbox(key="jac_model").set_value("zoo:lenet-jr")
    inputs = {n.label: n for n in at.number_input}
    inputs["Test samples"].set_value(40)
    inputs["Draws per n_proj"].set_value(4)
    inputs["Single samples to estimate"].set_value(2)
    inputs["Timing batch size"].set_value(10)
    inputs["Timed steps"].set_value(1)
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Mean ‖J‖_F"]) > 0
    per_class, spread, timing = (d.value for d in at.dataframe)
    assert per_class["count"].sum() == 40 and len(per_class) == 10
    assert list(spread["n_proj"]) == [1, 3]
    # unbiased: 4 draws on a batch of 40 stay well within 50% of the exact value
    assert (spread["relative_bias"].abs() < 0.5).all()
    assert timing["estimator"].iloc[0] == "plain CE" and (timing["seconds"] > 0).all()
    assert "exact (all C directions)" in list(timing["estimator"])
    res = at.session_state["jac_result"]
    # the exact reference of the projections is the same Jacobian as the histogram's
    assert float((res["stats"].norms ** 2).mean()) == pytest.approx(res["spread"].exact_batch, rel=1e-4)
    assert res["stats"].norms.shape == (40,) and (res["stats"].norms > 0).all()
    assert [c.key for c in at.get("plotly_chart")] == ["jac_hist", "jac_box", "jac_spread", "jac_timing"]


def test_predicted_against_measured_radius(zoo_dir: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("views/jacobian.py")
    at.run()
    assert not at.exception
    assert any("Compute the scatter" in i.value for i in at.info)
    assert at.session_state["jac_theory_models"] == ["zoo:lenet-jr"]     # the sidebar's selection
    at.multiselect(key="jac_theory_models").set_value(["zoo:lenet-jr", "zoo:lenet-none"])
    inputs = {n.label: n for n in at.number_input}
    inputs["Samples"].set_value(2)
    inputs["Random planes: extent"].set_value(4.0)
    inputs["Adversarial planes: extent"].set_value(1.5)
    next(b for b in at.form_submit_button if b.label == "Compute the scatter").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    res = at.session_state["jac_theory"]
    assert len(res.rows) == 2 * 2 * 2 and res.names == ["lenet-jr", "lenet-none"]
    chart = next(c for c in at.get("plotly_chart") if "jac_theory_chart" in (c.proto.id or ""))
    assert '"type":"log"' in chart.proto.spec.replace(" ", "")
    summary = next(d.value for d in at.dataframe if "spearman" in d.value.columns)
    assert set(summary["plane"]) == {"random", "adversarial"} and "all models" in set(summary["model"])
    assert {b.label for b in at.get("download_button")} >= {"CSV", "PNG"}


def test_scatter_of_models_of_two_datasets_is_refused(zoo_dir: Path) -> None:
    from jacreg import architectures
    from jacreg.checkpoints import save_checkpoint

    cifar = architectures.create("lenet", input_shape=(3, 32, 32))
    save_checkpoint(cifar, {"arch": "lenet", "dataset": "cifar10", "num_classes": 10, "name": "zz-cifar",
                            "input_shape": [3, 32, 32]}, zoo_dir / "zz-cifar.safetensors")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/jacobian.py")
    at.run()
    at.multiselect(key="jac_theory_models").set_value(["zoo:lenet-jr", "zoo:zz-cifar"])
    next(b for b in at.form_submit_button if b.label == "Compute the scatter").click().run()
    assert not at.exception
    assert any("different datasets" in e.value for e in at.error)
