"""Decision cells: planes through a sample, cross sections, distances to the boundary, cell metrics.

This module computes the paper's decision-cell pictures (Hoffman, Roberts & Yaida 2019, Fig. 1,
S1 and S2) for any model: a 2-D plane through a test sample ``x0``, spanned by two orthonormal
directions ``u`` and ``v``; the class each model predicts at every point ``x0 + a*u + b*v`` of a
square grid; the top softmax probability there; and the in-plane distance from ``x0`` to the
nearest point of another class (the radius of the black circle in the paper's figures).

Coordinates ``a``, ``b`` are in input-space L2 units of [0, 1] pixels: ``u`` and ``v`` have unit L2
norm, so the point at coordinates ``(a, b)`` is at L2 distance ``sqrt(a**2 + b**2)`` from ``x0``.
Points outside the [0, 1] box are evaluated as they are (no clipping): a cross section shows the
model as a function on the whole plane, and clipping would fold the plane onto the faces of the
box and distort distances.

Typical use::

    from jacreg.cells import random_plane, adversarial_plane, cross_section
    plane = random_plane(x0, seed=0)
    cs = cross_section([plain, jr], plane, extent=1.0, resolution=201)
    cs.labels[m, i, j]   # class at x0 + cs.coords[j] * u + cs.coords[i] * v (rows = v, cols = u)

Cross sections are refined where labels change (a coarse grid first, then only the blocks whose
corners disagree, recursively); :func:`cross_section` with ``refine=False`` evaluates every point.
Every function evaluates models under ``torch.inference_mode()`` on a model in eval mode and never
changes the model it is given (a model in training mode, or on another device, is copied first).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .device import model_device, pick, same_device
from .errors import ConfigError, ShapeError

EventFn = Callable[[dict[str, Any]], None]

#: Allowed grid resolutions (points per side).
MIN_RESOLUTION, MAX_RESOLUTION = 11, 1001

__all__ = [
    "CrossSection",
    "Plane",
    "add_cells_arguments",
    "adversarial_plane",
    "boundary_distance",
    "cell_metrics",
    "cell_statistics",
    "check_grid",
    "cross_section",
    "fgsm_direction",
    "minimal_adversarial_distance",
    "plane_from_directions",
    "predict",
    "random_plane",
    "run_cells_command",
    "sample_plane",
]


# --- planes --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Plane:
    """A 2-D affine plane ``origin + a*u + b*v`` in input space.

    Attributes:
        origin: the sample the plane goes through, shape (C, H, W), float32 on the CPU.
        u: first direction (horizontal axis of the figures), unit L2 norm, shape of ``origin``.
        v: second direction (vertical axis), unit L2 norm, orthogonal to ``u``.
        kind: how the plane was made: ``"random"``, ``"adversarial"``, ``"samples"`` or ``"custom"``.
        note: warnings met while building the plane (e.g. parallel attack directions), "" if none.
        marks: named points of the plane as ``(name, a, b)``, e.g. the other two samples of a
            :func:`sample_plane`; figures draw them.
    """

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    kind: str = "custom"
    note: str = ""
    marks: tuple[tuple[str, float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        shapes = {tuple(self.origin.shape), tuple(self.u.shape), tuple(self.v.shape)}
        if len(shapes) != 1:
            raise ShapeError(f"plane origin, u and v must have one shape, got {sorted(shapes)}")
        nu, nv = float(self.u.double().norm()), float(self.v.double().norm())
        dot = float((self.u.double() * self.v.double()).sum())
        if abs(nu - 1) > 1e-4 or abs(nv - 1) > 1e-4 or abs(dot) > 1e-4:
            raise ConfigError(
                f"plane directions must be orthonormal (|u|={nu:.4g}, |v|={nv:.4g}, u.v={dot:.3g}); "
                "build planes with random_plane, adversarial_plane, sample_plane or plane_from_directions"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one input, (C, H, W)."""
        return tuple(self.origin.shape)

    def point(self, a: float, b: float) -> torch.Tensor:
        """The input at plane coordinates ``(a, b)`` (not clipped to [0, 1])."""
        return self.origin + float(a) * self.u + float(b) * self.v

    def points(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The inputs at coordinates ``(a[k], b[k])``, shape (N, C, H, W)."""
        at = torch.as_tensor(np.asarray(a, dtype=np.float32)).reshape(-1, 1)
        bt = torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 1)
        flat = self.origin.reshape(1, -1) + at * self.u.reshape(1, -1) + bt * self.v.reshape(1, -1)
        return flat.reshape(-1, *self.shape)

    def coordinates(self, x: torch.Tensor) -> tuple[float, float]:
        """Coordinates ``(a, b)`` of the orthogonal projection of ``x`` onto the plane."""
        d = (_as_image(x) - self.origin).double().reshape(-1)
        return float(d @ self.u.double().reshape(-1)), float(d @ self.v.double().reshape(-1))

    def arrays(self) -> dict[str, np.ndarray]:
        """``origin``, ``u``, ``v`` as float32 numpy arrays (the NPZ contract)."""
        return {k: getattr(self, k).detach().cpu().numpy().astype(np.float32) for k in ("origin", "u", "v")}


def _as_image(x: Any) -> torch.Tensor:
    """One image (C, H, W) as a float32 CPU tensor; accepts (1, C, H, W) and numpy arrays."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ShapeError(f"expected one image of shape (C, H, W), got shape {tuple(t.shape)}")
    if t.numel() < 2:
        raise ShapeError("an image needs at least two values to span a plane")
    return t.to("cpu", torch.float32).contiguous()


def plane_from_directions(x0: Any, d1: Any, d2: Any, *, kind: str = "custom", note: str = "",
                          marks: tuple[tuple[str, float, float], ...] = ()) -> Plane:
    """Orthonormalise two directions (Gram-Schmidt, in float64) into a :class:`Plane` through ``x0``.

    Raises:
        ConfigError: a direction is zero, or the two are parallel (the plane is degenerate).
    """
    origin = _as_image(x0)
    a = torch.as_tensor(np.asarray(d1) if not isinstance(d1, torch.Tensor) else d1).detach()
    b = torch.as_tensor(np.asarray(d2) if not isinstance(d2, torch.Tensor) else d2).detach()
    if a.numel() != origin.numel() or b.numel() != origin.numel():
        raise ShapeError(f"plane directions must have the sample's {origin.numel()} values, "
                         f"got {a.numel()} and {b.numel()}")
    u, v = _gram_schmidt(a.reshape(-1).double().cpu(), b.reshape(-1).double().cpu())
    if u is None:
        raise ConfigError("degenerate plane: the first direction is zero; pick different points or a seed")
    if v is None:
        raise ConfigError("degenerate plane: the two directions are parallel; pick points that are "
                          "not on one line (or a random plane)")
    return Plane(origin, u.float().reshape(origin.shape), v.float().reshape(origin.shape),
                 kind=kind, note=note, marks=marks)


def _gram_schmidt(a: torch.Tensor, b: torch.Tensor,
                  tol: float = 1e-6) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Unit ``u`` along ``a`` and unit ``v`` along the part of ``b`` orthogonal to ``a`` (float64).

    ``None`` where a direction is zero or ``b`` is parallel to ``a`` (relative norm below ``tol``).
    """
    na = float(a.norm())
    if not math.isfinite(na) or na <= 1e-300:
        return None, None
    u = a / na
    nb = float(b.norm())
    if not math.isfinite(nb) or nb <= 1e-300:
        return u, None
    w = b - (b @ u) * u
    w = w - (w @ u) * u  # second pass: orthogonal to machine precision
    nw = float(w.norm())
    if nw <= tol * nb:
        return u, None
    return u, w / nw


def random_plane(x0: Any, seed: int = 0, *, generator: torch.Generator | None = None) -> Plane:
    """A random plane through ``x0`` (the paper's Fig. S1).

    Two Gaussian directions drawn from ``seed`` (or ``generator``), orthonormalised by Gram-Schmidt.
    The same seed gives the same plane for every sample of the same shape.
    """
    origin = _as_image(x0)
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    d = torch.randn(2, origin.numel(), generator=g, dtype=torch.float64)
    return plane_from_directions(origin, d[0], d[1], kind="random")


def fgsm_direction(model: nn.Module, x0: Any, y0: int, *,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """The FGSM direction ``sign(grad_x CE(model(x0), y0))`` (Goodfellow et al. 2015), shape of ``x0``.

    When the cross-entropy saturates in float32 (a very confident model whose gradient is exactly
    zero), the gradient of the logit margin ``max_{k != y0} z_k - z_{y0}`` is used instead: it is
    the direction the cross-entropy gradient tends to as the top softmax goes to one.
    The model is not changed (a copy is used if it is in training mode or on another device).

    Returns:
        A float32 CPU tensor with entries in {-1, 0, 1}; all zero if the model is flat at ``x0``.
    """
    origin = _as_image(x0)
    net, dev = _prepare(model, device)
    x = origin.unsqueeze(0).to(dev).requires_grad_(True)
    target = torch.tensor([int(y0)], device=dev)
    with torch.enable_grad():
        logits = net(x)
        if logits.dim() != 2 or not 0 <= int(y0) < logits.shape[1]:
            raise ShapeError(f"label {int(y0)} out of range for a model with output {tuple(logits.shape)}")
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(logits.float(), target), x)
        if not bool(g.ne(0).any()):
            x2 = origin.unsqueeze(0).to(dev).requires_grad_(True)
            z = net(x2).float()[0]
            others = torch.cat([z[: int(y0)], z[int(y0) + 1:]])
            (g,) = torch.autograd.grad(others.max() - z[int(y0)], x2)
    return g[0].sign().detach().to("cpu", torch.float32)


def adversarial_plane(x0: Any, y0: int, model_a: nn.Module, model_b: nn.Module | None = None, *,
                      seed: int = 0, device: str | torch.device | None = None) -> Plane:
    """A plane spanned by the FGSM directions of two models (the paper's Fig. S2).

    ``u`` is model_a's sign-gradient direction, ``v`` the part of model_b's orthogonal to it
    (Gram-Schmidt). Moving along ``+u`` increases model_a's loss. When the two directions are
    parallel (e.g. the same model twice), or model_b is None, the plane is completed with a random
    direction drawn from ``seed`` and :attr:`Plane.note` says so (a warning is also issued).

    Args:
        x0: the sample, (C, H, W) in [0, 1].
        y0: its true label.
        model_a, model_b: models that take [0, 1] images and return logits.
        seed: seed of the random completion, if one is needed.
        device: where to compute the gradients (default: model_a's device).

    Raises:
        ConfigError: neither model has a non-zero gradient at ``x0`` (no adversarial direction).
    """
    origin = _as_image(x0)
    ga = fgsm_direction(model_a, origin, y0, device=device).double().reshape(-1)
    gb = (fgsm_direction(model_b, origin, y0, device=device).double().reshape(-1)
          if model_b is not None else None)
    notes: list[str] = []
    if not bool(ga.ne(0).any()):
        if gb is None or not bool(gb.ne(0).any()):
            raise ConfigError("no adversarial direction: the models' gradients are zero at this sample; "
                              "use a random plane")
        notes.append("model A has a zero gradient at this sample: u is model B's FGSM direction")
        ga, gb = gb, None
    u, v = _gram_schmidt(ga, gb) if gb is not None else (ga / ga.norm(), None)
    if gb is None and not notes:
        notes.append(f"one model given: v is a random direction (seed {seed})")
    elif v is None:
        if gb is not None and bool(gb.ne(0).any()):
            notes.append(f"the two FGSM directions are parallel: v is a random direction (seed {seed})")
        else:
            notes.append(f"model B has a zero gradient at this sample: v is a random direction (seed {seed})")
    if v is None:
        assert u is not None
        g = torch.Generator().manual_seed(int(seed))
        for _ in range(8):
            _, v = _gram_schmidt(u, torch.randn(u.numel(), generator=g, dtype=torch.float64))
            if v is not None:
                break
        if v is None:
            raise ConfigError("degenerate plane: cannot complete the adversarial direction")
        if notes and not notes[-1].startswith("one model"):
            warnings.warn(notes[-1], stacklevel=2)
    assert u is not None
    return Plane(origin, u.float().reshape(origin.shape), v.float().reshape(origin.shape),
                 kind="adversarial", note="; ".join(notes))


def sample_plane(x0: Any, x1: Any, x2: Any) -> Plane:
    """The plane through three images (as dbViz does): origin ``x0``, ``u`` towards ``x1``.

    ``v`` is the part of ``x2 - x0`` orthogonal to ``u``, so ``x1`` lies on the positive ``u`` axis
    and ``x2`` in the upper half plane; their coordinates are stored in :attr:`Plane.marks`.

    Raises:
        ConfigError: the three images are on one line (e.g. two of them are equal).
        ShapeError: the images have different shapes.
    """
    a0, a1, a2 = _as_image(x0), _as_image(x1), _as_image(x2)
    if a0.shape != a1.shape or a0.shape != a2.shape:
        raise ShapeError(f"the three samples must have one shape, got {tuple(a0.shape)}, "
                         f"{tuple(a1.shape)}, {tuple(a2.shape)}")
    d1, d2 = (a1 - a0).double(), (a2 - a0).double()
    if float(d1.norm()) == 0.0 or float(d2.norm()) == 0.0:
        raise ConfigError("degenerate plane: two of the three samples are identical; "
                          "pick three different ones")
    plane = plane_from_directions(a0, d1, d2, kind="samples")
    marks = (("x1",) + plane.coordinates(a1), ("x2",) + plane.coordinates(a2))
    return Plane(plane.origin, plane.u, plane.v, kind="samples", marks=marks)  # type: ignore[arg-type]


# --- evaluating models on a plane ----------------------------------------------------------------

def _prepare(model: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device]:
    """The model in eval mode on ``device`` without changing the caller's model.

    A model already in eval mode on the right device is used as is; otherwise a copy is moved and
    put in eval mode (models from caches are shared and must not be mutated).
    """
    current = model_device(model)
    dev = current if device is None else pick(device)
    if model.training or not same_device(current, dev):
        model = copy.deepcopy(model).to(dev).eval()
    return model, dev


def _auto_batch_size(dev: torch.device, numel: int) -> int:
    """Points per forward pass: about 64 floats of activations per input value, a quarter of the
    free accelerator memory (256 MiB on the CPU)."""
    per_sample = max(1, numel) * 4 * 64
    if dev.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
        except RuntimeError:
            free = 2 << 30
        return int(np.clip(free // 4 // per_sample, 64, 16384))
    return int(np.clip((256 << 20) // per_sample, 16, 4096))


class _PlaneEvaluator:
    """Labels and max-softmax of one model at plane coordinates, in device-sized batches."""

    def __init__(self, model: nn.Module, plane: Plane, device: str | torch.device | None,
                 batch_size: int | None) -> None:
        self.model, self.device = _prepare(model, device)
        self.shape = plane.shape
        self.origin = plane.origin.reshape(-1).to(self.device)
        self.basis = torch.stack([plane.u.reshape(-1), plane.v.reshape(-1)]).to(self.device)
        self.batch_size = (int(batch_size) if batch_size is not None
                           else _auto_batch_size(self.device, plane.origin.numel()))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.count = 0
        self.num_classes = 0

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        b = np.asarray(b, dtype=np.float32).reshape(-1)
        n = a.size
        labels = np.empty(n, dtype=np.int64)
        conf = np.empty(n, dtype=np.float32)
        ab = torch.from_numpy(np.stack([a, b], axis=1))
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                chunk = ab[s:s + self.batch_size].to(self.device)
                x = torch.addmm(self.origin, chunk, self.basis).view(-1, *self.shape)
                logits = self.model(x)
                if logits.dim() != 2:
                    raise ShapeError("model output must be (batch, classes) logits, "
                                     f"got {tuple(logits.shape)}")
                self.num_classes = int(logits.shape[1])
                p, k = torch.softmax(logits.float(), dim=1).max(dim=1)
                labels[s:s + len(chunk)] = k.cpu().numpy()
                conf[s:s + len(chunk)] = p.cpu().numpy()
        self.count += n
        return labels, conf


def check_grid(extent: float, resolution: int) -> None:
    """Validate a cross section's extent and resolution.

    Raises:
        ConfigError: extent not a positive finite number, or resolution outside [11, 1001].
    """
    try:
        e = float(extent)
    except (TypeError, ValueError):
        raise ConfigError(f"extent must be a number, got {extent!r}") from None
    if not math.isfinite(e) or e <= 0:
        raise ConfigError(f"extent must be positive (L2 units of [0, 1] pixels), got {extent}")
    if isinstance(resolution, bool) or int(resolution) != resolution:
        raise ConfigError(f"resolution must be an integer, got {resolution!r}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise ConfigError(f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} points "
                          f"per side, got {resolution}")


def _check_model_input(model: nn.Module, ev: _PlaneEvaluator, index: int) -> tuple[int, float]:
    """Label and confidence at the origin; ShapeError if the model cannot take the plane's inputs."""
    try:
        lab, conf = ev(np.zeros(1), np.zeros(1))
    except RuntimeError as exc:
        raise ShapeError(f"model {index} cannot take inputs of shape {ev.shape} (the plane's sample): "
                         f"{str(exc).splitlines()[0]}") from None
    return int(lab[0]), float(conf[0])


# --- grids: full and refined ---------------------------------------------------------------------

def _full_map(ev: _PlaneEvaluator, coords: np.ndarray,
              progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate every grid point; labels[i, j] at (a=coords[j], b=coords[i])."""
    r = coords.size
    bb, aa = np.meshgrid(coords, coords, indexing="ij")
    a, b = aa.reshape(-1), bb.reshape(-1)
    labels = np.empty(r * r, dtype=np.int64)
    conf = np.empty(r * r, dtype=np.float32)
    step = max(ev.batch_size, 1)
    for s in range(0, r * r, step):
        labels[s:s + step], conf[s:s + step] = ev(a[s:s + step], b[s:s + step])
        if progress is not None:
            progress(min(1.0, (s + step) / (r * r)))
    return labels.reshape(r, r), conf.reshape(r, r)


def _level_indices(r: int, step: int) -> np.ndarray:
    idx = np.arange(0, r, step)
    return idx if idx[-1] == r - 1 else np.append(idx, r - 1)


def default_coarse_step(resolution: int) -> int:
    """The coarse grid's spacing in pixels: the largest power of two that leaves at least 8 blocks
    per side (16 at 201 x 201, 32 at 501 x 501; 1, i.e. no refinement, below 17 points)."""
    return int(2 ** max(0, math.floor(math.log2(max(1.0, (resolution - 1) / 8)))))


def _block_of(g: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel index 0..r-1, its block at a level with grid indices ``g`` and the
    fractional position inside it (blocks are [g[p], g[p+1]), the last one closed)."""
    i = np.arange(r)
    p = np.clip(np.searchsorted(g, i, side="right") - 1, 0, len(g) - 2)
    t = (i - g[p]) / (g[p + 1] - g[p])
    return p, t


def _infer_edge_midpoints(need: np.ndarray, g: np.ndarray, gp: np.ndarray, lab: np.ndarray,
                          conf: np.ndarray, known: np.ndarray) -> None:
    """Give the midpoint of a parent edge whose two ends agree the ends' label (and mean
    confidence) instead of evaluating it; clears those points from ``need`` (a mask over g x g)."""
    corner = np.isin(g, gp)
    need &= ~known[np.ix_(g, g)]
    for horizontal in (True, False):
        on_edge = corner[:, None] & ~corner[None, :] if horizontal else ~corner[:, None] & corner[None, :]
        sel = need & on_edge
        pi, pj = np.nonzero(sel)
        if pi.size == 0:
            continue
        if horizontal:
            ia, ja, ib, jb = g[pi], g[pj - 1], g[pi], g[pj + 1]
        else:
            ia, ja, ib, jb = g[pi - 1], g[pj], g[pi + 1], g[pj]
        la, lb = lab[ia, ja], lab[ib, jb]
        same = (la == lb) & (la >= 0) & known[ia, ja] & known[ib, jb]
        ti, tj = g[pi[same]], g[pj[same]]
        lab[ti, tj] = la[same]
        conf[ti, tj] = 0.5 * (conf[ia[same], ja[same]] + conf[ib[same], jb[same]])
        known[ti, tj] = True
        need[pi[same], pj[same]] = False


def _refined_map(ev: _PlaneEvaluator, coords: np.ndarray, coarse_step: int | None = None,
                 progress: Callable[[float], None] | None = None,
                 max_rounds: int = 8, infer_step: int = 2,
                 conf_tol: float | None = 0.2, conf_min_step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Boundary-refined evaluation of the grid.

    1. Evaluate a coarse grid (every ``coarse_step``-th point, plus the last row/column).
    2. Level by level, halving the spacing: split the blocks whose four corners disagree and
       evaluate the corners of their children, down to single pixels.
    3. A block whose corners agree is "uniform": its pixels get the corners' label and a bilinear
       interpolation of the corners' max-softmax. A uniform block is evaluated in full after all
       when a point evaluated for a neighbouring block (on their shared edge) has another label,
       i.e. when a boundary enters and leaves through one edge; this repeats until nothing changes.
    4. In the last levels (spacing <= ``infer_step`` pixels), the midpoint of an edge whose two
       ends agree takes their label instead of being evaluated (a boundary that crosses one
       2-pixel edge twice is below the grid's resolution); block centres are always evaluated.
    5. For the top softmax, blocks wider than ``conf_min_step`` pixels whose corners' top softmax
       differ by more than ``conf_tol`` are split too, so interpolated confidences (and the
       contour lines drawn from them) follow the model where it changes fast.
    Evaluated points always keep their evaluated values.
    """
    r = coords.size
    s0 = default_coarse_step(r) if coarse_step is None else int(coarse_step)
    if s0 < 1:
        raise ConfigError(f"coarse_step must be at least 1, got {coarse_step}")
    if s0 == 1 or r <= 3:
        return _full_map(ev, coords, progress)
    steps = []
    s = s0
    while s >= 1:
        steps.append(s)
        s //= 2
    if steps[-1] != 1:
        steps.append(1)
    grids = [_level_indices(r, s) for s in steps]
    nlev = len(steps)
    lab = np.full((r, r), -1, dtype=np.int64)
    conf = np.zeros((r, r), dtype=np.float32)
    known = np.zeros((r, r), dtype=bool)

    def evaluate(mask: np.ndarray) -> None:
        ii, jj = np.nonzero(mask & ~known)
        if ii.size:
            lab[ii, jj], conf[ii, jj] = ev(coords[jj], coords[ii])
            known[ii, jj] = True

    g0 = grids[0]
    m0 = np.zeros((r, r), dtype=bool)
    m0[np.ix_(g0, g0)] = True
    evaluate(m0)
    # Per level: active blocks (corners known, to decide) and split blocks (refined at the next level).
    active = [np.zeros((len(g) - 1, len(g) - 1), dtype=bool) for g in grids]
    split = [np.zeros_like(a) for a in active]
    active[0][:] = True
    parents = [None] + [np.searchsorted(grids[k - 1], grids[k][:-1], side="right") - 1
                        for k in range(1, nlev)]
    for k in range(nlev):
        g = grids[k]
        if k > 0:
            pk = parents[k]
            assert pk is not None
            active[k] = split[k - 1][np.ix_(pk, pk)]
            need = np.zeros((len(g), len(g)), dtype=bool)
            need[:-1, :-1] |= active[k]
            need[1:, :-1] |= active[k]
            need[:-1, 1:] |= active[k]
            need[1:, 1:] |= active[k]
            if steps[k] <= infer_step:
                _infer_edge_midpoints(need, g, grids[k - 1], lab, conf, known)
            full = np.zeros((r, r), dtype=bool)
            full[np.ix_(g, g)] = need
            evaluate(full)
        if k < nlev - 1:
            c = lab[np.ix_(g, g)]
            split[k] = active[k] & ((c[:-1, :-1] != c[1:, :-1]) | (c[:-1, :-1] != c[:-1, 1:])
                                    | (c[:-1, :-1] != c[1:, 1:]))
            if conf_tol is not None and steps[k] > conf_min_step:
                cc = conf[np.ix_(g, g)]
                quad = np.stack([cc[:-1, :-1], cc[1:, :-1], cc[:-1, 1:], cc[1:, 1:]])
                split[k] |= active[k] & ((quad.max(0) - quad.min(0)) > conf_tol)
        if progress is not None:
            progress(0.9 * (k + 1) / nlev)
    # Edge consistency: a uniform block must agree with every evaluated point on its closed
    # rectangle (points evaluated for a neighbour on their shared edge). A block that does not is
    # crossed by a boundary its corners missed: evaluate all its pixels, in one pass for all such
    # blocks, and check again (the newly evaluated pixels may reveal the next block).
    for _ in range(max_rounds):
        ki, kj = np.nonzero(known)
        kl = lab[ki, kj]
        todo = np.zeros((r, r), dtype=bool)
        for k in range(nlev - 1):
            g = grids[k]
            uniform = active[k] & ~split[k]
            if not uniform.any():
                continue
            c = lab[np.ix_(g, g)]
            p_all, _ = _block_of(g, r)
            bad = np.zeros_like(uniform)
            pi, pj = p_all[ki], p_all[kj]
            for di in (0, 1):
                qi = pi - di
                oki = (qi >= 0) if di == 0 else ((qi >= 0) & (g[np.clip(pi, 0, len(g) - 1)] == ki))
                for dj in (0, 1):
                    qj = pj - dj
                    okj = (qj >= 0) if dj == 0 else ((qj >= 0) & (g[np.clip(pj, 0, len(g) - 1)] == kj))
                    sel = oki & okj
                    qi_s, qj_s = qi[sel], qj[sel]
                    sel2 = uniform[qi_s, qj_s] & (kl[sel] != c[qi_s, qj_s])
                    bad[qi_s[sel2], qj_s[sel2]] = True
            for bp, bq in zip(*np.nonzero(bad), strict=True):
                todo[g[bp]:g[bp + 1] + 1, g[bq]:g[bq + 1] + 1] = True
        if not (todo & ~known).any():
            break
        evaluate(todo)
    # Fill the unevaluated pixels of uniform blocks: corner label, bilinear max-softmax.
    for k in range(nlev - 1):
        g = grids[k]
        uniform = active[k] & ~split[k]
        if not uniform.any():
            continue
        p, t = _block_of(g, r)
        mask = uniform[np.ix_(p, p)] & ~known
        if not mask.any():
            continue
        ii, jj = np.nonzero(mask)
        pi, pj, ti, tj = p[ii], p[jj], t[ii], t[jj]
        gi0, gi1, gj0, gj1 = g[pi], g[pi + 1], g[pj], g[pj + 1]
        lab[ii, jj] = lab[gi0, gj0]
        conf[ii, jj] = ((1 - ti) * (1 - tj) * conf[gi0, gj0] + (1 - ti) * tj * conf[gi0, gj1]
                        + ti * (1 - tj) * conf[gi1, gj0] + ti * tj * conf[gi1, gj1]).astype(np.float32)
        known[ii, jj] = True
    if not known.all():  # cannot happen by construction; evaluate rather than return holes
        evaluate(~known)
    if progress is not None:
        progress(1.0)
    return lab, conf


# --- distance to the boundary --------------------------------------------------------------------

def _ray_labels(ev: _PlaneEvaluator, theta: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return ev(radius * np.cos(theta), radius * np.sin(theta))[0]


def _shell_radii(r_start: float, r_end: float, h: float, grow_from: float = math.inf,
                 growth: float = 0.1) -> np.ndarray:
    """Radii r_start+h, r_start+2h, ... up to r_end (included); beyond ``grow_from`` the step is
    ``max(h, growth * r)`` (outside the figure's window the walk needs no pixel-fine steps)."""
    out: list[float] = []
    r = r_start
    while r < r_end - 1e-12 * max(1.0, r_end):
        r = min(r_end, r + (max(h, growth * r) if r >= grow_from else h))
        out.append(r)
    return np.asarray(out, dtype=float)


def _sweep(ev: _PlaneEvaluator, y0: int, theta: np.ndarray, r_start: float, r_end: float,
           h: float, grow_from: float = math.inf,
           first_chunk: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk outwards on all rays at once (radii from :func:`_shell_radii`) and stop at the first
    shell batch where some ray leaves class ``y0``; return those rays' brackets (lo, hi).
    Batches hold ``first_chunk`` shells, then twice as many each time (little overshoot when the
    crossing is near, few forward passes when it is far)."""
    empty = np.empty(0)
    if r_end <= r_start or theta.size == 0:
        return empty, empty, empty
    radii = _shell_radii(r_start, r_end, h, grow_from)
    max_chunk = max(1, ev.batch_size // theta.size)
    cos, sin = np.cos(theta), np.sin(theta)
    k0, chunk = 0, max(1, min(first_chunk, max_chunk))
    while k0 < radii.size:
        rr = radii[k0:k0 + chunk]
        lab = ev(np.outer(rr, cos).ravel(), np.outer(rr, sin).ravel())[0].reshape(rr.size, theta.size)
        out = lab != y0
        hit = out.any(axis=0)
        if hit.any():
            first = out.argmax(axis=0)[hit]
            hi = rr[first]
            prev = radii[k0 - 1] if k0 > 0 else r_start
            lo = np.where(first > 0, rr[np.maximum(first - 1, 0)], prev)
            return theta[hit], lo.astype(float), hi.astype(float)
        k0 += rr.size
        chunk = min(2 * chunk, max_chunk)
    return empty, empty, empty


def _narrow(ev: _PlaneEvaluator, y0: int, theta: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            rel_tol: float, sections: int = 8) -> tuple[float, float, float]:
    """Shrink brackets (label y0 at lo, another label at hi) until (hi-lo) <= rel_tol*hi.

    Multi-section: each pass evaluates ``sections`` evenly spaced points inside every bracket at
    once and keeps the interval before the first point of another class, so the bracket shrinks
    ``sections+1``-fold per forward pass (bisection with more points per pass: fewer passes) and
    tracks the first crossing on the ray. Rays whose bracket starts beyond the best one's end are
    dropped. Returns (midpoint, angle, hi) of the nearest crossing: the midpoint is within
    rel_tol/2 of the crossing on that ray.
    """
    theta, lo, hi = theta.copy(), lo.copy(), hi.copy()
    frac = np.arange(1, sections + 1) / (sections + 1)
    while True:
        keep = lo < hi.min()
        keep[np.argmin(hi)] = True
        theta, lo, hi = theta[keep], lo[keep], hi[keep]
        todo = np.nonzero((hi - lo) > rel_tol * hi)[0]
        if todo.size == 0:
            break
        pts = lo[todo, None] + (hi[todo] - lo[todo])[:, None] * frac[None, :]      # (T, S)
        out = (_ray_labels(ev, np.repeat(theta[todo], sections), pts.ravel()) != y0).reshape(pts.shape)
        first = np.where(out.any(axis=1), out.argmax(axis=1), sections)            # S: none inside
        new_hi = np.where(first < sections, pts[np.arange(todo.size), np.minimum(first, sections - 1)],
                          hi[todo])
        new_lo = np.where(first > 0, pts[np.arange(todo.size), np.maximum(first - 1, 0)], lo[todo])
        lo[todo], hi[todo] = new_lo, new_hi
    k = int(np.argmin(0.5 * (lo + hi)))
    return float(0.5 * (lo[k] + hi[k])), float(theta[k]), float(hi[k])


def _boundary_search(ev: _PlaneEvaluator, y0: int, extent: float, *, n_directions: int = 180,
                     n_shells: int = 64, max_factor: float = 4.0, rel_tol: float = 0.005,
                     start_radius: float = 0.0) -> tuple[float, float]:
    """Nearest in-plane point of another class than ``y0`` (the label at the origin).

    1. ``n_directions`` rays, walked outwards in shells of width ``max_factor*extent/n_shells``
       (beyond the window, ``r > extent``, of width ``max(that, r/10)``) from ``start_radius`` (0,
       or a radius a computed map shows to be inside the cell) up to ``max_factor*extent``; the
       first shell where some ray changes class brackets the crossing.
    2. Bisection (8-fold multi-section per forward pass, :func:`_narrow`) on the bracketing rays
       to ``rel_tol`` relative precision (the midpoint is returned, so the error is at most
       rel_tol/2 on that ray).
    3. Angular refinement: rays between the best one and its neighbours, twice.
    4. Check: a dense ring just inside the radius found must be all class ``y0``; a point of
       another class there (a thin protrusion between rays) is searched and bisected in turn.

    Returns:
        (distance, angle) with angle in radians from the ``u`` axis; (inf, nan) when no other class
        is met up to ``max_factor*extent``.
    """
    one_pass = 1 << 30  # first_chunk of a sweep done in one forward pass
    rmax = max_factor * extent
    h = rmax / n_shells
    theta = 2 * np.pi * np.arange(n_directions) / n_directions
    r0 = float(np.clip(start_radius, 0.0, rmax))
    th, lo, hi = _sweep(ev, y0, theta, r0, rmax, h, grow_from=extent)
    if th.size == 0:
        return math.inf, math.nan
    if r0 > 0:
        # The map said the disc of radius r0 is class y0; check the rays of the bracket from 0.
        th0, lo0, hi0 = _sweep(ev, y0, th, 0.0, float(hi.min()), max(h, float(hi.min()) / 16),
                               first_chunk=one_pass)
        if th0.size:
            th, lo, hi = np.concatenate([th, th0]), np.concatenate([lo, lo0]), np.concatenate([hi, hi0])
    d, t_best, hi_best = _narrow(ev, y0, th, lo, hi, rel_tol)
    dth = 2 * np.pi / n_directions
    for _ in range(2):
        cand = t_best + dth * np.array([-3, -2, -1, 1, 2, 3]) / 4
        th2, lo2, hi2 = _sweep(ev, y0, cand, 0.0, hi_best, max(h / 4, hi_best / 32), first_chunk=one_pass)
        if th2.size:
            d2, t2, h2 = _narrow(ev, y0, th2, lo2, hi2, rel_tol)
            if d2 < d:
                d, t_best, hi_best = d2, t2, h2
        dth /= 4
    n_ring = 3 * n_directions
    for _ in range(4):
        r_in = d * (1 - rel_tol)
        ring = 2 * np.pi * (np.arange(n_ring) + 0.5) / n_ring
        bad = ring[_ray_labels(ev, ring, np.full(n_ring, r_in)) != y0]
        if bad.size == 0:
            break
        th3, lo3, hi3 = _sweep(ev, y0, bad[:64], 0.0, r_in, max(h / 4, r_in / 32), first_chunk=one_pass)
        if th3.size == 0:
            break
        d3, t3, h3 = _narrow(ev, y0, th3, lo3, hi3, rel_tol)
        if d3 < d:
            d, t_best, hi_best = d3, t3, h3
        else:
            break
    return d, float(t_best % (2 * np.pi))


def boundary_distance(model: nn.Module, plane: Plane, extent: float, *,
                      device: str | torch.device | None = None, batch_size: int | None = None,
                      n_directions: int = 180, rel_tol: float = 0.005, max_factor: float = 4.0,
                      return_angle: bool = False) -> float | tuple[float, float]:
    """In-plane distance from the plane's origin to the nearest point of another class.

    "Another class" means another label than the model predicts at the origin. The search is not
    limited to a grid: ``n_directions`` rays are walked outwards up to ``max_factor * extent``,
    the first class change on each ray is bracketed and refined by bisection (several points per
    pass) to ``rel_tol`` relative precision (0.5% by default), the best direction is refined in
    angle, and a dense ring just inside the result is checked to be of the origin's class. This is
    the radius of the black circle in the paper's Fig. 1/S1/S2.

    Args:
        model: takes [0, 1] images (not clipped here), returns logits.
        plane: the plane (coordinates in input-space L2 units).
        extent: the figure's half width; the search goes up to ``max_factor * extent``.
        return_angle: also return the direction of the nearest point (radians from ``u``).

    Returns:
        The distance (``math.inf`` when no other class is found up to ``max_factor * extent``),
        or ``(distance, angle)`` with ``return_angle``.
    """
    check_grid(extent, MIN_RESOLUTION)
    ev = _PlaneEvaluator(model, plane, device, batch_size)
    y0, _ = _check_model_input(model, ev, 0)
    d, angle = _boundary_search(ev, y0, float(extent), n_directions=n_directions, rel_tol=rel_tol,
                                max_factor=max_factor)
    return (d, angle) if return_angle else d


# --- cross sections ------------------------------------------------------------------------------

@dataclass(eq=False)
class CrossSection:
    """Labels and confidences of M models on one R x R grid of a plane.

    Attributes:
        plane: the plane.
        extent: half width of the square, in input-space L2 units.
        coords: (R,) grid coordinates, ``linspace(-extent, extent, R)``, along both u and v.
        labels: (M, R, R) int64; ``labels[m, i, j]`` is model m's class at
            ``origin + coords[j] * u + coords[i] * v`` (rows = v, columns = u).
        confidence: (M, R, R) float32 top softmax probability (interpolated where not evaluated).
        boundary_distance: (M,) in-plane distance from the origin to the nearest point of another
            class (to 0.5% relative precision, searched up to 4 * extent, inf if none).
        boundary_angle: (M,) direction of that nearest point, radians from the u axis (nan if none).
        origin_label: (M,) class each model predicts at the origin.
        origin_confidence: (M,) top softmax there.
        evaluations: (M,) model evaluations spent on the map (R*R for a full grid).
        seconds: wall time of the whole computation.
        refined: whether the map was boundary-refined.
        num_classes: number of logits of the models (the largest, if they differ).
    """

    plane: Plane
    extent: float
    coords: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    boundary_distance: np.ndarray
    boundary_angle: np.ndarray
    origin_label: np.ndarray
    origin_confidence: np.ndarray
    evaluations: np.ndarray
    seconds: float = 0.0
    refined: bool = True
    num_classes: int = 10

    @property
    def resolution(self) -> int:
        return int(self.coords.size)

    @property
    def center_index(self) -> tuple[int, int]:
        """Grid index (row, column) nearest to the origin."""
        c = int(np.argmin(np.abs(self.coords)))
        return c, c

    def cell_mask(self, m: int) -> np.ndarray:
        """(R, R) bool: the connected region of the origin's class that contains the origin."""
        return _cell_mask(self.labels[m], self.center_index)

    def metrics(self, m: int) -> dict[str, float]:
        """:func:`cell_metrics` of model m's map plus its boundary distance."""
        out = cell_metrics(self.labels[m], self.center_index)
        out["radius"] = float(self.boundary_distance[m])
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The NPZ contract: origin, u, v, coords, labels, confidence, boundary_distance."""
        out = self.plane.arrays()
        out.update(coords=self.coords.astype(np.float64), labels=self.labels.astype(np.int64),
                   confidence=self.confidence.astype(np.float32),
                   boundary_distance=self.boundary_distance.astype(np.float64))
        return out

    def npz_bytes(self) -> bytes:
        """:meth:`arrays` plus boundary_angle, origin_label and extent, as a compressed NPZ file."""
        import io

        arrays = self.arrays()
        arrays.update(boundary_angle=self.boundary_angle.astype(np.float64),
                      origin_label=self.origin_label.astype(np.int64),
                      extent=np.float64(self.extent))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`npz_bytes` to ``path`` atomically."""
        from .fileio import atomic_write_bytes

        atomic_write_bytes(path, self.npz_bytes())


def cross_section(models: nn.Module | Sequence[nn.Module], plane: Plane, extent: float = 1.0,
                  resolution: int = 201, *, device: str | torch.device | None = None,
                  batch_size: int | None = None, refine: bool = True, coarse_step: int | None = None,
                  boundary: bool = True, n_directions: int = 180,
                  on_event: EventFn | None = None) -> CrossSection:
    """Class and top-softmax maps of one or more models on a square grid of a plane.

    The grid is ``coords = linspace(-extent, extent, resolution)`` along ``u`` (columns) and ``v``
    (rows). Points outside [0, 1] are evaluated as they are (no clipping). With ``refine=True``
    (the default) only a coarse grid and the blocks whose corners disagree are evaluated,
    recursively (see ``_refined_map``); labels agree with a full evaluation on all but a few
    pixels (thin slivers smaller than the coarse spacing can be missed) at a small fraction of the
    cost. The top softmax is bilinearly interpolated inside blocks of one class.

    Args:
        models: one model or a sequence; each takes [0, 1] images of the plane's shape.
        plane: from :func:`random_plane`, :func:`adversarial_plane` or :func:`sample_plane`.
        extent: half width of the square in input-space L2 units (> 0).
        resolution: points per side, 11..1001.
        device: where to evaluate (default: each model's own device).
        batch_size: points per forward pass (default: sized from the device's memory).
        refine: boundary refinement (False: evaluate every point).
        coarse_step: spacing of the coarse grid in pixels (default: :func:`default_coarse_step`).
        boundary: also compute :func:`boundary_distance` (else inf, nan).
        n_directions: rays of the boundary search.
        on_event: progress callback, called with
            ``{"event": "progress", "stage": "map"|"boundary", "model": m, "models": M, "fraction": f}``.

    Raises:
        ConfigError: extent/resolution out of range, or no model.
        ShapeError: a model cannot take the plane's inputs, or returns no (batch, classes) logits.
    """
    check_grid(extent, resolution)
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    if not model_list:
        raise ConfigError("give at least one model")
    t0 = time.perf_counter()
    extent, resolution = float(extent), int(resolution)
    coords = np.linspace(-extent, extent, resolution)
    nm = len(model_list)
    evs = [_PlaneEvaluator(m, plane, device, batch_size) for m in model_list]
    origin = [_check_model_input(m, ev, k) for k, (m, ev) in enumerate(zip(model_list, evs, strict=True))]
    labels = np.empty((nm, resolution, resolution), dtype=np.int64)
    conf = np.empty((nm, resolution, resolution), dtype=np.float32)
    dist = np.full(nm, math.inf)
    angle = np.full(nm, math.nan)
    evals = np.zeros(nm, dtype=np.int64)

    def emit(stage: str, m: int, fraction: float) -> None:
        if on_event is not None:
            on_event({"event": "progress", "stage": stage, "model": m, "models": nm,
                      "fraction": float(fraction)})

    for m, ev in enumerate(evs):
        emit("map", m, 0.0)
        start = ev.count
        fn = _refined_map if refine else _full_map

        def prog(f: float, m: int = m) -> None:
            emit("map", m, f)

        if refine:
            labels[m], conf[m] = fn(ev, coords, coarse_step, prog)  # type: ignore[operator]
        else:
            labels[m], conf[m] = fn(ev, coords, prog)  # type: ignore[operator]
        evals[m] = ev.count - start
        if boundary:
            emit("boundary", m, 0.0)
            y0 = origin[m][0]
            start_radius = _inside_radius(labels[m], coords, y0)
            dist[m], angle[m] = _boundary_search(ev, y0, extent, n_directions=n_directions,
                                                 start_radius=start_radius)
            emit("boundary", m, 1.0)
    return CrossSection(plane=plane, extent=extent, coords=coords, labels=labels, confidence=conf,
                        boundary_distance=dist, boundary_angle=angle,
                        origin_label=np.array([o[0] for o in origin], dtype=np.int64),
                        origin_confidence=np.array([o[1] for o in origin], dtype=np.float32),
                        evaluations=evals, seconds=time.perf_counter() - t0, refined=refine,
                        num_classes=max(ev.num_classes for ev in evs))


def _inside_radius(labels: np.ndarray, coords: np.ndarray, y0: int) -> float:
    """A radius the map shows to be inside the origin's class: two pixels short of the nearest
    pixel of another class (or of the map's inscribed disc). Used to start the boundary search."""
    pixel = float(coords[1] - coords[0])
    bb, aa = np.meshgrid(coords, coords, indexing="ij")
    rr = np.hypot(aa, bb)
    other = labels != y0
    nearest = float(rr[other].min()) if other.any() else float(coords[-1])
    return max(0.0, nearest - 2 * pixel)


def predict(models: nn.Module | Sequence[nn.Module], x: Any, *, device: str | torch.device | None = None,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Class and top softmax of each model on images ``x`` ((C, H, W) or (N, C, H, W); not clipped).

    Returns:
        ``(labels, confidence)``, each of shape (M, N).

    Raises:
        ShapeError: a model cannot take these images.
    """
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
    if xt.dim() == 3:
        xt = xt.unsqueeze(0)
    if xt.dim() != 4:
        raise ShapeError(f"expected (C, H, W) or (N, C, H, W) images, got shape {tuple(xt.shape)}")
    labels = np.empty((len(model_list), xt.shape[0]), dtype=np.int64)
    conf = np.empty((len(model_list), xt.shape[0]), dtype=np.float32)
    for m, model in enumerate(model_list):
        net, dev = _prepare(model, device)
        with torch.inference_mode():
            for s in range(0, xt.shape[0], batch_size):
                try:
                    logits = net(xt[s:s + batch_size].to(dev))
                except RuntimeError as exc:
                    raise ShapeError(f"model {m} cannot take images of shape {tuple(xt.shape[1:])}: "
                                     f"{str(exc).splitlines()[0]}") from None
                p, k = torch.softmax(logits.float(), dim=1).max(dim=1)
                labels[m, s:s + batch_size] = k.cpu().numpy()
                conf[m, s:s + batch_size] = p.cpu().numpy()
    return labels, conf


# --- full-space comparison -----------------------------------------------------------------------

def minimal_adversarial_distance(model: nn.Module, x0: Any, y0: int | Sequence[int] | None = None, *,
                                 attack: Literal["fmn", "deepfool"] = "fmn", steps: int | None = None,
                                 device: str | torch.device | None = None) -> float | np.ndarray:
    """L2 distance to the nearest adversarial example a minimisation attack finds (full input space).

    ``"deepfool"``: foolbox 3's L2 DeepFool (Moosavi-Dezfooli et al. 2016). ``"fmn"`` (default):
    L2 Fast Minimum-Norm (Pintor et al. 2021) started from DeepFool's adversarial example (after a
    binary search towards the sample), so it is never farther than DeepFool; started from the
    sample itself, foolbox's FMN can stall on the boundary of nearly linear models. Bounds are
    (0, 1): unlike the in-plane radius, the adversarial example is a valid image. The result is an
    upper bound on the true minimal distance; a 2-D plane through the sample cannot be nearer than
    the full space, so compare it with :func:`boundary_distance`.

    Args:
        model: takes [0, 1] images, returns logits.
        x0: one image (C, H, W) or a batch (N, C, H, W).
        y0: label(s) to move away from; default the model's own prediction (as the in-plane radius).
        attack: ``"fmn"`` or ``"deepfool"``.
        steps: iterations of the attack (default: foolbox's, 100 for FMN and 50 for DeepFool).

    Returns:
        A float for one image (inf if no adversarial example was found), else an (N,) array; 0 where
        the model already misclassifies ``y0``.
    """
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import foolbox as fb

    if attack not in ("fmn", "deepfool"):
        raise ConfigError(f"unknown minimisation attack {attack!r}: use fmn or deepfool")
    x = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0).detach().float()
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ShapeError(f"expected (C, H, W) or (N, C, H, W) images, got {tuple(x.shape)}")
    net, dev = _prepare(model, device)
    x = x.to(dev)
    with torch.inference_mode():
        pred = net(x).argmax(1)
    if y0 is None:
        y = pred.clone()
    else:
        y = torch.as_tensor(np.atleast_1d(np.asarray(y0)), dtype=torch.long, device=dev)
        if y.numel() != x.shape[0]:
            raise ShapeError(f"{y.numel()} labels for {x.shape[0]} images")
    fmodel = fb.PyTorchModel(net, bounds=(0, 1), device=dev)

    def distances(adv: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            ok = (net(adv).argmax(1) != y).cpu().numpy()
        d = (adv - x).flatten(1).norm(dim=1).double().cpu().numpy()
        d[~ok] = math.inf
        return d

    kwargs: dict[str, Any] = {} if steps is None or attack == "fmn" else {"steps": int(steps)}
    with torch.enable_grad():
        _, adv, _ = fb.attacks.L2DeepFoolAttack(**kwargs)(fmodel, x, y, epsilons=None)
    dist = distances(adv)
    if attack == "fmn":
        start = torch.where(torch.as_tensor(np.isfinite(dist), device=dev).view(-1, 1, 1, 1), adv, x)
        fmn = fb.attacks.L2FMNAttack(**({} if steps is None else {"steps": int(steps)}))
        found = np.isfinite(dist)
        with torch.enable_grad():
            if found.any():  # refine DeepFool's points (FMN binary-searches towards x first)
                idx = torch.as_tensor(np.nonzero(found)[0], device=dev)
                sub = fb.criteria.Misclassification(y[idx])
                _, adv_f, _ = fmn(fmodel, x[idx], sub, epsilons=None, starting_points=start[idx])
                adv[idx] = adv_f
            if (~found).any():
                idx = torch.as_tensor(np.nonzero(~found)[0], device=dev)
                _, adv_f, _ = fmn(fmodel, x[idx], y[idx], epsilons=None)
                adv[idx] = adv_f
        dist = np.minimum(dist, distances(adv))
    dist[(pred != y).cpu().numpy()] = 0.0
    return float(dist[0]) if single else dist


# --- cell metrics and statistics -----------------------------------------------------------------

def _cell_mask(labels: np.ndarray, center: tuple[int, int]) -> np.ndarray:
    from scipy import ndimage

    comp, _ = ndimage.label(labels == labels[center])
    return comp == comp[center]


def cell_metrics(labels: np.ndarray, center: tuple[int, int] | None = None) -> dict[str, float]:
    """Area and fragmentation of one (R, R) label map.

    Returns:
        ``area_fraction``: fraction of the map covered by the sample's cell (the 4-connected region
        of its class that contains ``center``, default the middle pixel); ``regions``: number of
        4-connected single-class regions in the map (1 = the whole window is one cell; many =
        fragmented); ``classes``: number of classes present.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ShapeError(f"expected a 2-D label map, got shape {labels.shape}")
    if center is None:
        center = (labels.shape[0] // 2, labels.shape[1] // 2)
    regions = 0
    present = np.unique(labels)
    for k in present:
        regions += int(ndimage.label(labels == k)[1])
    return {"area_fraction": float(_cell_mask(labels, center).mean()), "regions": float(regions),
            "classes": float(present.size)}


PlaneKind = Literal["random", "adversarial"]


def cell_statistics(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, n: int | None = None,
                    planes: PlaneKind = "random", *, extent: float = 1.0, resolution: int = 51,
                    seed: int = 0, names: Sequence[str] | None = None,
                    device: str | torch.device | None = None, batch_size: int | None = None,
                    on_event: EventFn | None = None) -> list[dict[str, Any]]:
    """Decision-cell statistics over test samples: the quantitative form of the paper's claim that
    Jacobian regularization enlarges decision cells.

    For each of the first ``n`` samples: on ``planes="random"`` one random plane (seed ``seed + k``)
    shared by all models; on ``planes="adversarial"`` each model's own adversarial plane (its FGSM
    direction as ``u``, a random ``v``). On each plane: the in-plane radius
    (:func:`boundary_distance`, up to 4 * extent), the cell's area fraction of the window and the
    number of single-class regions (:func:`cell_metrics`).

    Returns:
        One dict per model: ``name``, ``planes``, ``samples``, ``accuracy`` (on those samples),
        ``radius_mean`` (over finite radii), ``radius_median`` (inf counts as large),
        ``no_boundary`` (how many radii are inf), ``area_fraction_mean``, ``regions_mean``,
        ``regions_median``, and the per-sample lists ``radius``, ``area_fraction``, ``regions``.
    """
    if planes not in ("random", "adversarial"):
        raise ConfigError(f"planes must be 'random' or 'adversarial', got {planes!r}")
    check_grid(extent, resolution)
    model_list = list(models)
    if not model_list:
        raise ConfigError("give at least one model")
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    total = x.shape[0] if n is None else int(n)
    if total < 1:
        raise ConfigError(f"statistics need at least one sample, got n={n}")
    if total > x.shape[0]:
        raise ConfigError(f"asked for statistics over {total} samples, only {x.shape[0]} given")
    names = list(names) if names is not None else [f"model {k}" for k in range(len(model_list))]
    per = [{"radius": [], "area_fraction": [], "regions": [], "correct": []} for _ in model_list]
    for k in range(total):
        if planes == "random":
            plane = random_plane(x[k], seed=seed + k)
            cs = cross_section(model_list, plane, extent, resolution, device=device, batch_size=batch_size)
            sections = [(m, cs, m) for m in range(len(model_list))]
        else:
            sections = []
            for m, model in enumerate(model_list):
                plane = adversarial_plane(x[k], int(y[k]), model, None, seed=seed + k, device=device)
                sections.append((m, cross_section([model], plane, extent, resolution, device=device,
                                                  batch_size=batch_size), 0))
        for m, cs, idx in sections:
            met = cs.metrics(idx)
            per[m]["radius"].append(met["radius"])
            per[m]["area_fraction"].append(met["area_fraction"])
            per[m]["regions"].append(met["regions"])
            per[m]["correct"].append(int(cs.origin_label[idx]) == int(y[k]))
        if on_event is not None:
            on_event({"event": "progress", "stage": f"stats-{planes}", "done": k + 1, "total": total,
                      "fraction": (k + 1) / total})
    out = []
    for m, p in enumerate(per):
        r = np.asarray(p["radius"], dtype=float)
        finite = r[np.isfinite(r)]
        out.append({
            "name": names[m], "planes": planes, "samples": total, "extent": float(extent),
            "accuracy": float(np.mean(p["correct"])),
            "radius_mean": float(finite.mean()) if finite.size else math.inf,
            "radius_median": float(np.median(r)),
            "no_boundary": int((~np.isfinite(r)).sum()),
            "area_fraction_mean": float(np.mean(p["area_fraction"])),
            "regions_mean": float(np.mean(p["regions"])),
            "regions_median": float(np.median(p["regions"])),
            "radius": [float(v) for v in r], "area_fraction": list(p["area_fraction"]),
            "regions": list(p["regions"]),
        })
    return out


# --- command line: python -m jacreg cells ---------------------------------------------------------

def add_cells_arguments(parser: Any) -> None:
    """Arguments of ``python -m jacreg cells`` (see DESIGN.md, Command line)."""
    p = parser
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="one or more checkpoints (same input shape)")
    p.add_argument("--sample", type=int, default=0, help="index of the test sample at the centre (default 0)")
    p.add_argument("--plane", choices=["random", "adversarial", "samples"], default="random",
                   help="random (seeded), adversarial (FGSM directions of the first two models) or "
                        "samples (through --sample and the two --through samples)")
    p.add_argument("--through", default=None, metavar="J,K",
                   help="samples plane: the two other sample indices (default I+1,I+2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random plane / random completion")
    p.add_argument("--extent", type=float, default=1.0, help="half width in L2 units of [0,1] pixels")
    p.add_argument("--resolution", type=int, default=201,
                   help=f"points per side ({MIN_RESOLUTION}..{MAX_RESOLUTION})")
    p.add_argument("--npz", default=None, metavar="FILE", help="write the cross section (npz)")
    p.add_argument("--png", default=None, metavar="FILE", help="write the figure (png)")
    p.add_argument("--stats", type=int, default=0, metavar="N",
                   help="also print cell statistics over the first N test samples "
                        "(random and adversarial planes)")
    p.add_argument("--stats-resolution", type=int, default=51, help="grid of the statistics' maps")
    p.add_argument("--min-adversarial", choices=["none", "fmn", "deepfool"], default="none",
                   help="also report the full-space distance to the nearest adversarial (foolbox, L2)")
    p.add_argument("--full", action="store_true", help="evaluate every grid point (no refinement)")
    p.add_argument("--dataset", default=None, help="default: the first checkpoint's dataset")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")


def _progress_printer(desc: str) -> EventFn:
    """An on_event callback that draws tqdm bars on stderr (one per stage and model)."""
    from tqdm import tqdm

    state: dict[str, Any] = {"key": None, "bar": None}

    def on_event(ev: dict[str, Any]) -> None:
        key = (ev.get("stage"), ev.get("model"))
        if key != state["key"]:
            if state["bar"] is not None:
                state["bar"].close()
            label = f"{desc} {ev.get('stage')}"
            if ev.get("model") is not None:
                label += f" model {int(ev['model']) + 1}/{ev.get('models')}"
            state["bar"] = tqdm(total=100, desc=label, leave=False, file=sys.stderr,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
            state["key"] = key
        bar = state["bar"]
        bar.n = round(100 * float(ev.get("fraction", 0.0)))
        bar.refresh()
        if ev.get("fraction", 0.0) >= 1.0 and ev.get("stage") != "map":
            bar.close()
            state["bar"], state["key"] = None, None

    return on_event


def _parse_indices(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def run_cells_command(args: Any) -> int:
    """``python -m jacreg cells``: compute one cross section (and optional statistics), write
    ``--npz``/``--png``/``--json`` and print a summary. User errors raise JacregError (exit 2)."""
    from pathlib import Path

    from .checkpoints import load_checkpoint
    from .data import load_dataset

    check_grid(args.extent, args.resolution)
    if args.stats < 0:
        raise ConfigError(f"--stats must be a number of samples >= 0, got {args.stats}")
    if args.stats:
        check_grid(args.extent, args.stats_resolution)
    if args.sample < 0:
        raise ConfigError(f"--sample must be a test-sample index >= 0, got {args.sample}")
    through = [args.sample + 1, args.sample + 2]
    if args.plane == "samples" and args.through:
        through = _parse_indices(args.through, "--through")
        if len(through) != 2:
            raise ConfigError(f"--through takes two sample indices J,K, got {args.through!r}")
        if min(through) < 0:
            raise ConfigError("--through indices must be >= 0")
    dev = pick(args.device)
    models, metas, names = [], [], []
    for path in args.checkpoints:
        if not Path(path).is_file():
            from .errors import CheckpointError

            raise CheckpointError(f"no such checkpoint: {path}")
        model, meta = load_checkpoint(path, device=str(dev))
        models.append(model)
        metas.append(meta)
        names.append(str(meta.get("name") or Path(path).stem))
    shapes = [tuple(m.get("input_shape") or ()) for m in metas]
    if len({s for s in shapes if s}) > 1:
        listing = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ShapeError(f"the models take different input shapes ({listing}); "
                         "compare models of one dataset on one plane")
    dataset = args.dataset or metas[0].get("dataset")
    if not dataset:
        raise ConfigError("the checkpoint names no dataset: pass --dataset")
    need = max([args.sample, args.stats - 1] + (through if args.plane == "samples" else [])) + 1
    x, y = load_dataset(dataset, split="test", limit=need, data_root=args.data_root)
    if args.sample >= x.shape[0] or (args.plane == "samples" and max(through) >= x.shape[0]):
        bad = args.sample if args.sample >= x.shape[0] else max(through)
        raise ConfigError(f"sample {bad} does not exist: {dataset} has {x.shape[0]} test samples "
                          f"(indices 0..{x.shape[0] - 1})")
    if args.stats > x.shape[0]:
        raise ConfigError(f"--stats {args.stats}: {dataset} has only {x.shape[0]} test samples")
    if shapes[0] and tuple(x.shape[1:]) != shapes[0]:
        raise ShapeError(f"{dataset} images have shape {tuple(x.shape[1:])} but the models take "
                         f"{shapes[0]}; pass the models' --dataset")
    x0, y0 = x[args.sample], int(y[args.sample])
    if args.plane == "random":
        plane = random_plane(x0, seed=args.seed)
    elif args.plane == "adversarial":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plane = adversarial_plane(x0, y0, models[0], models[1] if len(models) > 1 else None,
                                      seed=args.seed, device=dev)
    else:
        plane = sample_plane(x0, x[through[0]], x[through[1]])
    if plane.note:
        print(f"note: {plane.note}", file=sys.stderr)
    cs = cross_section(models, plane, args.extent, args.resolution, device=dev, batch_size=args.batch_size,
                       refine=not args.full, on_event=_progress_printer("cells"))
    min_adv = None
    if args.min_adversarial != "none":
        min_adv = [minimal_adversarial_distance(m, x0, attack=args.min_adversarial, device=dev)
                   for m in models]
    if args.npz:
        cs.save_npz(args.npz)
    if args.png:
        from .fileio import atomic_write_bytes
        from .plots import cells_png

        atomic_write_bytes(args.png, cells_png(cs, names=names, title=f"{dataset} test sample "
                                               f"{args.sample} (label {y0}), {plane.kind} plane"))
    print(f"{dataset} test sample {args.sample} (label {y0}); {plane.kind} plane, seed {args.seed}; "
          f"extent {args.extent:g}, {args.resolution}x{args.resolution}; {cs.seconds:.2f} s")
    rows = []
    for m, name in enumerate(names):
        met = cs.metrics(m)
        row = {"name": name, "prediction": int(cs.origin_label[m]),
               "confidence": float(cs.origin_confidence[m]),
               "boundary_distance": float(cs.boundary_distance[m]),
               "area_fraction": met["area_fraction"], "regions": int(met["regions"]),
               "evaluations": int(cs.evaluations[m])}
        if min_adv is not None:
            row["min_adversarial_distance"] = float(min_adv[m])
        rows.append(row)
        radius = f"{row['boundary_distance']:.4g}" if math.isfinite(row["boundary_distance"]) else \
            f"> {4 * args.extent:g} (none found)"
        extra = f", nearest adversarial ({args.min_adversarial}) {row['min_adversarial_distance']:.4g}" \
            if min_adv is not None else ""
        print(f"  {name}: predicts {row['prediction']} (p={row['confidence']:.3f}), "
              f"in-plane radius {radius}, "
              f"cell {100 * row['area_fraction']:.1f}% of the window, {row['regions']} regions, "
              f"{row['evaluations']} evaluations{extra}")
    stats: dict[str, list[dict[str, Any]]] = {}
    if args.stats:
        for kind in ("random", "adversarial"):
            stats[kind] = cell_statistics(models, x[:args.stats], y[:args.stats], args.stats, kind,
                                          extent=args.extent, resolution=args.stats_resolution,
                                          seed=args.seed, names=names, device=dev,
                                          batch_size=args.batch_size,
                                          on_event=_progress_printer("statistics"))
            print(f"cell statistics over {args.stats} samples, {kind} planes "
                  f"(extent {args.extent:g}, {args.stats_resolution}x{args.stats_resolution}):")
            print(f"  {'model':<24} {'radius mean':>12} {'median':>9} {'none found':>10} "
                  f"{'area frac':>9} {'regions':>8} {'accuracy':>8}")
            for s in stats[kind]:
                print(f"  {s['name'][:24]:<24} {s['radius_mean']:>12.4g} {s['radius_median']:>9.4g} "
                      f"{s['no_boundary']:>10d} {s['area_fraction_mean']:>9.3f} {s['regions_mean']:>8.2f} "
                      f"{s['accuracy']:>8.3f}")
    if args.json:
        from .cli import write_json

        write_json(args.json, _finite_or_none({
            "dataset": dataset, "sample": args.sample, "label": y0, "plane": plane.kind,
            "note": plane.note, "seed": args.seed, "extent": args.extent, "resolution": args.resolution,
            "seconds": cs.seconds, "models": rows, "npz": args.npz, "png": args.png,
            "stats": stats,
        }))
    return 0


def _finite_or_none(obj: Any) -> Any:
    """JSON has no inf/nan: write them as null (an infinite radius means "no boundary found")."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj
