"""Training: ``TrainConfig`` and ``train(config, on_event)``.

The loss is the paper's Eq. (4)/(9): ``CE + lambda_JR * R`` with ``R = 1/2 mean_b ||J(x_b)||_F^2``
(:func:`jacreg.regularizer.jacobian_penalty`, J with respect to the normalised input), plus L2
weight decay, dropout and FGSM/PGD adversarial training in any mix. SGD with momentum; the
learning rate is quenched (x0.1) at 1/3 and 2/3 of the iterations, as in the paper.

Every epoch the model is written atomically to ``config.out`` (a safetensors file with its model
card) and the optimizer state to ``<out>.state.pt``, so a killed run loses at most one epoch and
``--resume`` continues it. With ``snapshot_every=N`` the model after every N-th epoch (and after
the last) is also kept as ``<out stem>.epochs/epoch-NNN.safetensors``
(:func:`jacreg.catalog.snapshot_path`), each with its model card and epoch, for the film of the
cells through training. Under ``torchrun`` the model is wrapped in DistributedDataParallel and
each process reads its own shard of the data (DistributedSampler).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from . import architectures
from .adversarial import ATTACKS as ADV_GENERATORS
from .adversarial import adversarial_examples
from .catalog import list_snapshots, snapshot_path
from .checkpoints import save_checkpoint
from .data import DatasetSpec, dataset_spec, get_dataset, load_dataset
from .data import names as data_names
from .device import pick
from .errors import CheckpointError, ConfigError
from .evaluation import evaluate
from .events import EventFn
from .fileio import append_jsonl, atomic_write
from .parsing import check_seed
from .regularizer import METHODS as JR_METHODS
from .regularizer import jacobian_penalty, resolve_method

ADV_ATTACKS: tuple[str, ...] = ("none", *ADV_GENERATORS)
#: The learning-rate schedule's quench points, as fractions of the run (the paper: x0.1 at 1/3, 2/3).
QUENCHES: tuple[float, ...] = (1 / 3, 2 / 3)


#: The longest model or job name.
MAX_NAME = 100
#: The largest count an option takes (epochs, batches, samples).
MAX_COUNT = 1_000_000


def check_name(name: object, what: str = "--name") -> str:
    """A model or job name: printable text of 1 to :data:`MAX_NAME` characters (ConfigError if not)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{what} must be non-empty text")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{what} must be at most {MAX_NAME} characters, got {len(name)}")
    if not name.isprintable():
        raise ConfigError(f"{what} must not contain control characters (newlines, NUL, ...)")
    return name


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field whose metadata doubles as its command-line help."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a training run depends on; mirrored one-to-one by ``python -m jacreg train``."""

    arch: str = _opt("lenet", "architecture", choices=architectures.names())
    dataset: str = _opt("mnist-5k", "dataset (mnist-5k works offline)")
    epochs: int = _opt(10, "passes over the training set")
    batch_size: int = _opt(100, "mini-batch size (per process under torchrun)")
    lr: float = _opt(0.1, "initial learning rate (quenched x0.1 at 1/3 and 2/3 of training)")
    momentum: float = _opt(0.9, "SGD momentum")
    l2: float = _opt(0.0, "L2 weight decay (the paper: 5e-4)")
    dropout: float = _opt(0.0, "dropout probability in the classifier (the paper: 0.5)")
    jr: float = _opt(0.0, "lambda_JR, weight of R = 1/2 mean ||J||_F^2, J = d logits / d normalised input "
                          "(the paper's convention; the paper: 0.01)")
    n_proj: int = _opt(1, "random projections per sample for JR (0 = exact)")
    jr_method: str = _opt("auto", "JR estimator: auto (per model: Algorithm 1 for image inputs), vjp "
                                  "(Algorithm 1), jvp (forward mode: cheaper step, gradient noise grows with "
                                  "the input size), exact", choices=JR_METHODS)
    adv: str = _opt("none", "adversarial training examples", choices=ADV_ATTACKS)
    adv_eps: float = _opt(0.3, "L-inf radius of adversarial examples, in [0,1] pixel units")
    adv_mix: float = _opt(0.5, "weight of the adversarial loss: (1-mix)*CE(x) + mix*CE(x_adv)")
    adv_steps: int = _opt(10, "PGD steps for --adv pgd")
    seed: int = _opt(0, "random seed (initialisation, data order, projections)")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N or mps")
    out: str = _opt("model.safetensors", "checkpoint path (.safetensors), written every epoch")
    snapshot_every: int = _opt(0, "also keep the model every N epochs and after the last as "
                                  "<out stem>.epochs/epoch-NNN.safetensors (0 = none)")
    events: str | None = _opt(None, "append JSON-lines events to this file")
    resume: bool = _opt(False, "continue from <out>.state.pt")
    force: bool = _opt(False, "replace an existing --out (without it, an existing file is never overwritten)")
    limit_batches: int | None = _opt(None, "stop each epoch after N batches (smoke tests)")
    eval_samples: int | None = _opt(1000, "test samples evaluated after each epoch (0 = none)")
    data_root: str | None = _opt(None, "where datasets are downloaded (default ~/.cache/jacreg)")
    name: str | None = _opt(None, "model name for the model card (default: the file name)")
    num_workers: int = _opt(0, "DataLoader worker processes")
    log_every: int = _opt(10, "emit a step event every N steps")

    def _check_types(self) -> None:
        """Every field has its declared type (a config may come from a file or a page)."""
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            declared = str(f.type)
            optional = declared.endswith(" | None")
            allowed = kinds[declared.removesuffix(" | None")]
            if value is None and optional:
                continue
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be {declared.replace(' | None', '')}, "
                                  f"got {value!r:.60}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")

    def validate(self) -> TrainConfig:
        """Check every value's type and range; raise ConfigError with the option's name. Returns self."""
        self._check_types()
        architectures.spec(self.arch)
        if not dataset_spec(self.dataset).trainable:
            raise ConfigError(f"--dataset {self.dataset} has a few test images only; train on one of "
                              f"{', '.join(data_names(trainable=True))}")
        if self.name is not None:
            check_name(self.name)
        check_seed(self.seed, "--seed")
        checks: list[tuple[bool, str]] = [
            (1 <= self.epochs <= MAX_COUNT, f"--epochs must be from 1 to {MAX_COUNT:,}"),
            (1 <= self.batch_size <= 65536, "--batch-size must be from 1 to 65,536"),
            (self.lr > 0, "--lr must be positive"),
            (0 <= self.momentum < 1, "--momentum must be in [0, 1)"),
            (self.l2 >= 0, "--l2 must be >= 0"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.jr >= 0, "--jr must be >= 0"),
            (0 <= self.n_proj <= 1000, "--n-proj must be from 0 (exact) to 1,000"),
            (self.jr_method in JR_METHODS, f"--jr-method must be one of {', '.join(JR_METHODS)}"),
            (self.adv in ADV_ATTACKS, f"--adv must be one of {', '.join(ADV_ATTACKS)}"),
            (0 < self.adv_eps <= 1 or self.adv == "none", "--adv-eps must be in (0, 1] pixel units"),
            (0 <= self.adv_mix <= 1, "--adv-mix must be in [0, 1]"),
            (1 <= self.adv_steps <= 1000, "--adv-steps must be from 1 to 1,000"),
            (self.limit_batches is None or 1 <= self.limit_batches <= MAX_COUNT,
             f"--limit-batches must be from 1 to {MAX_COUNT:,}"),
            (self.eval_samples is None or 0 <= self.eval_samples <= MAX_COUNT,
             f"--eval-samples must be from 0 to {MAX_COUNT:,}"),
            (0 <= self.num_workers <= 64, "--num-workers must be from 0 to 64"),
            (1 <= self.log_every <= MAX_COUNT, f"--log-every must be from 1 to {MAX_COUNT:,}"),
            (0 <= self.snapshot_every <= MAX_COUNT,
             f"--snapshot-every must be from 0 to {MAX_COUNT:,} (0 = no snapshots)"),
            (str(self.out).endswith(".safetensors"), "--out must end with .safetensors"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        pick(self.device)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring unknown keys (e.g. a newer card); ConfigError on bad types."""
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as exc:
            raise ConfigError(f"bad training config: {exc}") from exc

    def to_argv(self, exclude: Sequence[str] = ()) -> list[str]:
        """Command-line arguments that reproduce this config (``python -m jacreg train <argv>``),
        without the fields named in ``exclude``."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            if f.name in exclude:
                continue
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.type in ("bool", bool):
                if value:
                    argv.append(flag)
            elif value is not None:
                argv.append(f"{flag}={value}")  # one token: a value starting with '-' is not an option
        return argv

    def command(self) -> str:
        """The exact shell command, for model cards."""
        return "python -m jacreg train " + " ".join(self.to_argv())


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(config: TrainConfig) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), pick(config.device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = pick(config.device)
    if want.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), local), device


