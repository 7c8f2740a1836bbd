"""Training and evaluating the reproduction's models, with the results stored in their model cards.

A checkpoint whose card has the same training config and a finished history is reused (``retrain``
forces training); its evaluation is reused when it was computed with the same evaluation settings.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cells import adversarial_plane, boundary_distance, random_plane
from ..checkpoints import load_checkpoint, read_metadata, save_checkpoint
from ..device import pick
from ..errors import JacregError
from ..evaluation import evaluate
from ..events import EventFn, sink
from ..robustness import curve
from ..training import TrainConfig, state_path, train
from .settings import FGSM_EPS_QUOTED, MATCH_KEYS, NOISE_SIGMA_QUOTED, EvalSpec, Options, config_matches

__all__ = ["analyse", "at", "cell_radii", "clean_only", "ensure_model", "evaluate_model", "read_card"]


def read_card(path: Path) -> dict[str, Any]:
    """The model card of a checkpoint; {} when it is missing or unreadable (it is then retrained)."""
    try:
        return read_metadata(path)
    except (JacregError, OSError):
        return {}


def ensure_model(config: TrainConfig, *, retrain: bool = False,
                 on_event: EventFn | None = None) -> tuple[Path, bool]:
    """Train ``config`` with :func:`jacreg.training.train` unless a matching checkpoint exists.

    An interrupted run of the same config (``<out>.state.pt`` present) is resumed. The optimizer
    state file is removed once training has finished.

    Returns:
        ``(path, trained)``: the checkpoint and whether it was (re)trained now.
    """
    path = Path(config.out)
    emit = sink(on_event)
    state = state_path(path)
    if not retrain and path.is_file() and config_matches(read_card(path), config):
        if state.is_file():  # the resume state of a finished run is of no further use
            state.unlink()
        emit({"event": "reuse", "path": str(path)})
        return path, False
    resume = False
    if not retrain and state.is_file() and path.is_file():
        saved = read_card(path).get("config") or {}
        resume = all(saved.get(k) == getattr(config, k) for k in MATCH_KEYS)
    config = replace(config, resume=resume, force=True)  # the reproduction owns its models' files
    path.parent.mkdir(parents=True, exist_ok=True)
    emit({"event": "train", "path": str(path), "command": config.command(), "resume": resume})

    def relay(ev: dict[str, Any]) -> None:
        emit({**ev, "event": "train-" + str(ev.get("event")), "path": str(path)})

    train(config, relay)
    if state.is_file():
        state.unlink()
    return path, True


def _noise_eps(sigmas: Sequence[float], numel: int) -> list[float]:
    """L2 norms of white noise whose per-pixel RMS is sigma: epsilon = sigma * sqrt(pixels)."""
    return [float(s) * math.sqrt(numel) for s in sigmas]


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, *,
                   device: str | torch.device = "cpu",
                   on_event: EventFn | None = None) -> dict[str, Any]:
    """Clean accuracy, mean ||J||_F (paper convention) and the three robustness curves of Fig. 3.

    White noise: :data:`jacreg.robustness.ATTACKS` ``"noise"`` is Gaussian noise rescaled so that
    the perturbation, after clipping to [0, 1], has L2 norm epsilon. We report it against the
    per-pixel RMS of that perturbation, ``sigma = epsilon / sqrt(784)``, and take the accuracy of
    one fresh noise draw per sigma (``raw_accuracy``), not the worst case over the draws.
    FGSM: accuracy against the L-inf epsilon. PGD: L-inf epsilon 32/255, step 1/255, no random
    start, accuracy after k iterations (a sample counts as broken if any of its first k iterates
    is misclassified).
    """
    emit = sink(on_event)
    t0 = time.perf_counter()
    ev = evaluate(model, x, y, batch_size=250, device=device)
    out: dict[str, Any] = {"samples": len(x), "clean_accuracy": ev["clean_accuracy"],
                           "jacobian_norm_mean": ev["jacobian_norm_mean"]}
    emit({"event": "stage", "stage": "noise"})
    numel = int(np.prod(x.shape[1:]))
    noise = curve(model, x, y, "noise", _noise_eps(spec.noise_sigmas, numel), device=device, seed=spec.seed)
    out["noise"] = {"sigma": list(spec.noise_sigmas), "l2_epsilon": noise["epsilons"],
                    "accuracy": noise["raw_accuracy"], "worst_case_accuracy": noise["accuracy"]}
    emit({"event": "stage", "stage": "fgsm"})
    fgsm = curve(model, x, y, "fgsm", list(spec.fgsm_eps), device=device, seed=spec.seed)
    out["fgsm"] = {"epsilon": fgsm["epsilons"], "accuracy": fgsm["accuracy"]}
    emit({"event": "stage", "stage": "pgd"})
    acc = []
    for k in spec.pgd_iterations:
        if k == 0:
            acc.append(ev["clean_accuracy"])
            continue
        r = curve(model, x, y, "pgd", [spec.pgd_eps], device=device, seed=spec.seed, steps=int(k),
                  rel_stepsize=spec.pgd_step / spec.pgd_eps, random_start=False, abs_stepsize=None)
        acc.append(min(r["accuracy"][0], acc[-1] if acc else 1.0))
    out["pgd"] = {"iterations": list(spec.pgd_iterations), "epsilon": spec.pgd_eps, "step": spec.pgd_step,
                  "accuracy": acc}
    out["seconds"] = time.perf_counter() - t0
    return out


def cell_radii(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, *,
               device: str | torch.device = "cpu", on_event: EventFn | None = None) -> dict[str, Any]:
    """In-plane distance from each sample to the nearest decision boundary (the radius of the
    circles of Fig. 1/S1/S2), on random planes and on adversarial planes.

    Random planes: seed ``spec.seed + k`` for sample k (the same planes for every model).
    Adversarial planes: the model's own FGSM direction as ``u``, a random ``v`` (as
    :func:`jacreg.cells.cell_statistics`). Distances from :func:`jacreg.cells.boundary_distance`
    with ``spec.cell_directions`` rays, searched up to ``cell_max_factor * extent`` (inf beyond).
    """
    emit = sink(on_event)
    t0 = time.perf_counter()
    n = min(spec.cell_samples, len(x))
    out: dict[str, Any] = {"samples": n}
    for kind, extent in (("random", spec.cell_random_extent), ("adversarial", spec.cell_adversarial_extent)):
        radii = []
        for k in range(n):
            if kind == "random":
                plane = random_plane(x[k], seed=spec.seed + k)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plane = adversarial_plane(x[k], int(y[k]), model, None, seed=spec.seed + k, device=device)
            radii.append(float(boundary_distance(model, plane, extent, device=device,
                                                 n_directions=spec.cell_directions,
                                                 max_factor=spec.cell_max_factor)))
            emit({"event": "progress", "stage": f"cells-{kind}", "done": k + 1, "total": n})
        r = np.asarray(radii, dtype=float)
        finite = r[np.isfinite(r)]
        out[kind] = {"extent": extent, "search_limit": extent * spec.cell_max_factor,
                     "radius_median": float(np.median(r)),
                     "radius_mean_finite": float(finite.mean()) if finite.size else math.inf,
                     "no_boundary": int((~np.isfinite(r)).sum()),
                     "radius": [float(v) if math.isfinite(v) else None for v in r]}
    out["seconds"] = time.perf_counter() - t0
    return out


def analyse(path: Path, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, opts: Options, *,
            cells: bool = True, robustness: bool = True, on_event: EventFn | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (reusing the card's evaluation when its settings match) and store the
    results in its model card (re-saved with :func:`jacreg.checkpoints.save_checkpoint`)."""
    dev = str(pick(opts.device))
    model, meta = load_checkpoint(path, device=dev)
    metrics = dict(meta.get("metrics") or {})
    ev_key = {k: v for k, v in spec.to_dict().items() if not k.startswith("cell")}
    cell_key = {k: v for k, v in spec.to_dict().items() if k.startswith("cell") or k == "seed"}
    evaluation = metrics.get("evaluation")
    cell = metrics.get("cells")
    changed = False
    if robustness and (opts.reevaluate or not evaluation or evaluation.get("spec") != ev_key
                       or evaluation.get("samples") != len(x)):
        evaluation = {**evaluate_model(model, x, y, spec, device=dev, on_event=on_event), "spec": ev_key}
        changed = True
    if cells and (opts.reevaluate or not cell or cell.get("spec") != cell_key):
        cell = {**cell_radii(model, x, y, spec, device=dev, on_event=on_event), "spec": cell_key}
        changed = True
    if changed:
        metrics["evaluation"], metrics["cells"] = evaluation, cell
        if evaluation:
            metrics.update(summary(evaluation, cell))
        card = {k: v for k, v in meta.items() if k not in ("format", "sha256", "source")}
        card["metrics"] = metrics
        save_checkpoint(model, card, path)
    return {"path": str(path), "name": meta.get("name") or path.stem, "card": {**meta, "metrics": metrics}}


