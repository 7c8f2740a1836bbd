"""jacreg.cells: planes, cross sections (full and refined), distances to the boundary, statistics, CLI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from jacreg import architectures, cells
from jacreg.checkpoints import save_checkpoint
from jacreg.cli import main
from jacreg.data import load_dataset
from jacreg.errors import ConfigError, ShapeError
from tests.helpers import quick_lenet

SHAPE = (1, 28, 28)
D = 28 * 28


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    """LeNet' after one epoch of plain SGD on mnist-5k (about 90% test accuracy)."""
    return quick_lenet(0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("mnist-5k", split="test", limit=8)


class Affine(nn.Module):
    """logits = W (x - x0) + b on flattened images: decision regions are exact polygons in a plane."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.float())
        self.b = nn.Parameter(b.float())
        self.register_buffer("x0", x0.reshape(-1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.x0) @ self.w.T + self.b


def _halfplane_model(plane: cells.Plane, direction: torch.Tensor, offset: float,
                     scale: float = 20.0) -> Affine:
    """Two classes: class 1 where (x - x0) . direction > offset, else class 0."""
    w = torch.zeros(2, D)
    w[1] = scale * direction.reshape(-1)
    return Affine(w, torch.tensor([0.0, -scale * offset]), plane.origin)


def _analytic_distance(model: Affine, plane: cells.Plane) -> float:
    """Exact in-plane distance from the origin to the complement of its (convex) class region."""
    w, b = model.w.detach().double(), model.b.detach().double()
    y0 = int(torch.argmax(b))
    u, v = plane.u.reshape(-1).double(), plane.v.reshape(-1).double()
    best = math.inf
    for k in range(w.shape[0]):
        if k == y0:
            continue
        dw, db = w[k] - w[y0], float(b[k] - b[y0])   # class k beats y0 where db + a*alpha + b*beta > 0
        alpha, beta = float(dw @ u), float(dw @ v)
        norm = math.hypot(alpha, beta)
        if norm > 0:
            best = min(best, abs(db) / norm)
    return best


# --- planes -------------------------------------------------------------------------------------

def test_random_plane_is_orthonormal_and_seeded(digits):
    x0 = digits[0][0]
    p = cells.random_plane(x0, seed=3)
    assert p.u.shape == p.v.shape == p.origin.shape == x0.shape
    assert torch.equal(p.origin, x0)
    assert abs(float(p.u.norm()) - 1) < 1e-5 and abs(float(p.v.norm()) - 1) < 1e-5
    assert abs(float((p.u * p.v).sum())) < 1e-6
    assert p.kind == "random" and p.note == ""
    same = cells.random_plane(x0.unsqueeze(0), seed=3)  # (1, C, H, W) accepted
    assert torch.equal(same.u, p.u) and torch.equal(same.v, p.v)
    other = cells.random_plane(x0, seed=4)
    assert float((other.u - p.u).abs().max()) > 0.01


def test_plane_point_and_coordinates_round_trip(digits):
    p = cells.random_plane(digits[0][0], seed=0)
    a, b = p.coordinates(p.point(0.7, -1.3))
    assert a == pytest.approx(0.7, abs=1e-4) and b == pytest.approx(-1.3, abs=1e-4)
    pts = p.points(np.array([0.7, 0.0]), np.array([-1.3, 2.0]))
    assert pts.shape == (2, *SHAPE)
    assert torch.allclose(pts[0], p.point(0.7, -1.3), atol=1e-6)


def test_plane_rejects_directions_that_are_not_orthonormal(digits):
    x0 = digits[0][0]
    u = torch.zeros(SHAPE)
    u[0, 0, 0] = 1
    with pytest.raises(ConfigError, match="orthonormal"):
        cells.Plane(x0, u, u)
    with pytest.raises(ShapeError):
        cells.Plane(x0, u, torch.zeros(3, 2, 2))


def test_sample_plane_goes_through_the_three_samples(digits):
    x = digits[0]
    p = cells.sample_plane(x[0], x[1], x[2])
    assert p.kind == "samples"
    (n1, a1, b1), (n2, a2, b2) = p.marks
    assert (n1, n2) == ("x1", "x2")
    assert a1 == pytest.approx(float((x[1] - x[0]).norm()), rel=1e-5) and abs(b1) < 1e-4
    assert b2 > 0
    assert torch.allclose(p.point(a2, b2), x[2], atol=1e-4)  # x2 lies in the plane
    assert abs(float((p.u * p.v).sum())) < 1e-6


def test_degenerate_sample_planes_raise(digits):
    x = digits[0]
    with pytest.raises(ConfigError, match="identical"):
        cells.sample_plane(x[0], x[0], x[1])
    with pytest.raises(ConfigError, match="degenerate"):
        cells.sample_plane(x[0], x[1], x[0] + 2.0 * (x[1] - x[0]))  # collinear
    with pytest.raises(ConfigError, match="degenerate"):
        cells.plane_from_directions(x[0], torch.zeros(SHAPE), torch.ones(SHAPE))
    with pytest.raises(ShapeError):
        cells.sample_plane(x[0], x[1], torch.zeros(3, 28, 28))


def test_adversarial_plane_spans_the_fgsm_directions(lenet, digits):
    x, y = digits
    torch.manual_seed(1)
    other = architectures.create("lenet").eval()  # an untrained model: another direction
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    p = cells.adversarial_plane(x[0], int(y[0]), lenet, other)
    assert p.kind == "adversarial" and p.note == ""
    ga = cells.fgsm_direction(lenet, x[0], int(y[0]))
    gb = cells.fgsm_direction(other, x[0], int(y[0]))
    assert set(torch.unique(ga).tolist()) <= {-1.0, 0.0, 1.0}
    # u is model A's sign gradient, normalised
    assert torch.allclose(p.u, ga / ga.norm(), atol=1e-6)
    # v is the part of model B's sign gradient orthogonal to u: B's direction lies in span(u, v)
    gbn = (gb / gb.norm()).reshape(-1).double()
    u, v = p.u.reshape(-1).double(), p.v.reshape(-1).double()
    resid = gbn - (gbn @ u) * u - (gbn @ v) * v
    assert float(resid.norm()) < 1e-5 and float(gbn @ v) > 0
    assert abs(float(u @ v)) < 1e-6 and abs(float(v.norm()) - 1) < 1e-6
    # moving along +u increases model A's loss (the FGSM property)
    with torch.no_grad():
        loss = [float(nn.functional.cross_entropy(lenet(p.point(t, 0).unsqueeze(0)), y[:1]))
                for t in (0.0, 0.3)]
    assert loss[1] > loss[0]
    # nothing about the models changed
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())
    assert all(prm.grad is None for prm in lenet.parameters())


def test_adversarial_plane_with_parallel_directions_warns_and_completes(lenet, digits):
    x, y = digits
    with pytest.warns(UserWarning, match="parallel"):
        p = cells.adversarial_plane(x[1], int(y[1]), lenet, lenet, seed=5)
    assert "parallel" in p.note
    assert abs(float((p.u * p.v).sum())) < 1e-6 and abs(float(p.v.norm()) - 1) < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = cells.adversarial_plane(x[1], int(y[1]), lenet, None, seed=5)  # one model: no warning
    assert "random" in q.note and torch.allclose(q.u, p.u)


def test_adversarial_plane_without_any_gradient_is_an_error(digits):
    x, y = digits
    flat = Affine(torch.zeros(10, D), torch.arange(10.0), x[0])  # constant logits: zero gradient
    with pytest.raises(ConfigError, match="gradient"):
        cells.adversarial_plane(x[0], int(y[0]), flat, flat)


# --- cross sections -----------------------------------------------------------------------------

@pytest.mark.parametrize("refine", [True, False])
def test_orientation_rows_are_v_columns_are_u(digits, refine):
    p = cells.random_plane(digits[0][0], seed=0)
    along_u = _halfplane_model(p, p.u, 0.33)    # class 1 where a > 0.33
    along_v = _halfplane_model(p, -p.v, 0.47)  # class 1 where b < -0.47
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
    cs = cells.cross_section(_halfplane_model(p, p.u, 0.3), p, 1.0, 21)
    cs.save_npz(tmp_path / "cs.npz")
    with np.load(tmp_path / "cs.npz") as z:
        for k in ("origin", "u", "v", "coords", "labels", "confidence", "boundary_distance"):
            assert k in z.files
        assert np.array_equal(z["labels"], cs.labels) and z["u"].shape == SHAPE


# --- distance to the boundary -------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_distance_matches_an_analytic_linear_classifier(digits, seed):
    g = torch.Generator().manual_seed(seed)
    p = cells.random_plane(digits[0][0], seed=seed)
    w = torch.randn(4, D, generator=g) * 0.5 + 0.5 * p.u.reshape(1, -1) * torch.randn(4, 1, generator=g)
    b = torch.tensor([1.0, 0.0, 0.2, -0.4])  # the origin is class 0
    model = Affine(w, b, p.origin)
    exact = _analytic_distance(model, p)
    assert 0.05 < exact < 4.0  # within the search range of extent 1
    d, angle = cells.boundary_distance(model, p, extent=1.0, return_angle=True)
    assert abs(d - exact) / exact < 0.005, (d, exact)
    with torch.no_grad():  # just past the nearest point along the angle found: another class
        pt = p.point(1.01 * d * math.cos(angle), 1.01 * d * math.sin(angle)).unsqueeze(0)
        assert int(model(pt).argmax()) != 0


def test_boundary_distance_is_inf_when_there_is_none(digits):
    p = cells.random_plane(digits[0][0], seed=0)
    flat = Affine(torch.zeros(3, D), torch.tensor([1.0, 0.0, 0.0]), p.origin)
    assert math.isinf(cells.boundary_distance(flat, p, extent=1.0))
    far = _halfplane_model(p, p.u, 4.5)  # beyond 4 * extent
    assert math.isinf(cells.boundary_distance(far, p, extent=1.0))
    near = _halfplane_model(p, p.u, 3.5)  # beyond the window but within 4 * extent
    assert cells.boundary_distance(near, p, extent=1.0) == pytest.approx(3.5, rel=0.005)
    cs = cells.cross_section(far, p, 1.0, 21)
    assert math.isinf(cs.boundary_distance[0]) and math.isnan(cs.boundary_angle[0])


def test_rings_just_inside_and_just_outside_the_radius(lenet, digits):
    """On a trained LeNet': a dense ring at 0.99 r is all the sample's class, one at 1.01 r is not."""
    x, y = digits
    for plane, extent in ((cells.random_plane(x[3], seed=2), 10.0),
                          (cells.adversarial_plane(x[3], int(y[3]), lenet, None), 2.0)):
        cs = cells.cross_section(lenet, plane, extent=extent, resolution=61)
        r, y0 = float(cs.boundary_distance[0]), int(cs.origin_label[0])
        assert math.isfinite(r)
        t = np.linspace(0, 2 * np.pi, 3000, endpoint=False) + 0.001
        with torch.no_grad():
            inside = lenet(plane.points(0.99 * r * np.cos(t), 0.99 * r * np.sin(t))).argmax(1)
            outside = lenet(plane.points(1.01 * r * np.cos(t), 1.01 * r * np.sin(t))).argmax(1)
        assert bool((inside == y0).all())
        assert bool((outside != y0).any())


def test_minimal_adversarial_distance_against_a_hyperplane(digits):
    """Full space: the nearest point of the other class is at |margin| / ||w|| (inside [0, 1])."""
    x0 = torch.full(SHAPE, 0.5)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g)
    w = w / w.norm()
    model = Affine(torch.stack([torch.zeros(D), 10 * w]), torch.tensor([0.0, -10 * 0.8]), x0).eval()
    exact = 0.8  # class 1 where (x - x0) . w > 0.8; max |w_i| * 0.8 < 0.5 keeps the point in the box
    assert float(w.abs().max()) * 0.8 < 0.5
    d_fmn = cells.minimal_adversarial_distance(model, x0, attack="fmn", steps=50)
    d_df = cells.minimal_adversarial_distance(model, x0, attack="deepfool")
    assert exact * 0.999 <= d_fmn <= exact * 1.01
    assert exact * 0.999 <= d_df <= exact * 1.05 and d_fmn <= d_df
    both = cells.minimal_adversarial_distance(model, torch.stack([x0, x0]), attack="fmn", steps=20)
    assert both.shape == (2,) and np.allclose(both, d_fmn, rtol=0.01)
    p = cells.random_plane(x0, seed=0)  # a 2-D slice is never nearer than the full space
    assert cells.boundary_distance(model, p, extent=10.0) >= exact * 0.995
    with pytest.raises(ConfigError):
        cells.minimal_adversarial_distance(model, x0, attack="pgd")  # type: ignore[arg-type]


# --- metrics and statistics ---------------------------------------------------------------------

def test_cell_metrics_count_regions_and_area():
    lab = np.zeros((11, 11), dtype=np.int64)
    lab[:, 8:] = 1          # a band of class 1
    lab[0:2, 0:2] = 2       # an island of class 2
    lab[9:, 0:2] = 2        # another island of class 2
    m = cell_m = cells.cell_metrics(lab, (5, 5))
    assert m["regions"] == 4 and m["classes"] == 3
    assert cell_m["area_fraction"] == pytest.approx((121 - 33 - 8) / 121)
    frag = np.indices((11, 11)).sum(0) % 2  # checkerboard: every pixel its own region
    assert cells.cell_metrics(frag)["regions"] == 121


def test_cell_statistics(lenet, digits):
    x, y = digits
    torch.manual_seed(3)
    weak = architectures.create("lenet").eval()
    for kind in ("random", "adversarial"):
        stats = cells.cell_statistics([lenet, weak], x, y, 2, kind, extent=2.0, resolution=21,
                                      names=["trained", "untrained"])
        assert [s["name"] for s in stats] == ["trained", "untrained"]
        for s in stats:
            assert s["planes"] == kind and s["samples"] == 2 and len(s["radius"]) == 2
            assert 0 < s["area_fraction_mean"] <= 1 and s["regions_mean"] >= 1
            assert s["radius_median"] > 0
    with pytest.raises(ConfigError):
        cells.cell_statistics([lenet], x, y, 100)
    with pytest.raises(ConfigError):
        cells.cell_statistics([lenet], x, y, 2, "sideways")  # type: ignore[arg-type]


# --- command line -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpts(lenet, tmp_path_factory):
    root = tmp_path_factory.mktemp("cells_ckpt")
    torch.manual_seed(7)
    other = architectures.create("lenet").eval()
    a, b = root / "plain.safetensors", root / "other.safetensors"
    save_checkpoint(lenet, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "plain"}, a)
    save_checkpoint(other, {"arch": "lenet", "dataset": "mnist-5k", "num_classes": 10, "name": "other"}, b)
    cifar = architectures.create("lenet", input_shape=(3, 32, 32))
    c = root / "cifar.safetensors"
    save_checkpoint(cifar, {"arch": "lenet", "dataset": "cifar10", "num_classes": 10, "name": "cifar",
                            "input_shape": [3, 32, 32]}, c)
    return a, b, c


def test_cli_writes_the_npz_contract(ckpts, tmp_path, capsys):
    a, b, _ = ckpts
    out, png, js = tmp_path / "o.npz", tmp_path / "o.png", tmp_path / "o.json"
    rc = main(["cells", str(a), str(b), "--sample", "3", "--plane", "adversarial", "--seed", "1",
               "--extent", "2", "--resolution", "31", "--npz", str(out), "--png", str(png), "--json", str(js),
               "--device", "cpu"])
    assert rc == 0
    with np.load(out) as z:
        assert z["origin"].shape == z["u"].shape == z["v"].shape == SHAPE
        assert abs(float((z["u"] * z["v"]).sum())) < 1e-5 and abs(float(np.linalg.norm(z["u"])) - 1) < 1e-5
        assert z["coords"].shape == (31,) and z["coords"][-1] == pytest.approx(2.0)
        assert z["labels"].shape == z["confidence"].shape == (2, 31, 31)
        assert np.issubdtype(z["labels"].dtype, np.integer)
        assert z["boundary_distance"].shape == (2,)
        x, _ = load_dataset("mnist-5k", limit=4)
        assert np.allclose(z["origin"], x[3].numpy())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    summary = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert summary["plane"] == "adversarial" and [m["name"] for m in summary["models"]] == ["plain", "other"]
    assert "plain" in capsys.readouterr().out


def test_cli_stats_and_samples_plane(ckpts, tmp_path, capsys):
    a, _, _ = ckpts
    rc = main(["cells", str(a), "--sample", "0", "--plane", "samples", "--through", "1,2", "--extent", "3",
               "--resolution", "21", "--npz", str(tmp_path / "s.npz"), "--stats", "2",
               "--stats-resolution", "15", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "random planes" in out and "adversarial planes" in out and "radius mean" in out


@pytest.mark.parametrize("extra, message", [
    (["--sample", "100000"], "does not exist"),
    (["--extent", "0"], "extent"),
    (["--extent", "-2"], "extent"),
    (["--resolution", "10"], "resolution"),
    (["--resolution", "1002"], "resolution"),
    (["--plane", "samples", "--through", "0,0"], "degenerate"),
    (["--plane", "sideways"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(ckpts, tmp_path, capsys, extra, message):
    a, _, _ = ckpts
    rc = main(["cells", str(a), "--resolution", "21", "--npz", str(tmp_path / "x.npz"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.npz").exists()


def test_cli_models_with_different_input_shapes(ckpts, tmp_path, capsys):
    a, _, c = ckpts
    rc = main(["cells", str(a), str(c), "--resolution", "21", "--npz", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "input shapes" in err and len(err.splitlines()) == 1
    rc = main(["cells", str(tmp_path / "missing.safetensors"), "--npz", str(tmp_path / "x.npz")])
    assert rc == 2
