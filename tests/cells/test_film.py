"""jacreg.cells.film: a cross section per snapshot, runs side by side, frames by epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacreg import cells
from jacreg.cells.film import Reel
from jacreg.errors import ConfigError
from tests.helpers import Affine


@pytest.fixture(scope="module")
def runs(snapshot_pair):
    return cells.snapshot_runs({"plain": snapshot_pair / "lenet-none.safetensors",
                                "JR": snapshot_pair / "lenet-jr.safetensors"})


def test_a_film_of_two_runs(runs, digits):
    plane = cells.random_plane(digits[0][0], seed=0)
    events = []
    movie = cells.film(runs, plane, extent=3.0, resolution=15, on_event=events.append)
    assert movie.names == ["plain", "JR"] and movie.epochs == [1, 2, 3] and movie.frames == 6
    assert [e["done"] for e in events] == list(range(1, 7)) and events[-1]["fraction"] == 1.0
    frame = movie.frame(2)
    assert frame.labels.shape == (2, 15, 15) and frame.predicted_distance.shape == (2,)
    for k, reel in enumerate(movie.reels):         # the frame stacks each run's section of that epoch
        one = reel.sections[reel.index(2)]
        assert np.array_equal(frame.labels[k], one.labels[0])
        assert frame.boundary_distance[k] == one.boundary_distance[0]
    rows = movie.radii()
    assert [(r["run"], r["epoch"]) for r in rows] == [(n, e) for n in ("plain", "JR") for e in (1, 2, 3)]
    assert all(r["seconds"] > 0 and r["evaluations"] > 0 for r in rows)
    assert all(math.isfinite(r["predicted_radius"]) for r in rows)
    assert movie.seconds_per_frame() > 0


def test_runs_of_different_lengths_and_modules_as_frames(digits):
    plane = cells.random_plane(digits[0][2], seed=2)
    torch.manual_seed(0)
    net = Affine(0.05 * torch.randn(10, 28 * 28), torch.randn(10), plane.origin)
    movie = cells.film({"long": [(1, net), (5, net), (3, net)], "short": [(2, net)]}, plane,
                       extent=3.0, resolution=15)
    assert movie.epochs == [1, 2, 3, 5]
    assert movie.reels[0].epochs == (1, 3, 5)                       # sorted by epoch
    assert [movie.reels[1].index(e) for e in (1, 2, 5)] == [0, 0, 0]  # before its first frame: the first
    assert [movie.reels[0].index(e) for e in (1, 2, 3, 4, 5, 9)] == [0, 0, 1, 1, 2, 2]


def test_missing_snapshots_and_bad_arguments(tmp_path, lenet, digits):
    with pytest.raises(ConfigError, match="--snapshot-every 1"):
        cells.snapshot_runs({"nothing": tmp_path / "none.safetensors"})
    plane = cells.random_plane(digits[0][0], seed=0)
    with pytest.raises(ConfigError, match="at least one run"):
        cells.film({}, plane)
    with pytest.raises(ConfigError, match="no snapshots"):
        cells.film({"empty": []}, plane)
    with pytest.raises(ConfigError, match="resolution"):
        cells.film({"a": [(1, lenet)]}, plane, resolution=3)
    assert Reel("x", (1,), (), ()).index(0) == 0
