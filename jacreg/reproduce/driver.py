"""``python -m jacreg reproduce``: train (or reuse) and evaluate the models, then write the outputs."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_checkpoint
from ..data import dataset_spec, is_available, load_dataset
from ..device import pick
from ..errors import ConfigError, DatasetUnavailable, JacregError
from ..events import EventFn, sink
from ..fileio import atomic_write_text
from .first_view import choose_first_view, write_first_view
from .plan import Run, analyse_runs, plan, train_runs
from .report import (
    fig3_summary,
    machine,
    write_cells_figures,
    write_cells_table,
    write_claims,
    write_fig2,
    write_fig3,
    write_iterations,
    write_report,
    write_table1,
    write_table2,
    zoo_readme,
)
from .settings import FASHION, FASHION_KEYS, FIG1, FIG2, SETTINGS, Options, quick_spec, zoo_dir
from .timing import read_from_scratch, write_from_scratch

__all__ = ["resolve_options", "run"]

Results = dict[str, list[dict[str, Any]]]


def resolve_options(opts: Options) -> Options:
    """Check the options and fill in what they imply (``--quick``'s small evaluation, ``--samples``).

    Raises:
        ConfigError: a count below 1, or a dataset the reproduction does not train on.
    """
    if opts.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if opts.epochs is not None and opts.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    if opts.dataset == "usps":
        opts = replace(opts, dataset="mnist-5k", transfer="usps")
    if opts.dataset not in ("mnist-5k", "mnist"):
        raise ConfigError(f"reproduce trains LeNet' on mnist-5k or mnist (or --dataset usps for Table 2), "
                          f"got {opts.dataset!r}")
    dataset_spec(opts.dataset)
    if opts.quick:
        opts = replace(opts, eval=quick_spec(), figure_resolution=min(opts.figure_resolution, 21))
    spec = opts.eval
    for name, value in (("--samples", opts.samples), ("--cell-samples", opts.cell_samples)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1")
    if opts.samples is not None:
        spec = replace(spec, samples=opts.samples)
    if opts.cell_samples is not None:
        spec = replace(spec, cell_samples=opts.cell_samples)
    pick(opts.device)
    return replace(opts, eval=spec)


def _fashion_available(opts: Options, emit: EventFn) -> tuple[bool, str]:
    """Whether the Fashion-MNIST runs can be made here; else a note saying how to get the data."""
    if not opts.fashion or opts.dataset != "mnist-5k":
        return False, ""
    if is_available(FASHION, "test", data_root=opts.data_root):
        return True, ""
    note = ("Fashion-MNIST is not available here, so its rows are left out: install Debian's "
            "`dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`) or run where torchvision can "
            "download it to --data-root, then run `python -m jacreg reproduce` again")
    emit({"event": "note", "message": note})
    return False, note


def _group(runs: dict[Run, dict[str, Any]], group: str) -> Results:
    """Evaluations of one group of runs, by setting key (one per seed, in seed order)."""
    out: Results = {}
    for run, res in sorted(runs.items(), key=lambda kv: (kv[0].key, kv[0].seed, kv[0].epochs)):
        if run.group == group:
            out.setdefault(run.key, []).append({**res, "seed": run.seed, "epochs": run.epochs})
    return out


def _write_reproduction(results: Results, fashion: Results, iterations: Results, opts: Options,
                        x: torch.Tensor, y: torch.Tensor,
                        emit: EventFn) -> tuple[list[list[Any]], dict[str, Any]]:
    """Table 1, Fig. 2, Fig. 3, the studies, the cell statistics and the cross-section figures."""
    out = Path(opts.out)
    emit({"event": "stage", "stage": "tables"})
    table1 = write_table1(results, fashion, out, opts.dataset)
    histories = {k: [r["card"].get("history") or [] for r in results[k]] for k, _ in FIG2 if k in results}
    write_fig2(histories, opts.resolved_epochs(), out)
    write_fig3(results, out)
    if fashion:
        write_fig3(fashion, out, name="fig3_fashion", keys=[(k, SETTINGS[k].label) for k in FASHION_KEYS],
                   title="Fig. 3 on Fashion-MNIST (60,000 / 10,000 images)")
    write_claims(results, out)
    write_iterations(results, iterations, out)
    write_cells_table(results, out)
    emit({"event": "stage", "stage": "cross sections"})
    dev = str(pick(opts.device))
    models = {k: load_checkpoint(Path(results[k][0]["path"]), device=dev)[0] for k, _ in FIG1}
    plane_models = (models["none"], load_checkpoint(Path(results["jr-fgsm-at"][0]["path"]), device=dev)[0])
    parts = {"figure_cells": write_cells_figures(models, plane_models, x, y, opts, out, emit),
             "fig3_summary": fig3_summary(results)}
    return table1, parts


def _write_first_view(results: Results, opts: Options, emit: EventFn) -> str | None:
    """``first_view.json`` beside the zoo's plain and JR models (their trained files, reused): the
    dashboard's opening view; a note instead when it cannot be chosen (e.g. models trained too
    briefly to classify any candidate sample)."""
    if "none" not in results or "jr" not in results:
        return None
    paths = [Path(results[k][0]["path"]) for k in ("none", "jr")]
    if paths[0].parent != paths[1].parent:
        return None
    emit({"event": "stage", "stage": "first view"})
    try:
        dev = str(pick(opts.device))
        models = {p.stem: load_checkpoint(p, device=dev)[0] for p in paths}
        candidates = 10 if opts.quick else 40
        x, y = load_dataset(opts.dataset, "test", limit=candidates, data_root=opts.data_root)
        view = choose_first_view(models, x, y, candidates=candidates, resolution=21 if opts.quick else 61,
                                 dataset=opts.dataset, device=dev)
    except JacregError as exc:
        emit({"event": "note", "message": f"no first view for the dashboard: {exc}"})
        return None
    return str(write_first_view(view, paths[0].parent))


def run(opts: Options, on_event: EventFn | None = None, command: str = "") -> dict[str, Any]:
    """Train (or reuse) and evaluate the models; write the zoo README (``--zoo``) or the reproduction.

    Returns a dict with the output paths and the main numbers.
    """
    t0 = time.perf_counter()
    emit = sink(on_event)
    transfer_only = opts.dataset == "usps"
    opts = resolve_options(opts)
    if transfer_only:
        load_dataset("usps", "test", limit=1, data_root=opts.data_root)  # DatasetUnavailable: exit 2
    with_fashion, fashion_note = _fashion_available(opts, emit) if not transfer_only else (False, "")
    runs = plan(opts, fashion=with_fashion, transfer_only=transfer_only)
    trained = train_runs(runs, opts, emit)
    evaluated = analyse_runs(runs, opts, emit)
    trained_now = sum(trained.values())
    results, fashion, iterations = (_group(evaluated, g) for g in ("main", "fashion", "iterations"))
    models = [run.config.out for run in runs]
    if opts.zoo:
        readme = zoo_dir(opts) / "README.md"
        first = _write_first_view(results, opts, emit)
        seconds = time.perf_counter() - t0
        if trained_now == len(runs):  # every model trained here: the zoo's time from scratch
            write_from_scratch(zoo_dir(opts), seconds, trained_now, opts.resolved_workers(), machine())
        atomic_write_text(readme, zoo_readme(results, fashion, opts, seconds, trained_now, fashion_note,
                                             from_scratch=read_from_scratch(zoo_dir(opts))))
        emit({"event": "done", "path": str(readme), "seconds": time.perf_counter() - t0})
        return {"readme": str(readme), "models": models, "seconds": time.perf_counter() - t0,
                "fashion_note": fashion_note, "first_view": first}
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Any] = {"command": command or "python -m jacreg reproduce", "trained": trained_now,
                             "total": len(runs), "fashion_note": fashion_note}
    transfer_rows, transfer_note = None, ""
    if opts.transfer and opts.transfer != "none":
        emit({"event": "stage", "stage": "table2"})
        transfer_rows, transfer_note = write_table2(results, opts.transfer, opts, out, emit)
        if transfer_rows is None and transfer_only:
            raise DatasetUnavailable(transfer_note)
    table1: list[list[Any]] = []
    if not transfer_only:
        x, y = load_dataset(opts.dataset, "test", limit=opts.eval.samples, data_root=opts.data_root)
        table1, figure_parts = _write_reproduction(results, fashion, iterations, opts, x, y, emit)
        parts.update(figure_parts)
    parts["table2_note"] = transfer_note
    parts["seconds"] = time.perf_counter() - t0
    write_report(out, opts, parts)
    emit({"event": "done", "path": str(out / "report.md"), "seconds": parts["seconds"]})
    return {"out": str(out), "table1": table1, "table2": transfer_rows, "table2_note": transfer_note,
            "fashion_note": fashion_note, "models": models, "seconds": parts["seconds"]}