def lr_factor(step: int, total_steps: int, quenches: Sequence[float] = QUENCHES) -> float:
    """The paper's schedule: x0.1 at each quench point (fractions of ``total_steps``)."""
    return 0.1 ** sum(step >= q * total_steps for q in quenches)


def state_path(out: str | os.PathLike[str]) -> Path:
    """Where the resumable optimizer state of a run lives."""
    return Path(str(out) + ".state.pt")


@dataclass
class _Run:
    """Everything one training run holds while it runs (built by :func:`_setup`)."""

    config: TrainConfig
    dist: _Dist
    device: torch.device
    spec: DatasetSpec
    model: nn.Module
    net: nn.Module
    loader: torch.utils.data.DataLoader[Any]
    loader_gen: torch.Generator
    sampler: DistributedSampler[Any] | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    proj_gen: torch.Generator
    steps_per_epoch: int
    total_steps: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None
    jr_estimator: dict[str, Any] | None = None


def _setup(config: TrainConfig, dist_info: _Dist, device: torch.device) -> _Run:
    """The model, data, optimizer and schedule of a run; the saved state when resuming."""
    torch.manual_seed(config.seed)
    spec = dataset_spec(config.dataset)
    model = architectures.create(config.arch, num_classes=spec.num_classes, input_shape=spec.input_shape,
                                 dropout=config.dropout, mean=spec.mean, std=spec.std).to(device)
    train_set = get_dataset(config.dataset, "train", data_root=config.data_root)
    sampler: DistributedSampler[Any] | None = None
    if dist_info.world > 1:
        sampler = DistributedSampler(train_set, num_replicas=dist_info.world, rank=dist_info.rank,
                                     shuffle=True, seed=config.seed)
    loader_gen = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        generator=loader_gen if sampler is None else None, num_workers=config.num_workers,
        drop_last=False, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader) if config.limit_batches is None else min(len(loader), config.limit_batches)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.l2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps))
    proj_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + dist_info.rank)
    run = _Run(config, dist_info, device, spec, model, model, loader, loader_gen, sampler, optimizer,
               scheduler, proj_gen, steps_per_epoch, total_steps)
    if config.resume:
        run.start_epoch, run.history = _load_state(config, model, optimizer, scheduler, proj_gen, device)
    elif dist_info.main:
        _clear_snapshots(config.out)
    if dist_info.world > 1:
        run.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.eval_samples != 0 and dist_info.main:
        run.eval_data = load_dataset(config.dataset, "test", limit=config.eval_samples,
                                     data_root=config.data_root)
    return run


