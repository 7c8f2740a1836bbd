"""jacreg.reproduce.first_view: the sample where JR's wider cell shows best, and its caption."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from jacreg import catalog, cells
from jacreg.checkpoints import load_checkpoint
from jacreg.data import load_dataset
from jacreg.errors import ConfigError
from jacreg.reproduce import choose_first_view, first_view_caption, radius_ratio, write_first_view
from jacreg.reproduce.first_view import round_extent


@pytest.fixture(scope="module")
def pair(checkpoints_dir) -> dict[str, torch.nn.Module]:
    return {name: load_checkpoint(checkpoints_dir / f"{name}.safetensors", device="cpu")[0]
            for name in ("lenet-none", "lenet-jr")}


def test_round_extent_and_ratio():
    assert round_extent(0.7351) == 1.1 and round_extent(4.03) == 6.0 and round_extent(123.4) == 190.0
    assert round_extent(1e9) == cells.MAX_EXTENT
    with pytest.raises(ConfigError):
        round_extent(math.inf)
    assert radius_ratio([0.5, 2.0]) == 4.0
    assert math.isnan(radius_ratio([0.5, math.inf])) and math.isnan(radius_ratio([0.0, 1.0]))


def test_choose_first_view_picks_the_widest_ratio_and_confirms_it(pair, tmp_path):
    x, y = load_dataset("mnist-5k", "test", limit=4)
    events: list[dict] = []
    view = choose_first_view(pair, x, y, candidates=4, resolution=21, on_event=events.append)
    assert view["models"] == ["lenet-none", "lenet-jr"] and view["plane"] == "adversarial"
    assert view["dataset"] == "mnist-5k" and set(view["radii"]) == set(view["models"])
    i = view["sample"]
    labels, _ = cells.predict(list(pair.values()), x[i])
    assert (labels[:, 0] == int(y[i])).all()                     # both models classify it correctly
    radii = [view["radii"][n] for n in view["models"]]
    assert view["extent"] == round_extent(max(r for r in radii if math.isfinite(r)))
    with warnings.catch_warnings():                              # the radii are the cross section's circles
        warnings.simplefilter("ignore")
        plane = cells.adversarial_plane(x[i], int(y[i]), *pair.values())
    cs = cells.cross_section(list(pair.values()), plane, view["extent"], 21, predict=False)
    np.testing.assert_allclose(cs.boundary_distance, radii, rtol=0.011)
    assert events and events[-1]["done"] == events[-1]["total"] >= 1
    path = write_first_view(view, tmp_path)
    for name in view["models"]:
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    back = catalog.first_view(tmp_path)
    assert path.name == catalog.FIRST_VIEW_FILE and back is not None
    assert back["sample"] == i and back["extent"] == view["extent"]


def test_choose_first_view_refuses_what_it_cannot_do(pair):
    x, y = load_dataset("mnist-5k", "test", limit=4)
    with pytest.raises(ConfigError, match="two models"):
        choose_first_view({"a": pair["lenet-none"]}, x, y)
    with pytest.raises(ConfigError, match="classified correctly"):
        choose_first_view(pair, x, (y + 1) % 10, candidates=4)


def _section(r0: float, r1: float, searched: float = 0.0) -> cells.CrossSection:
    plane = cells.random_plane(torch.zeros(1, 4, 4), seed=0)
    z = np.zeros((2, 11, 11))
    return cells.CrossSection(plane=plane, extent=1.0, coords=np.linspace(-1, 1, 11),
                              labels=z.astype(np.int64),
                              confidence=z.astype(np.float32), boundary_distance=np.array([r0, r1]),
                              boundary_angle=np.zeros(2), origin_label=np.zeros(2, dtype=np.int64),
                              origin_confidence=np.ones(2, dtype=np.float32), evaluations=np.zeros(2),
                              boundary_searched=np.array([r0, searched]))


def test_caption_is_computed_from_the_circles():
    names = ["lenet-none", "lenet-jr"]
    text = first_view_caption(_section(0.5, 1.2), names, 7, "mnist-5k")
    assert text == ("lenet-none vs lenet-jr on an adversarial plane through test digit 7: the lenet-jr "
                    "cell is 2.4 times wider (in-plane radius 1.2 vs 0.5).")
    assert "0.5 times" not in first_view_caption(_section(1.0, 0.5), names, 7, "mnist-5k")
    assert "2.0 times narrower" in first_view_caption(_section(1.0, 0.5), names, 7, "mnist-5k")
    far = first_view_caption(_section(0.5, math.inf, 3.0), names, 0, "cifar10")
    assert "more than 6.0 times wider" in far
    assert "test sample 0" in first_view_caption(_section(0.5, math.inf, 3.0), names, 0, "cifar10")
    assert first_view_caption(_section(math.inf, math.inf), names, 3, "mnist", plane="random").endswith(
        "a random plane through test digit 3.")
    with pytest.raises(ConfigError):
        first_view_caption(_section(1, 2), ["a"], 0, "mnist")
