"""jacreg.cells.theory: predicted against measured radii over samples, summary and CSV."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from jacreg import cells
from jacreg.cells.theory import COLUMNS
from jacreg.errors import ConfigError
from tests.helpers import Affine


@pytest.fixture(scope="module")
def affine(digits) -> Affine:
    torch.manual_seed(1)
    x, _ = digits
    return Affine(0.05 * torch.randn(10, 28 * 28), torch.randn(10), x[:4].mean(0)).eval()


def test_an_affine_model_lies_on_the_diagonal(affine, lenet, digits):
    x, y = digits
    events = []
    res = cells.radius_theory([affine, lenet], x, y, 2, extent=5.0, adversarial_extent=2.0,
                              names=["affine", "lenet"], on_event=events.append)
    assert len(res.rows) == 2 * 2 * 2 and events[-1]["fraction"] == 1.0
    assert res.extents == {"random": 5.0, "adversarial": 2.0}
    for r in res.select("affine"):
        if math.isfinite(r["measured"]):
            assert r["ratio"] == pytest.approx(1.0, abs=0.01), r
    assert all(r["jacobian_norm"] > 0 for r in res.rows)
    assert {r["sample"] for r in res.select("lenet", "random")} == {0, 1}
    summary = {(s["model"], s["plane"]): s for s in res.summary()}
    assert set(summary) == {(m, p) for m in ("affine", "lenet", "all models")
                            for p in ("random", "adversarial")}
    aff = summary[("affine", "random")]
    assert aff["samples"] == 2 and aff["finite"] >= 1 and aff["median_ratio"] == pytest.approx(1.0, abs=0.01)
    assert aff["within_3x"] == 1.0
    rows = list(csv.DictReader(io.StringIO(res.csv_bytes().decode())))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 8


def test_rank_correlation_on_a_family_of_affine_models(digits):
    """Scaling the logits scales the radius: the rank correlation of predicted and measured is 1."""
    x, y = digits
    torch.manual_seed(2)
    w, b = 0.05 * torch.randn(10, 28 * 28), torch.randn(10)
    models = [Affine(w, b * s, x[0]) for s in (0.25, 0.5, 1.0, 2.0)]
    res = cells.radius_theory(models, x, y, 1, planes=["random"], extent=10.0)
    total = next(s for s in res.summary() if s["model"] == "all models")
    assert total["finite"] == 4 and total["spearman"] == pytest.approx(1.0)


def test_bad_arguments(lenet, digits):
    x, y = digits
    with pytest.raises(ConfigError, match="at least one model"):
        cells.radius_theory([], x, y)
    with pytest.raises(ConfigError, match="planes"):
        cells.radius_theory([lenet], x, y, planes=["diagonal"])
    with pytest.raises(ConfigError, match="between 1 and"):
        cells.radius_theory([lenet], x, y, n=100)
    with pytest.raises(ConfigError, match="extent"):
        cells.radius_theory([lenet], x, y, extent=-1)
    with pytest.raises(ConfigError, match="names"):
        cells.radius_theory([lenet], x, y, 1, names=["a", "b"])
