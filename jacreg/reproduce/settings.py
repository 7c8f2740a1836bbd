"""What the reproduction trains and measures: the paper's settings, the zoo, the evaluation spec.

Hoffman, Roberts & Yaida (2019), Sec. 4.1: LeNet', batch 100, SGD with momentum 0.9, learning rate
0.1 quenched x0.1 at 1/3 and 2/3 of training; L2 5e-4, dropout 0.5, lambda_JR = 0.01 with one random
projection (Algorithm 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..catalog import models_dir
from ..errors import ConfigError
from ..training import TrainConfig

__all__ = ["CLAIMS", "DATASET_EPOCHS", "DEFAULT_EPOCHS", "FASHION", "FASHION_KEYS", "FGSM_EPS_QUOTED", "FIG1",
           "FILM_KEYS", "FILM_SNAPSHOT_EVERY",
           "FIG2", "FIG3", "ITERATION_EPOCHS", "ITERATION_KEYS", "MATCH_KEYS", "NOISE_SIGMA_QUOTED",
           "PAPER_TABLE1", "PAPER_TABLE2", "SETTINGS", "TABLE1", "TABLE2", "ZOO", "EvalSpec", "Options",
           "Setting", "config_matches", "quick_spec", "train_config", "zoo_dir"]


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


#: Epochs per dataset: at least 6,000 SGD iterations of batch 100 (the paper trains 150,000).
#: mnist-5k: 40 steps an epoch, 6,000 in all, quenched at 2,000 and 4,000; mnist and fashion-mnist:
#: 600 steps an epoch, 6,000 in all.
DATASET_EPOCHS: dict[str, int] = {"mnist-5k": 150, "mnist": 10, "fashion-mnist": 10}
#: The zoo's file-name suffix per dataset (``lenet-jr-fashion.safetensors``).
DATASET_SUFFIX: dict[str, str] = {"mnist-5k": "", "mnist": "-mnist", "fashion-mnist": "-fashion"}
#: Default number of epochs on mnist-5k (the main dataset).
DEFAULT_EPOCHS = DATASET_EPOCHS["mnist-5k"]
#: The settings also trained on the full-size Fashion-MNIST (60,000 / 10,000 images).
FASHION_KEYS = ("none", "jr")
FASHION = "fashion-mnist"
#: How ||J||_F and accuracy move with the length of training: these settings at these epochs too.
ITERATION_KEYS = ("none", "jr")
ITERATION_EPOCHS = (75, 300)
#: The zoo models whose training can be played as a film (Cells page): a snapshot every N epochs.
FILM_KEYS = ("none", "jr")
FILM_SNAPSHOT_EVERY = 10


#: Test samples evaluated after each epoch during training (the full test set is used at the end).
DEFAULT_EVAL_SAMPLES = 200


Role = Literal["zoo", "extra", "study"]


@dataclass(frozen=True)
class Setting:
    """One training setting: a key (file ``lenet-<key>[-<dataset>].safetensors``), a label, the
    TrainConfig overrides, and its role: the zoo (``models/``), an extra of the figures, or a study."""

    key: str
    label: str
    overrides: dict[str, Any]
    role: Role = "zoo"

    @property
    def zoo(self) -> bool:
        return self.role == "zoo"

    def file_name(self, dataset: str = "mnist-5k", arch: str = "lenet") -> str:
        return f"{arch}-{self.key}{DATASET_SUFFIX.get(dataset, '-' + dataset)}.safetensors"


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
    Setting("l2-dropout", "L2 + dropout", {"l2": 5e-4, "dropout": 0.5}, "extra"),
    Setting("jr-exact", "JR, exact (all C directions)", {"jr": 0.01, "n_proj": 0}, "extra"),
    Setting("jr-nproj3", "JR, n_proj = 3", {"jr": 0.01, "n_proj": 3}, "extra"),
    # the two claims of the paper that need settling: JR vs FGSM adversarial training at several
    # training radii, and JR at several weights
    Setting("fgsm-at-0.1", "FGSM-AT, ε = 0.1", {"adv": "fgsm", "adv_eps": 0.1, "adv_mix": FGSM_AT_MIX},
            "study"),
    Setting("fgsm-at-0.3", "FGSM-AT, ε = 0.3", {"adv": "fgsm", "adv_eps": 0.3, "adv_mix": FGSM_AT_MIX},
            "study"),
    Setting("jr-0.003", "JR, λ = 0.003", {"jr": 0.003, "n_proj": 1}, "study"),
    Setting("jr-0.03", "JR, λ = 0.03", {"jr": 0.03, "n_proj": 1}, "study"),
    Setting("jr-0.1", "JR, λ = 0.1", {"jr": 0.1, "n_proj": 1}, "study"),
)}
#: The claims study: its models under noise, FGSM and PGD beside the zoo's none, JR and FGSM-AT.
CLAIMS = ["none", "l2", "dropout", "jr-0.003", "jr", "jr-0.03", "jr-0.1", "fgsm-at-0.1", "fgsm-at",
          "fgsm-at-0.3", "jr-fgsm-at"]


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


#: The robust accuracies quoted in the zoo table (and in the model cards' metrics).
NOISE_SIGMA_QUOTED = 0.3


FGSM_EPS_QUOTED = 0.1


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
    fashion: bool = True
    workers: int | None = None
    eval: EvalSpec = field(default_factory=EvalSpec)

    def resolved_epochs(self, dataset: str | None = None) -> int:
        """Epochs of a dataset's runs: ``--epochs``, else the dataset's default; 1 with ``--quick``."""
        if self.epochs is not None:
            return self.epochs
        if self.quick:
            return 1
        return DATASET_EPOCHS.get(dataset or self.dataset, DEFAULT_EPOCHS)

    def resolved_workers(self) -> int:
        """Models trained and evaluated at once: ``--workers``, else one per two logical CPUs (at
        least 1, at most 4), each with its share of the CPU threads."""
        if self.workers is not None:
            return self.workers
        return max(1, min(4, (os.cpu_count() or 1) // 2)) if not self.quick else 1


def quick_spec() -> EvalSpec:
    """A tiny evaluation for smoke tests (``--quick``)."""
    return EvalSpec(samples=40, noise_sigmas=(0.0, 0.2), fgsm_eps=(0.0, 0.1), pgd_iterations=(0, 1, 2),
                    cell_samples=2, cell_random_extent=4.0, cell_adversarial_extent=1.0, cell_directions=8)


def _rel(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (for reproducible commands)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def zoo_dir(opts: Options) -> Path:
    """The zoo folder of a run: ``--zoo-dir``, else :func:`jacreg.catalog.models_dir`."""
    if opts.zoo_dir:
        return Path(opts.zoo_dir)
    return models_dir()


def train_config(setting: Setting, opts: Options, seed: int = 0, dataset: str | None = None,
                 epochs: int | None = None) -> TrainConfig:
    """The :class:`~jacreg.training.TrainConfig` of a setting (paper hyper-parameters + overrides).

    The zoo proper (the dataset's default epochs, seed 0, not ``--quick``) lives in the models folder;
    the extras and studies at those defaults in ``<out>/models/``; everything else (other seeds, other
    lengths, ``--quick``) in ``<out>/models/<dataset>-e<epochs>/seed<k>/``.
    """
    if setting.key not in SETTINGS:
        raise ConfigError(f"unknown setting {setting.key!r}")
    dataset = dataset or opts.dataset
    epochs = epochs if epochs is not None else opts.resolved_epochs(dataset)
    canonical = seed == 0 and not opts.quick and epochs == DATASET_EPOCHS.get(dataset)
    if setting.zoo and canonical:
        folder = zoo_dir(opts)
    elif canonical:
        folder = Path(opts.out) / "models"
    else:
        tag = f"{dataset}-e{epochs}" + ("-quick" if opts.quick else "")
        folder = Path(opts.out) / "models" / tag / f"seed{seed}"
    values: dict[str, Any] = {
        "arch": "lenet", "dataset": dataset, "epochs": epochs, "batch_size": 100, "lr": 0.1,
        "momentum": 0.9, "seed": seed, "device": opts.device,
        "eval_samples": 10 if opts.quick else DEFAULT_EVAL_SAMPLES,
        "limit_batches": 2 if opts.quick else None, "data_root": opts.data_root,
        "out": _rel(folder / setting.file_name(dataset)), "log_every": 5,
    }
    if setting.zoo and canonical and setting.key in FILM_KEYS and dataset == opts.dataset:
        values["snapshot_every"] = FILM_SNAPSHOT_EVERY
    values.update(setting.overrides)
    return TrainConfig(**values).validate()


def config_matches(card: dict[str, Any], config: TrainConfig) -> bool:
    """True when a checkpoint's card was trained with this config and finished every epoch."""
    saved = card.get("config") or {}
    if any(saved.get(k) != getattr(config, k) for k in MATCH_KEYS):
        return False
    history = card.get("history") or []
    return bool(history) and int(history[-1].get("epoch", 0)) == int(config.epochs)
