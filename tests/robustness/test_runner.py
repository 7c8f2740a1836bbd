"""jacreg.robustness.runner: curves in a background thread, errors kept, stop honoured."""

from __future__ import annotations

import pytest

from jacreg import robustness


def test_background_runner_collects_curves_and_errors(model, data):
    x, y = data
    tasks = [robustness.CurveTask("m", model, x[:10], y[:10], "fgsm", [0.0, 0.1]),
             robustness.CurveTask("m", model, x[:10], y[:10], "pgd", [0.0, 5.0]),  # bad epsilon
             robustness.CurveTask("m", model, x[:10], y[:10], "noise-linf", [0.0, 0.3])]
    runner = robustness.CurveRunner(tasks, batch_size=5).start()
    runner.join(60)
    snap = runner.snapshot()
    assert snap["done"] and snap["progress"] == pytest.approx(1.0)
    assert [r["attack"] for r in snap["results"]] == ["fgsm", "noise-linf"]
    assert len(snap["errors"]) == 1 and "beyond the input range" in snap["errors"][0]
    stopper = robustness.CurveRunner([robustness.CurveTask("m", model, x, y, "pgd", [0.0, 0.1, 0.2])],
                                     batch_size=5)
    stopper.stop()
    stopper.start().join(60)
    assert stopper.snapshot()["done"] and stopper.snapshot()["results"] == []