def _train_epoch(run: _Run, epoch: int, emit: EventFn, t0: float) -> dict[str, float]:
    """One pass over the training data; returns the sums of loss, CE, R, correct and samples."""
    config = run.config
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.loader_gen.manual_seed(config.seed * 100003 + epoch)  # same order whether resumed or not
    run.net.train()
    sums = {"loss": 0.0, "ce": 0.0, "jr": 0.0, "correct": 0.0, "n": 0.0}
    for i, (xb, yb) in enumerate(run.loader):
        if i >= run.steps_per_epoch:
            break
        xb, yb = xb.to(run.device, non_blocking=True), yb.to(run.device, non_blocking=True)
        if config.jr > 0 and run.jr_estimator is None:
            run.jr_estimator = jr_estimator(config, run.model, xb)
            emit({"event": "jr_estimator", **run.jr_estimator})
        loss, ce, jr, correct = _step(run.net, xb, yb, config, run.optimizer, run.proj_gen)
        run.scheduler.step()
        n = len(xb)
        for key, val in (("loss", loss), ("ce", ce), ("jr", jr)):
            sums[key] += val * n
        sums["correct"] += correct
        sums["n"] += n
        step = epoch * run.steps_per_epoch + i + 1
        if not math.isfinite(loss):
            raise ConfigError(f"the loss became {loss} at step {step}: lower --lr or --jr")
        if step % config.log_every == 0 or i + 1 == run.steps_per_epoch:
            emit({"event": "step", "epoch": epoch + 1, "step": step, "total_steps": run.total_steps,
                  "loss": loss, "ce": ce, "jr": jr, "accuracy": correct / n,
                  "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
    if run.dist.world > 1:
        sums = _all_reduce_sums(sums, run.device)
    return sums


def _end_epoch(run: _Run, epoch: int, sums: dict[str, float], emit: EventFn, t0: float) -> dict[str, Any]:
    """Main process: evaluate, record the epoch, write the checkpoint and the resumable state."""
    config = run.config
    n = max(sums["n"], 1)
    metrics: dict[str, Any] = {
        "epoch": epoch + 1, "epochs": config.epochs, "step": (epoch + 1) * run.steps_per_epoch,
        "train_loss": sums["loss"] / n, "train_ce": sums["ce"] / n, "train_jr": sums["jr"] / n,
        "train_accuracy": sums["correct"] / n, "lr": run.optimizer.param_groups[0]["lr"]}
    if run.eval_data is not None:
        ev = evaluate(run.model, *run.eval_data, batch_size=250)
        metrics.update(test_accuracy=ev["clean_accuracy"], jacobian_norm_mean=ev["jacobian_norm_mean"],
                       eval_samples=ev["samples"])
    metrics["seconds"] = time.perf_counter() - t0
    run.history.append(metrics)
    emit({"event": "epoch", **metrics})
    card = _model_card(config, run.spec, metrics, run.history, run.jr_estimator)
    save_checkpoint(run.model, card, config.out)
    _save_state(config, run.model, run.optimizer, run.scheduler, run.proj_gen, epoch + 1, run.history)
    emit({"event": "checkpoint", "path": str(config.out), "epoch": epoch + 1})
    every = config.snapshot_every
    if every and ((epoch + 1) % every == 0 or epoch + 1 == config.epochs):
        path = snapshot_path(config.out, epoch + 1)
        save_checkpoint(run.model, {**card, "epoch": epoch + 1, "snapshot_of": Path(config.out).name}, path)
        emit({"event": "snapshot", "path": str(path), "epoch": epoch + 1})
    return metrics


def _clear_snapshots(out: str) -> None:
    """A fresh (not resumed) run replaces ``out``: the snapshots of the run it replaces go too, so a
    film never mixes two runs."""
    for snap in list_snapshots(out):
        snap.path.unlink(missing_ok=True)


def suggested_snapshot_every(arch: str, epochs: int, dataset: str | None = None,
                             budget_bytes: int = 200 << 20) -> int:
    """Snapshots on by default for small models: 1 (every epoch) when ``epochs`` float32 copies of
    the architecture's weights (on ``dataset``'s inputs, default its own dataset) fit in
    ``budget_bytes`` (200 MiB), else 0 (none). LeNet' (61,706 parameters) keeps every epoch of runs
    up to 800 epochs, DDNet (1.1 M) up to 45, ResNet-18 on ImageNet none.

    Raises:
        ConfigError: unknown architecture or dataset.
    """
    parameters = _parameter_count(arch, dataset or architectures.spec(arch).dataset)
    return 1 if 4 * parameters * max(1, int(epochs)) <= budget_bytes else 0


@functools.lru_cache(maxsize=32)
def _parameter_count(arch: str, dataset: str) -> int:
    spec = dataset_spec(dataset)
    return architectures.count_parameters(architectures.create(
        arch, num_classes=spec.num_classes, input_shape=spec.input_shape))


def train(config: TrainConfig, on_event: EventFn | None = None) -> dict[str, Any]:
    """Train a model as configured; return the final metrics and checkpoint path.

    Events (``on_event(dict)``, also appended to ``config.events`` as JSON lines by the main
    process): ``start``, ``step`` (every ``log_every`` steps), ``epoch``, ``checkpoint``, ``done``,
    and ``error`` (or ``stopped``) when an exception escapes.
    """
    config.validate()
    if Path(config.out).exists() and not (config.resume or config.force):
        raise ConfigError(f"{config.out} exists: pass --force to replace it, or --resume to continue its run")
    dist_info, device = _init_distributed(config)
    emit = _event_sink(config, on_event, dist_info.main)
    run: _Run | None = None
    try:
        run = _setup(config, dist_info, device)
        emit({"event": "start", "config": config.to_dict(), "total_steps": run.total_steps,
              "steps_per_epoch": run.steps_per_epoch, "start_epoch": run.start_epoch, "device": str(device),
              "world_size": dist_info.world, "parameters": architectures.count_parameters(run.model)})
        t0 = time.perf_counter() - (run.history[-1]["seconds"] if run.history else 0.0)
        metrics: dict[str, Any] = run.history[-1] if run.history else {}
        for epoch in range(run.start_epoch, config.epochs):
            sums = _train_epoch(run, epoch, emit, t0)
            if dist_info.main:
                metrics = _end_epoch(run, epoch, sums, emit, t0)
        result = {"path": str(config.out), **_final_metrics(metrics)}  # metrics: rank 0 only
        if dist_info.world > 1:
            dist.barrier()  # no rank tears the group down while rank 0 still evaluates or saves
        emit({"event": "done", "metrics": result, "path": str(config.out)})
        return result
    except BaseException as exc:
        emit({"event": "error" if not isinstance(exc, KeyboardInterrupt) else "stopped",
              "message": str(exc) or type(exc).__name__, "type": type(exc).__name__})
        raise
    finally:
        if dist_info.world > 1:
            run = None  # the DDP reducer holds the process group: free it first
            _shutdown_distributed()


def _shutdown_distributed() -> None:
    """Destroy the process group once the DDP wrapper is gone: a group (and gloo's threads) freed
    only at interpreter exit can abort the process ("terminate called without an active
    exception")."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def _step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
          optimizer: torch.optim.Optimizer, gen: torch.Generator) -> tuple[float, float, float, int]:
    """One SGD step; returns (loss, CE, R, correct) of the clean batch."""
    x_adv = None
    if config.adv != "none":
        net.eval()
        x_adv = adversarial_examples(net, x, y, config.adv, config.adv_eps, steps=config.adv_steps,
                                     generator=gen if x.device.type == gen.device.type else None)
        net.train()
    optimizer.zero_grad(set_to_none=True)
    if config.jr > 0:
        logits, reg = jacobian_penalty(net, x, n_proj=config.n_proj, method=config.jr_method, generator=gen)
    else:
        logits, reg = net(x), torch.zeros((), device=x.device)
    ce = F.cross_entropy(logits, y)
    if x_adv is not None:
        ce = (1 - config.adv_mix) * ce + config.adv_mix * F.cross_entropy(net(x_adv), y)
    loss = ce + config.jr * reg
    loss.backward()
    optimizer.step()
    correct = int((logits.detach().argmax(1) == y).sum())
    return float(loss.detach()), float(ce.detach()), float(reg.detach()), correct


def _all_reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum the epoch's sums over the processes (DDP)."""
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def _final_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "jacobian_norm_mean", "seconds")
    out = {k: metrics[k] for k in keep if k in metrics}
    if "test_accuracy" in out:
        out["clean_accuracy"] = out["test_accuracy"]
    return out


def jr_estimator(config: TrainConfig, net: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Which JR estimator a run uses and why (``method``, ``reason``): the configured one, or what
    ``auto`` resolves to for this network and input (deterministic, so a resumed run agrees)."""
    if config.n_proj == 0 or config.jr_method == "exact":
        return {"method": "exact", "reason": "all C rows of J (n_proj = 0 or --jr-method exact)"}
    if config.jr_method != "auto":
        return {"method": config.jr_method, "reason": f"--jr-method {config.jr_method}"}
    return resolve_method(net, x, config.n_proj).to_dict()


def _model_card(config: TrainConfig, spec: DatasetSpec, metrics: dict[str, Any],
                history: list[dict[str, Any]], estimator: dict[str, Any] | None = None) -> dict[str, Any]:
    regs = [r for r, on in (("l2", config.l2 > 0), ("dropout", config.dropout > 0), ("jr", config.jr > 0),
                            (f"{config.adv}-at", config.adv != "none")) if on] or ["none"]
    return {
        "name": config.name or Path(config.out).stem,
        "arch": config.arch,
        "dataset": config.dataset,
        "num_classes": spec.num_classes,
        "input_shape": list(spec.input_shape),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "dropout": config.dropout,
        "regularizers": regs,
        "config": config.to_dict(),
        "command": config.command(),
        "metrics": _final_metrics(metrics),
        "history": history,
        "jacobian_convention": "d logits / d normalised input (paper, Table 1)",
        "jr_estimator": estimator,
    }


def _save_state(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, gen: torch.Generator, epochs_done: int,
                history: list[dict[str, Any]]) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epochs_done": epochs_done,
        "history_json": json.dumps(history),
        "config_json": json.dumps(config.to_dict()),
        "torch_rng": torch.get_rng_state(),
        "projection_rng": gen.get_state(),
    }
    atomic_write(state_path(config.out), lambda tmp: torch.save(state, tmp))


_RESUME_KEYS = ("arch", "dataset", "epochs", "batch_size", "lr", "momentum", "l2", "dropout", "jr",
                "n_proj", "adv", "adv_eps", "adv_mix", "seed", "limit_batches")


def _load_state(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, gen: torch.Generator,
                device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    path = state_path(config.out)
    if not path.is_file():
        raise CheckpointError(f"--resume: no saved state at {path}; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved = json.loads(state["config_json"])
        changed = [k for k in _RESUME_KEYS if k in saved and saved[k] != getattr(config, k)]
        if changed:
            raise ConfigError("--resume with a different config: " + ", ".join(
                f"{k}={saved[k]!r} was {getattr(config, k)!r} now" for k in changed))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        gen.set_state(state["projection_rng"].cpu())
        return int(state["epochs_done"]), json.loads(state["history_json"])
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable state is a user-facing error
        raise CheckpointError(f"--resume: cannot read {path}: {exc}") from exc


def _event_sink(config: TrainConfig, on_event: EventFn | None, main: bool) -> EventFn:
    def emit(event: dict[str, Any]) -> None:
        if not main:
            return
        event = {**event, "time": time.time()}
        if config.events:
            append_jsonl(config.events, event)
        if on_event is not None:
            on_event(event)

    return emit