def at(values: Sequence[float], grid: Sequence[float], point: float) -> float | None:
    """The value at grid point ``point`` (None when the grid does not contain it)."""
    for g, v in zip(grid, values, strict=False):
        if abs(float(g) - point) < 1e-9:
            return v
    return None


def summary(evaluation: dict[str, Any], cell: dict[str, Any] | None) -> dict[str, Any]:
    """The headline metrics a model card quotes (and the zoo table shows)."""
    s: dict[str, Any] = {
        "clean_accuracy": evaluation["clean_accuracy"],
        "jacobian_norm_mean": evaluation["jacobian_norm_mean"],
        "test_samples": evaluation["samples"],
        f"noise_accuracy_sigma_{NOISE_SIGMA_QUOTED:g}": at(
            evaluation["noise"]["accuracy"], evaluation["noise"]["sigma"], NOISE_SIGMA_QUOTED),
        f"fgsm_accuracy_eps_{FGSM_EPS_QUOTED:g}": at(evaluation["fgsm"]["accuracy"],
                                                       evaluation["fgsm"]["epsilon"], FGSM_EPS_QUOTED),
        "pgd_accuracy_32_255": evaluation["pgd"]["accuracy"][-1],
        "pgd_iterations": evaluation["pgd"]["iterations"][-1],
    }
    if cell:
        s["cell_radius_random_median"] = cell["random"]["radius_median"]
        s["cell_radius_adversarial_median"] = cell["adversarial"]["radius_median"]
    return s


def clean_only(path: Path, x: torch.Tensor, y: torch.Tensor, opts: Options) -> dict[str, Any]:
    """Models that only need their training history (Fig. 2) and a final clean evaluation."""
    model, meta = load_checkpoint(path, device=str(pick(opts.device)))
    metrics = dict(meta.get("metrics") or {})
    ev = metrics.get("evaluation")
    if not ev or ev.get("samples") != len(x) or opts.reevaluate:
        ev = {**evaluate(model, x, y, batch_size=250), "spec": {"samples": len(x)}}
        metrics.update(evaluation=ev, clean_accuracy=ev["clean_accuracy"],
                       jacobian_norm_mean=ev["jacobian_norm_mean"], test_samples=len(x))
        card = {k: v for k, v in meta.items() if k not in ("format", "sha256", "source")}
        card["metrics"] = metrics
        save_checkpoint(model, card, path)
    return {"path": str(path), "name": meta.get("name") or path.stem, "card": {**meta, "metrics": metrics}}
