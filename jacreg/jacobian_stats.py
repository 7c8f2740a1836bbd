"""The Jacobian of a trained model on test data (the paper's Fig. 2 for any model).

* :func:`norms_by_class`: exact per-sample ‖J(x)‖_F (J = d logits / d normalised input, the
  paper's convention, as in Table 1), summarised per class.
* :func:`projection_spread`: the random-projection estimator of Algorithm 1 (what training uses,
  :func:`jacreg.regularizer.jacobian_penalty`) with n_proj = 1, 3, ... drawn many times, against
  the exact value: the estimator is unbiased, E[C ‖vᵀJ‖²] = ‖J‖²_F, and the relative variance of one
  projection is at most 2(C-1)/(C+2) per sample (the paper's variance analysis), shrinking as
  1/n_proj.
* :func:`estimator_timing`: seconds per training-like step (forward, CE + lambda R, gradient with
  respect to the parameters) for each estimator against plain CE, on a given device.

The model is never mutated: gradients are taken with ``torch.autograd.grad``, so no ``.grad`` is
written, and the model's train/eval mode is left as it was. Figures are at the end of the module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, ShapeError
from .events import EventFn
from .regularizer import jacobian_norms, jacobian_penalty, resolve_method


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    if p is not None:
        return p.device
    b = next(iter(model.buffers()), None)
    return b.device if b is not None else torch.device("cpu")


def _check_batch(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    if x.ndim < 2 or len(x) == 0:
        raise ShapeError(f"expected a non-empty batch of inputs (N, ...), got shape {tuple(x.shape)}")
    if y is not None and len(y) != len(x):
        raise ShapeError(f"{len(x)} inputs but {len(y)} labels")


def relative_variance_bound(num_classes: int, method: str = "vjp") -> float:
    """Upper bound on the relative variance of one random projection, for one sample.

    ``"vjp"`` (Algorithm 1, v uniform on the sphere S^(C-1)): 2(C-1)/(C+2). ``"jvp"`` (Gaussian
    tangents u in input space, ``||J u||^2``): Var = 2 tr((J Jᵀ)²) <= 2 ||J||_F^4, so 2. Resolve
    ``"auto"`` first with :func:`jacreg.regularizer.resolve_method`.
    """
    if method == "vjp":
        c = int(num_classes)
        return 2.0 * (c - 1) / (c + 2)
    return 2.0


# --- norms per class ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NormStats:
    """Exact ‖J(x)‖_F of every sample and a per-class summary.

    Attributes:
        norms: (N,) exact Frobenius norms (w.r.t. the normalised input when ``normalized``).
        labels: (N,) true labels; predictions: (N,) the model's classes.
        class_names: label names (index = label).
        per_class: one dict per class present: class, name, count, mean, median, std, accuracy.
        normalized: which input the derivative was taken against.
    """

    norms: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    class_names: tuple[str, ...]
    per_class: list[dict[str, Any]]
    normalized: bool

    @property
    def mean(self) -> float:
        return float(self.norms.mean())

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())


def norms_by_class(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   class_names: Sequence[str] | None = None, normalized: bool = True,
                   batch_size: int = 250, on_event: EventFn | None = None) -> NormStats:
    """Exact per-sample ‖J(x)‖_F on a test batch, summarised per class.

    Args:
        model: a classifier returning logits (kept in its mode; not modified).
        x: inputs (N, C, H, W) in [0, 1]; moved to the model's device in batches.
        y: true labels (N,).
        class_names: names of the labels (default: their numbers).
        normalized: derivative with respect to the normalised input (the paper's convention, what
            training's JR term and ``eval`` use) rather than the [0, 1] pixels.
        batch_size: samples per Jacobian computation.
        on_event: progress callback, ``{"event": "progress", "done": n, "total": N}``.

    Returns:
        :class:`NormStats`.
    """
    _check_batch(x, y)
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    dev = _device_of(model)
    norms, preds = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        with torch.no_grad():
            preds.append(model(xb).argmax(1).cpu())
        norms.append(jacobian_norms(model, xb, normalized=normalized).detach().float().cpu())
        if on_event is not None:
            on_event({"event": "progress", "done": min(i + batch_size, len(x)), "total": len(x)})
    n = torch.cat(norms).numpy().astype(np.float64)
    p = torch.cat(preds).numpy()
    lab = y.detach().cpu().numpy()
    num = int(max(lab.max(), p.max())) + 1
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num))
    per_class = []
    for c in sorted(set(lab.tolist())):
        m = lab == c
        v = n[m]
        per_class.append({"class": int(c), "name": names[c] if c < len(names) else str(c),
                          "count": int(m.sum()), "mean": float(v.mean()), "median": float(np.median(v)),
                          "std": float(v.std()), "accuracy": float((p[m] == c).mean())})
    return NormStats(norms=n, labels=lab, predictions=p, class_names=names, per_class=per_class,
                     normalized=normalized)


# --- random projections against the exact value ------------------------------------------------

@dataclass(frozen=True)
class ProjectionSpread:
    """Random-projection estimates of the mean squared Jacobian norm against the exact value.

    Everything is in units of ‖J‖²_F (twice the regulariser R = 1/2 mean_b ‖J(x_b)‖²_F), with
    respect to the normalised input.

    Attributes:
        exact_batch: exact mean over the batch of ‖J(x_b)‖²_F.
        batch: n_proj -> (repeats,) estimates of ``exact_batch`` (one draw of the estimator on the
            whole batch each, as one training step sees it).
        exact_samples: (S,) exact ‖J‖²_F of the first S samples.
        samples: n_proj -> (repeats, S) estimates for each of those samples alone.
        num_classes: C (sets the variance bound).
        method: the estimator (``jacobian_penalty``'s method).
    """

    exact_batch: float
    batch: dict[int, np.ndarray]
    exact_samples: np.ndarray
    samples: dict[int, np.ndarray]
    num_classes: int
    method: str
    batch_size: int = 0
    summary: list[dict[str, Any]] = field(default_factory=list)


def projection_spread(model: nn.Module, x: torch.Tensor, *, n_projs: Sequence[int] = (1, 3),
                      repeats: int = 20, per_sample: int = 8, method: str = "vjp", seed: int = 0,
                      on_event: EventFn | None = None) -> ProjectionSpread:
    """Draw the JR estimator ``repeats`` times for each ``n_proj`` and compare with the exact value.

    The estimator is :func:`jacreg.regularizer.jacobian_penalty` (Algorithm 1 for ``method="vjp"``),
    whose R is 1/2 the batch mean of ‖J‖²_F; this reports 2R so that it compares with the exact
    ‖J‖²_F from :func:`jacreg.regularizer.jacobian_norms`. Each sample's own estimate (the first
    ``per_sample`` samples, each alone in a batch) shows the per-sample spread, whose relative
    variance is bounded by 2(C-1)/(C+2)/n_proj for Algorithm 1 (2/n_proj for forward mode).

    Args:
        model: the classifier (not modified).
        x: the batch (N, C, H, W) in [0, 1].
        n_projs: projection counts to compare (each >= 1).
        repeats: independent draws per count.
        per_sample: how many samples to also estimate one at a time (0 = none).
        method: ``"vjp"``, ``"jvp"`` or ``"auto"``.
        seed: seeds the projections' generator (same seed, same estimates).
        on_event: progress callback.

    Raises:
        ConfigError: a count below 1, or ``repeats`` below 2.
    """
    _check_batch(x)
    if repeats < 2:
        raise ConfigError("repeats must be at least 2 to measure a spread")
    if any(int(n) < 1 for n in n_projs):
        raise ConfigError("n_proj values must be >= 1 (the exact value is the reference)")
    dev = _device_of(model)
    x = x.to(dev)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    exact = jacobian_norms(model, x, normalized=True).detach().double().cpu() ** 2
    if method == "auto":
        method = resolve_method(model, x, 1).method
    k = min(int(per_sample), len(x))
    total = len(n_projs) * repeats * (1 + k)
    done = 0

    def estimate(xb: torch.Tensor, n: int) -> float:
        with torch.enable_grad():
            _, r = jacobian_penalty(model, xb, n_proj=int(n), method=method, generator=gen)
        return 2.0 * float(r.detach())

    batch: dict[int, np.ndarray] = {}
    samples: dict[int, np.ndarray] = {}
    for n in n_projs:
        b = np.empty(repeats)
        s = np.empty((repeats, k))
        for r in range(repeats):
            b[r] = estimate(x, n)
            for i in range(k):
                s[r, i] = estimate(x[i:i + 1], n)
            done += 1 + k
            if on_event is not None:
                on_event({"event": "progress", "done": done, "total": total})
        batch[int(n)] = b
        samples[int(n)] = s
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    exact_batch = float(exact.mean())
    exact_s = exact[:k].numpy()
    summary = []
    for n in batch:
        rel = batch[n] / exact_batch if exact_batch > 0 else np.full_like(batch[n], np.nan)
        row = {"n_proj": n, "exact": exact_batch, "mean": float(batch[n].mean()),
               "std": float(batch[n].std(ddof=1)), "relative_bias": float(rel.mean() - 1),
               "relative_std_batch": float(rel.std(ddof=1))}
        if k:
            with np.errstate(divide="ignore", invalid="ignore"):
                rs = samples[n] / exact_s[None, :]
            rs = rs[:, np.isfinite(rs).all(0)]
            row["relative_std_sample"] = float(rs.std(ddof=1, axis=0).mean()) if rs.size else math.nan
        row["relative_std_bound"] = math.sqrt(relative_variance_bound(num_classes, method) / n)
        summary.append(row)
    return ProjectionSpread(exact_batch=exact_batch, batch=batch, exact_samples=exact_s, samples=samples,
                            num_classes=num_classes, method=method, batch_size=len(x), summary=summary)


# --- timing ------------------------------------------------------------------------------------

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def estimator_timing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     settings: Sequence[tuple[str, int]] = (("vjp", 1), ("vjp", 3), ("jvp", 1), ("exact", 0)),
                     jr_weight: float = 0.01, repeats: int = 5, warmup: int = 1,
                     on_event: EventFn | None = None) -> list[dict[str, Any]]:
    """Seconds per training-like step for each JR estimator against plain cross-entropy.

    A step is: forward, ``CE + jr_weight * R``, gradient of that loss with respect to every
    parameter (``torch.autograd.grad``, so the model's ``.grad`` is untouched). The paper reports
    about 1.3x the plain cost for LeNet' with n_proj = 1 on a GPU; exact costs about C times more.

    Args:
        model: the classifier, on the device to time.
        x, y: one batch and its labels.
        settings: (method, n_proj) pairs for :func:`jacreg.regularizer.jacobian_penalty`; method
            ``"exact"`` (or n_proj 0) is the exact Jacobian.
        jr_weight: lambda_JR in the timed loss.
        repeats: timed steps per setting (the median is reported); warmup: untimed steps first.

    Returns:
        One dict per setting, plain first: estimator, method, n_proj, seconds (median per step),
        ratio (to plain), batch_size, device.
    """
    _check_batch(x, y)
    if repeats < 1:
        raise ConfigError("repeats must be at least 1")
    dev = _device_of(model)
    x, y = x.to(dev), y.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device=dev).manual_seed(0)

    def plain() -> None:
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)

    def with_jr(method: str, n: int) -> Callable[[], None]:
        def step() -> None:
            logits, r = jacobian_penalty(model, x, n_proj=n, method=method, generator=gen)
            loss = F.cross_entropy(logits, y) + jr_weight * r
            torch.autograd.grad(loss, params)
        return step

    runs: list[tuple[str, str, int, Callable[[], None]]] = [("plain CE", "-", 0, plain)]
    for method, n in settings:
        exact = method == "exact" or int(n) == 0
        label = "exact (all C directions)" if exact else f"{method}, n_proj={int(n)}"
        k = 0 if exact else int(n)
        runs.append((label, "exact" if exact else method, k, with_jr("exact" if exact else method, k)))
    out: list[dict[str, Any]] = []
    with torch.enable_grad():
        for j, (label, method, n, fn) in enumerate(runs):
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(repeats):
                _sync(dev)
                t0 = time.perf_counter()
                fn()
                _sync(dev)
                times.append(time.perf_counter() - t0)
            out.append({"estimator": label, "method": method, "n_proj": n,
                        "seconds": float(np.median(times)), "batch_size": len(x), "device": str(dev)})
            if on_event is not None:
                on_event({"event": "progress", "done": j + 1, "total": len(runs)})
    base = out[0]["seconds"]
    for row in out:
        row["ratio"] = row["seconds"] / base if base > 0 else math.nan
    return out
