"""Robustness curves: accuracy against perturbation size over a whole dataset (the paper's Fig. 3).

The fraction of test samples a model still classifies correctly under white noise, FGSM, PGD, CW,
... as epsilon grows, for any model. Samples go in batches; a minimisation attack runs once per
batch and the whole curve follows from the per-sample minimal perturbation; a fixed-epsilon attack
runs the epsilons in increasing order and attacks at each epsilon only the samples that are still
correct (a sample broken at a smaller epsilon counts as broken at every larger one, since its
adversarial lies in the larger ball too). The curve is monotone by construction and costs a
fraction of foolbox's ``attack(fmodel, x, y, epsilons=[...])``, which attacks every sample at every
epsilon; samples that survived the previous epsilon start from their last iterate there (warm
start). All of this makes the curve at least as strong as foolbox's plain call (measured in
``benchmarks/robustness.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..device import eval_copy, memory_batch
from ..errors import ConfigError, ShapeError
from ..events import EventFn, sink
from ..parsing import check_seed
from .attack import Stopped, clip_perturbation, distance, fixed_attack, minimization_attack, predict_labels
from .catalog import BOUNDS, AttackSpec, check_epsilons, foolbox, get_attack

__all__ = ["DEFAULT_BATCH_SIZE", "check_data", "curve", "masking_probe"]

DEFAULT_BATCH_SIZE = 250


def check_data(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError("x and y must be torch tensors (images in [0, 1] and integer labels)")
    if len(x) == 0:
        raise ConfigError("no samples: pass at least one image (e.g. --samples 100)")
    if x.dim() < 2:
        raise ShapeError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise ShapeError(f"y must hold one label per image: x has {len(x)} images, y has shape "
                         f"{tuple(y.shape)}")
    if not x.is_floating_point():
        raise ConfigError(f"images must be floats in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError("images contain NaN or infinite values")
    if lo < BOUNDS[0] or hi > BOUNDS[1]:
        raise ConfigError(f"images must lie in [0, 1] (the attacks' bounds), got values in [{lo:.4g}, "
                          f"{hi:.4g}]; pass unnormalised images: the normalisation belongs inside the model")
    return x, y.long()


def _fitted_batch(net: torch.nn.Module, x: torch.Tensor, batch_size: int, dev: torch.device,
                  notes: list[str]) -> int:
    """``batch_size``, lowered (with a note) when its attack would not fit in the free memory."""
    try:
        fitted = memory_batch(net, x[:1].to(dev), batch_size, dev)
    except RuntimeError as exc:
        raise ShapeError(f"the model cannot take images of shape {tuple(x.shape[1:])}: {exc}") from exc
    if fitted < batch_size:
        notes.append(f"batch size lowered from {batch_size} to {fitted} to fit in the free memory of {dev}")
    return fitted


def curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str | AttackSpec = "pgd",
          epsilons: Sequence[float] | float | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
          device: str | torch.device | None = None, on_event: EventFn | None = None,
          should_stop: Callable[[], bool] | None = None, seed: int = 0, warm_start: bool = True,
          **attack_kwargs: Any) -> dict[str, Any]:
    """Accuracy against epsilon for one attack over a dataset (the paper's Fig. 3 for any model).

    Args:
        model: takes images in [0, 1] (N, C, H, W), returns logits. Never modified: a frozen
            eval-mode copy on ``device`` is attacked.
        x: images in [0, 1]; y: integer labels. Any device (moved batch by batch).
        attack: a catalogue name (:func:`names`) or alias, or an :class:`AttackSpec`.
        epsilons: perturbation sizes in the attack's norm, pixel units; sorted and de-duplicated
            (``notes`` says so). Default: the attack's ``default_epsilons``.
        batch_size: samples per foolbox call.
        device: where to attack; None = the model's device.
        on_event: called with a dict after each (batch, epsilon) (``"epsilon"``), after each batch
            (``"batch"``, with the running curve over the samples done so far) and at ``"start"`` /
            ``"done"``. Returning ``False`` stops the run.
        should_stop: polled between batches, epsilons and PGD chunks; True stops the run.
        seed: seeds this curve's own generator of random starts and noise (torch's global generator
            is neither used nor changed, so curves computed at once in several threads do not interact).
        warm_start: for an attack with a random start (PGD), start the samples still correct at
            the previous epsilon from their last iterate there (a point inside the new, larger ball
            where the loss is already high) instead of a fresh random point; the first attacked
            epsilon uses foolbox's random start. False = a random start at every epsilon.
        **attack_kwargs: foolbox constructor arguments overriding the catalogue defaults
            (e.g. ``steps=20`` for PGD).

    Returns:
        A dict: ``attack``, ``title``, ``norm``, ``kind``, ``params``, ``epsilons``, ``accuracy``
        (``accuracy[k]`` = fraction of samples still correctly classified at ``epsilons[k]``,
        never increasing; epsilon 0 gives the clean accuracy), ``raw_accuracy`` (noise attacks:
        the plain per-epsilon accuracy of one noise draw, not made monotone; else None),
        ``clean_accuracy``, ``samples`` (processed; fewer than requested when stopped),
        ``requested_samples``, ``seconds``, ``min_epsilons`` (per sample: the minimal perturbation
        found by a minimisation attack, or the smallest grid epsilon that broke it for a
        fixed-epsilon attack; 0 when misclassified clean, inf when never broken), ``mean_l2``
        (mean L2 distance of the adversarials found, pixel units; None if none),
        ``median_min_epsilon``, ``attacked`` (samples attacked at each epsilon: the work done),
        ``gradient_evaluations`` (fixed-epsilon gradient attacks: per-sample forward+backward passes;
        foolbox's plain call does samples x epsilons x steps),
        ``num_classes``, ``chance`` (1/C), ``input_numel``, ``stopped``, ``notes``, ``device``,
        ``seed``, ``batch_size``, ``warm_start`` (whether it was used).

    Raises:
        ConfigError: unknown attack or parameter, bad epsilons, no samples, images outside [0, 1].
        ShapeError: x and y disagree, or the model rejects the images.
    """
    t0 = time.perf_counter()
    spec = get_attack(attack)
    x, y = check_data(x, y)
    eps, notes = check_epsilons(spec.default_epsilons if epsilons is None else epsilons, spec,
                                tuple(x.shape[1:]))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec.build(**attack_kwargs)  # validate parameters before any work
    if model.training:
        notes.append("the model was in training mode: attacked an eval-mode copy")
    # A private, frozen copy: foolbox's PyTorchModel moves the model in place, and eagerpy's
    # loss.backward() would accumulate .grad on the caller's parameters.
    net, dev = eval_copy(model, device, frozen=True)
    batch_size = _fitted_batch(net, x, batch_size, dev, notes)
    emit = sink(on_event)
    stop_flag = [False]

    def stop() -> bool:
        if not stop_flag[0] and should_stop is not None and should_stop():
            stop_flag[0] = True
        return stop_flag[0]

    def send(event: dict[str, Any]) -> None:
        if emit(event) is False:
            stop_flag[0] = True

    n, K = len(x), len(eps)
    nb = math.ceil(n / batch_size)
    counts = [0] * K               # samples still correct at each epsilon (over completed batches)
    raw_counts = [0] * K
    attacked = [0] * K
    clean = 0
    done = 0
    min_eps: list[float] = []
    l2s: list[float] = []
    num_classes: int | None = None
    evals = [0]
    send({"event": "start", "attack": spec.name, "epsilons": eps, "samples": n, "batches": nb})

    fb = foolbox()
    # this curve's own random draws: curves computed at once in other threads do not perturb them
    generator = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(check_seed(seed))
    with torch.inference_mode(False), torch.enable_grad():
        fmodel = fb.PyTorchModel(net, bounds=BOUNDS, device=dev)
        for b in range(nb):
            if stop():
                break
            xb = x[b * batch_size:(b + 1) * batch_size].to(dev).clone()
            yb = y[b * batch_size:(b + 1) * batch_size].to(dev).clone()
            try:
                with torch.no_grad():
                    logits = net(xb)
            except RuntimeError as exc:
                raise ShapeError(f"the model cannot take images of shape {tuple(xb.shape[1:])}: "
                                 f"{exc}") from exc
            if logits.dim() != 2:
                raise ShapeError(f"the model must return logits of shape (N, C), got {tuple(logits.shape)}")
            num_classes = int(logits.shape[1])
            if int(yb.min()) < 0 or int(yb.max()) >= num_classes:
                raise ShapeError(f"labels must be in [0, {num_classes - 1}] for a model with {num_classes} "
                                 f"outputs, got labels up to {int(yb.max())}")
            try:
                out = _attack_batch(spec, attack_kwargs, fmodel, net, xb, yb, logits.argmax(-1) == yb, eps,
                                    stop, send, b, nb, warm_start, evals, generator)
            except Stopped:
                break
            if out is None:  # stopped inside the batch: drop it
                break
            correct_k, raw_k, att_k, mins, l2 = out
            for k in range(K):
                counts[k] += correct_k[k]
                raw_counts[k] += raw_k[k]
                attacked[k] += att_k[k]
            clean += int((logits.argmax(-1) == yb).sum())
            done += len(xb)
            min_eps += mins
            l2s += l2
            send({"event": "batch", "batch": b, "batches": nb, "done": done, "samples": n,
                  "epsilons": eps, "accuracy": [c / done for c in counts],
                  "clean_accuracy": clean / done, "progress": (b + 1) / nb,
                  "seconds": time.perf_counter() - t0})
    stopped = done < n
    finite = sorted(min_eps)
    result: dict[str, Any] = {
        "attack": spec.name, "title": spec.title, "norm": spec.norm, "kind": spec.kind,
        "params": {**spec.defaults, **attack_kwargs},
        "epsilons": eps,
        "accuracy": [c / done if done else float("nan") for c in counts],
        "raw_accuracy": ([c / done if done else float("nan") for c in raw_counts] if spec.random else None),
        "clean_accuracy": clean / done if done else float("nan"),
        "samples": done, "requested_samples": n,
        "seconds": time.perf_counter() - t0,
        "min_epsilons": min_eps,
        "mean_l2": (sum(l2s) / len(l2s)) if l2s else None,
        "median_min_epsilon": finite[len(finite) // 2] if finite else None,
        "attacked": attacked,
        "gradient_evaluations": evals[0] if spec.kind == "fixed" and spec.gradient else None,
        "num_classes": num_classes, "chance": (1.0 / num_classes) if num_classes else None,
        "input_numel": int(math.prod(x.shape[1:])),
        "stopped": stopped, "notes": notes, "device": str(dev), "seed": seed, "batch_size": batch_size,
        "warm_start": bool(warm_start and spec.kind == "fixed" and spec.gradient
                           and bool(spec.build(**attack_kwargs).__dict__.get("random_start", False))),
    }
    send({"event": "done", "stopped": stopped, "samples": done, "seconds": result["seconds"],
          "accuracy": result["accuracy"], "epsilons": eps})
    return result


def _attack_batch(spec: AttackSpec, params: Mapping[str, Any], fmodel: Any, net: nn.Module,
                  xb: torch.Tensor, yb: torch.Tensor, correct0: torch.Tensor, eps: list[float],
                  stop: Callable[[], bool], send: Callable[[dict[str, Any]], None], b: int, nb: int,
                  warm_start: bool = True, evals: list[int] | None = None,
                  generator: torch.Generator | None = None,
                  ) -> tuple[list[int], list[int], list[int], list[float], list[float]] | None:
    """One batch: (correct count per eps, raw correct per eps, attacked per eps, min eps, L2s)."""
    B, K = len(xb), len(eps)
    broken = ~correct0
    mins = torch.full((B,), math.inf, dtype=torch.float64)
    mins[broken.cpu()] = 0.0
    l2 = torch.full((B,), math.nan, dtype=torch.float64)
    correct_k, raw_k, att_k = [0] * K, [0] * K, [0] * K

    if spec.kind == "minimization":
        idx = torch.nonzero(correct0).flatten()
        if len(idx):
            xp = minimization_attack(spec, params, fmodel, xb[idx], yb[idx])
            x0 = xb[idx]
            adv = predict_labels(net, xp) != yb[idx]
            dist = distance(x0, xp, spec.norm).double().cpu()
            adv_c = adv.cpu()
            mins[idx.cpu()[adv_c]] = dist[adv_c]
            l2[idx.cpu()[adv_c]] = distance(x0, xp, "l2").double().cpu()[adv_c]
            hit = torch.zeros(len(idx), dtype=torch.bool, device=xb.device)
            for k, e in enumerate(eps):  # foolbox's rule: clip to epsilon, then check (made monotone)
                att_k[k] = len(idx)
                if e > 0:
                    hit |= predict_labels(net, clip_perturbation(x0, xp, e, spec.norm)) != yb[idx]
                correct_k[k] = int(len(idx) - hit.sum())
                raw_k[k] = correct_k[k]
        send({"event": "epsilon", "batch": b, "batches": nb, "index": K - 1, "epsilon": eps[-1],
              "attacked": len(idx), "progress": (b + 1) / nb})
        if stop():
            return None
        return correct_k, raw_k, att_k, mins.tolist(), [v for v in l2.tolist() if not math.isnan(v)]

    last = xb.clone()  # per sample: the last iterate of the previous epsilon (warm start)
    has_last = torch.zeros(B, dtype=torch.bool, device=xb.device)
    for k, e in enumerate(eps):
        if stop():
            return None
        # noise: every clean-correct sample gets a fresh draw (to report the raw curve too);
        # gradient attacks: only the samples still correct at the previous epsilon.
        target = correct0 if spec.random else ~broken
        idx = torch.nonzero(target).flatten()
        succ_full = torch.zeros(B, dtype=torch.bool, device=xb.device)
        if e > 0 and len(idx):
            att_k[k] = len(idx)
            start = None
            if warm_start and spec.gradient and bool(has_last[idx].all()):
                start = last[idx]
            success, cand = fixed_attack(spec, params, fmodel, net, xb[idx], yb[idx], e, stop, start,
                                         evals, generator)
            succ_full[idx] = success
            last[idx] = cand
            has_last[idx] = True
            new = success & ~broken[idx]
            if bool(new.any()):
                sel = idx[new]
                mins[sel.cpu()] = e
                l2[sel.cpu()] = distance(xb[sel], cand[new], "l2").double().cpu()
            broken = broken | succ_full
        correct_k[k] = int((~broken).sum())
        raw_k[k] = int((correct0 & ~succ_full).sum())
        send({"event": "epsilon", "batch": b, "batches": nb, "index": k, "epsilon": e,
              "attacked": int(att_k[k]), "still_correct": correct_k[k],
              "progress": (b + (k + 1) / K) / nb})
    return correct_k, raw_k, att_k, mins.tolist(), [v for v in l2.tolist() if not math.isnan(v)]


def masking_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100,
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
                  on_event: EventFn | None = None, should_stop: Callable[[], bool] | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """PGD with an unbounded budget (L-inf epsilon 1 = the whole input box), as ART's SecurityCurve.

    ``steps`` signed steps of size 1/(steps/2) from the clean image (no random start: a random
    image would break most samples by itself and hide masked gradients). Any working gradient
    attack drives accuracy to (below) chance here, since every image is reachable;
    :func:`sanity_check` warns when it does not.
    """
    res = curve(model, x, y, "pgd", [1.0], batch_size=batch_size, device=device, on_event=on_event,
                should_stop=should_stop, seed=seed, steps=steps, abs_stepsize=1.0 / (steps / 2),
                random_start=False)
    res["probe"] = True
    return res
