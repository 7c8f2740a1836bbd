"""jacreg.cells.section and grid: cross sections, full and refined, their orientation and files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacreg import architectures, cells
from jacreg.errors import ConfigError, ShapeError
from tests.helpers import SHAPE, halfplane_model


@pytest.mark.parametrize("refine", [True, False])
def test_orientation_rows_are_v_columns_are_u(digits, refine):
    p = cells.random_plane(digits[0][0], seed=0)
    along_u = halfplane_model(p, p.u, 0.33)    # class 1 where a > 0.33
    along_v = halfplane_model(p, -p.v, 0.47)  # class 1 where b < -0.47
    cs = cells.cross_section([along_u, along_v], p, extent=1.0, resolution=41, refine=refine)
    c = cs.coords
    assert c.shape == (41,) and c[0] == -1.0 and c[-1] == 1.0
    assert cs.labels.shape == cs.confidence.shape == (2, 41, 41)
    assert cs.labels.dtype == np.int64 and cs.confidence.dtype == np.float32
    expect_u = np.broadcast_to(c[None, :] > 0.33, (41, 41))   # varies along columns only
    expect_v = np.broadcast_to(c[:, None] < -0.47, (41, 41))  # varies along rows only
    assert np.array_equal(cs.labels[0] == 1, expect_u)
    assert np.array_equal(cs.labels[1] == 1, expect_v)
    assert np.all((cs.confidence >= 0.5 - 1e-6) & (cs.confidence <= 1 + 1e-6))
    assert list(cs.origin_label) == [0, 0]
    assert cs.boundary_distance[0] == pytest.approx(0.33, rel=0.005)
    assert cs.boundary_distance[1] == pytest.approx(0.47, rel=0.005)
    # nearest points along +u and -v (0.5% in distance allows ~0.1 rad in angle)
    assert min(cs.boundary_angle[0], 2 * math.pi - cs.boundary_angle[0]) < 0.1
    assert abs(cs.boundary_angle[1] - 1.5 * math.pi) < 0.1


def test_labels_agree_with_direct_evaluation_at_random_points(lenet, digits):
    p = cells.random_plane(digits[0][1], seed=1)
    cs = cells.cross_section(lenet, p, extent=10.0, resolution=61, boundary=False)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 61, 300), rng.integers(0, 61, 300)
    with torch.no_grad():
        direct = lenet(p.points(cs.coords[j], cs.coords[i])).argmax(1).numpy()
    assert (direct == cs.labels[0, i, j]).mean() >= 0.99
    assert np.isinf(cs.boundary_distance[0])  # boundary=False


def test_refinement_matches_the_full_grid(lenet, digits):
    """151x151 on a trained LeNet' and a random plane wide enough to hold several classes."""
    p = cells.random_plane(digits[0][1], seed=1)
    full = cells.cross_section(lenet, p, extent=12.0, resolution=151, refine=False, boundary=False)
    ref = cells.cross_section(lenet, p, extent=12.0, resolution=151, refine=True, boundary=False)
    assert len(np.unique(full.labels)) >= 2  # the test means something: boundaries in the window
    agree = float((full.labels == ref.labels).mean())
    assert agree >= 0.995, agree
    assert full.evaluations[0] == 151 * 151
    assert ref.evaluations[0] < 0.15 * 151 * 151
    assert float(np.abs(full.confidence - ref.confidence).mean()) < 0.02


def test_refinement_on_an_adversarial_plane(lenet, digits):
    x, y = digits
    p = cells.adversarial_plane(x[2], int(y[2]), lenet, None, seed=0)
    full = cells.cross_section(lenet, p, extent=2.0, resolution=101, refine=False, boundary=False)
    ref = cells.cross_section(lenet, p, extent=2.0, resolution=101, boundary=False)
    assert len(np.unique(full.labels)) >= 2
    assert float((full.labels == ref.labels).mean()) >= 0.995


def test_models_are_not_mutated(lenet, digits):
    torch.manual_seed(0)
    train_mode = architectures.create("lenet", dropout=0.5).train()  # dropout on: must be evaluated in eval
    before = {k: v.clone() for k, v in train_mode.state_dict().items()}
    p = cells.random_plane(digits[0][0], seed=0)
    a = cells.cross_section([train_mode], p, 1.0, 21, boundary=False)
    b = cells.cross_section([train_mode], p, 1.0, 21, boundary=False)
    assert train_mode.training  # still the caller's mode
    assert all(torch.equal(before[k], v) for k, v in train_mode.state_dict().items())
    assert np.array_equal(a.confidence, b.confidence)  # deterministic: dropout was off
    assert not lenet.training


def test_cross_section_bad_input(lenet, digits):
    p = cells.random_plane(digits[0][0], seed=0)
    for extent in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="extent"):
            cells.cross_section(lenet, p, extent, 21)
    for res in (10, 1002, 20.5):
        with pytest.raises(ConfigError, match="resolution"):
            cells.cross_section(lenet, p, 1.0, res)
    with pytest.raises(ConfigError):
        cells.cross_section([], p, 1.0, 21)
    cifar = architectures.create("lenet", input_shape=(3, 32, 32)).eval()
    with pytest.raises(ShapeError, match="shape"):
        cells.cross_section([lenet, cifar], p, 1.0, 21)


def test_npz_round_trip(digits, tmp_path):
    p = cells.random_plane(digits[0][0], seed=0)
    cs = cells.cross_section(halfplane_model(p, p.u, 0.3), p, 1.0, 21)
    cs.save_npz(tmp_path / "cs.npz")
    with np.load(tmp_path / "cs.npz") as z:
        for k in ("origin", "u", "v", "coords", "labels", "confidence", "boundary_distance"):
            assert k in z.files
        assert np.array_equal(z["labels"], cs.labels) and z["u"].shape == SHAPE
