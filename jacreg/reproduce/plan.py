"""What a reproduction trains and evaluates (:func:`plan`), and doing it on several processes.

Every model of a reproduction is independent of the others, so they are trained (and then evaluated)
by a pool of worker processes, each with its share of the CPU threads: on a laptop's cores this is
several times faster than one process with all the threads (small batches scale badly across
threads). Events of the workers reach the caller's ``on_event`` through a queue.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from ..data import load_dataset
from ..events import Event, EventFn, sink
from ..training import TrainConfig
from .settings import (
    FASHION,
    FASHION_KEYS,
    ITERATION_EPOCHS,
    ITERATION_KEYS,
    SETTINGS,
    TABLE1,
    TABLE2,
    ZOO,
    Options,
    train_config,
)
from .zoo import analyse, clean_only, ensure_model

__all__ = ["Run", "analyse_runs", "plan", "train_runs"]

Evaluation = Literal["full", "clean"]
Group = Literal["main", "fashion", "iterations"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class Run:
    """One model of a reproduction: its setting, data, seed and length, and how it is evaluated
    (``"full"``: clean accuracy, ||J||_F and the robustness curves; ``"clean"``: the first two)."""

    key: str
    dataset: str
    seed: int
    epochs: int
    config: TrainConfig
    evaluation: Evaluation
    cells: bool
    group: Group = "main"


def _run(key: str, opts: Options, seed: int = 0, dataset: str | None = None, epochs: int | None = None,
         evaluation: Evaluation = "full", cells: bool = False, group: Group = "main") -> Run:
    config = train_config(SETTINGS[key], opts, seed, dataset, epochs)
    return Run(key, config.dataset, seed, config.epochs, config, evaluation, cells,
               "fashion" if config.dataset == FASHION else group)


#: ``--quick`` (a smoke test) runs one study of each kind and the iteration study of one setting.
QUICK_STUDIES = ("fgsm-at-0.1", "jr-0.03")


def iteration_epochs(opts: Options) -> tuple[int, ...]:
    """The lengths of the iteration study (1 and 2 epochs with ``--quick``)."""
    return (2, 3) if opts.quick else ITERATION_EPOCHS


def plan(opts: Options, *, fashion: bool, transfer_only: bool = False) -> list[Run]:
    """The models of a reproduction, in the order they are trained.

    * ``--zoo``: the zoo's seven settings on the main dataset, and the Fashion-MNIST pair when
      ``fashion`` (the data is here);
    * the reproduction adds ``--seeds`` seeds of Table 1's settings, the extras of Fig. 2/3, the
      claims study, the iteration study, and the Fashion-MNIST pair with ``--seeds`` seeds.
    """
    if transfer_only:
        return [_run(key, opts, evaluation="clean") for key in TABLE2]
    runs = [_run(key, opts, cells=True) for key in ZOO]
    if fashion:
        runs += [_run(key, opts, dataset=FASHION, cells=True) for key in FASHION_KEYS]
    if opts.zoo:
        return runs
    runs += [_run(key, opts, seed) for key in TABLE1 for seed in range(1, opts.seeds)]
    studies = QUICK_STUDIES if opts.quick else [k for k, s in SETTINGS.items() if s.role == "study"]
    runs += [_run(key, opts, evaluation="clean" if key in ("jr-exact", "jr-nproj3") else "full")
             for key, s in SETTINGS.items() if s.role == "extra" or key in studies]
    main_epochs = opts.resolved_epochs()
    runs += [_run(key, opts, epochs=e, evaluation="clean", group="iterations")
             for key in (ITERATION_KEYS[:1] if opts.quick else ITERATION_KEYS)
             for e in iteration_epochs(opts) if e != main_epochs]
    if fashion:
        runs += [_run(key, opts, seed, dataset=FASHION) for key in FASHION_KEYS
                 for seed in range(1, opts.seeds)]
    return runs


# --- workers ----------------------------------------------------------------------------------------

_EVENTS: Any = None  # the caller's queue, in a worker process


def _init_worker(threads: int, events: Any) -> None:
    global _EVENTS
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _EVENTS = events


def _worker_emit(event: Event) -> None:
    if _EVENTS is not None:
        _EVENTS.put(event)


@contextmanager
def _relay(events: Any, emit: EventFn) -> Iterator[None]:
    """A thread that hands the workers' events to ``emit`` while the pool runs."""
    done = threading.Event()

    def pump() -> None:
        while not done.is_set() or not events.empty():
            try:
                emit(events.get(timeout=0.2))
            except queue.Empty:
                continue

    thread = threading.Thread(target=pump, name="jacreg-reproduce-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def _map(fn: Callable[..., R], items: Sequence[Any], workers: int, emit: EventFn, *extra: Any) -> list[R]:
    """``[fn(item, *extra, on_event) for item in items]``, on ``workers`` processes when above 1."""
    if workers <= 1 or len(items) <= 1:
        return [fn(item, *extra, emit) for item in items]
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Manager() as manager:
        events = manager.Queue()
        with _relay(events, emit), ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                       initargs=(threads, events)) as pool:
            futures = [pool.submit(fn, item, *extra, None) for item in items]
            return [f.result() for f in futures]


def _train_one(run: Run, retrain: bool, on_event: EventFn | None) -> tuple[str, bool]:
    path, trained = ensure_model(run.config, retrain=retrain, on_event=on_event or _worker_emit)
    return str(path), trained


def train_runs(runs: Sequence[Run], opts: Options, emit: EventFn) -> dict[Run, bool]:
    """Train (or reuse) every run; returns whether each was trained now."""
    emit({"event": "stage", "stage": f"training {len(runs)} models on {opts.resolved_workers()} worker(s)"})
    out = _map(_train_one, list(runs), opts.resolved_workers(), sink(emit), opts.retrain)
    return {run: trained for run, (_, trained) in zip(runs, out, strict=True)}


_DATA: dict[tuple[str, int, str | None], tuple[torch.Tensor, torch.Tensor]] = {}


def _test_data(dataset: str, samples: int, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    key = (dataset, samples, data_root)
    if key not in _DATA:
        _DATA[key] = load_dataset(dataset, "test", limit=samples, data_root=data_root)
    return _DATA[key]


def _analyse_one(run: Run, opts: Options, on_event: EventFn | None) -> dict[str, Any]:
    x, y = _test_data(run.dataset, opts.eval.samples, opts.data_root)
    path = Path(run.config.out)
    if run.evaluation == "clean":
        return clean_only(path, x, y, opts)
    return analyse(path, x, y, opts.eval, opts, cells=run.cells, robustness=True,
                   on_event=on_event or _worker_emit)


def analyse_runs(runs: Sequence[Run], opts: Options, emit: EventFn) -> dict[Run, dict[str, Any]]:
    """Evaluate every run (reusing evaluations stored in the cards); results keyed by run."""
    emit({"event": "stage", "stage": f"evaluating {len(runs)} models"})
    out = _map(_analyse_one, list(runs), opts.resolved_workers(), sink(emit), opts)
    return dict(zip(runs, out, strict=True))
