"""Label maps on a square grid of a plane: every point, or boundary-refined (adaptive).

The refined map evaluates a coarse grid first, then only the blocks whose corners disagree,
recursively, down to single pixels; labels agree with a full evaluation on all but a few pixels
(thin slivers smaller than the coarse spacing can be missed) at a small fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from .evaluate import PlaneEvaluator

__all__ = ["default_coarse_step", "full_map", "refined_map"]

Progress = Callable[[float], None]


def full_map(ev: PlaneEvaluator, coords: np.ndarray,
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


def refined_map(ev: PlaneEvaluator, coords: np.ndarray, coarse_step: int | None = None,
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
        return full_map(ev, coords, progress)
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
