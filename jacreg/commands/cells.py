"""``python -m jacreg cells``: one cross section (NPZ, PNG, a summary), optional cell statistics, and
the film of the cells through training (``--film out.html|out.gif``, from the checkpoints' per-epoch
snapshots written by ``train --snapshot-every``)."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from ..catalog import Snapshot
from ..cells import (
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    Plane,
    adversarial_plane,
    cell_statistics,
    check_grid,
    cross_section,
    random_plane,
    sample_plane,
)
from ..cells.film import film, snapshot_runs
from ..checkpoints import load_checkpoint
from ..device import pick
from ..errors import ConfigError, ShapeError
from ..evaluation import load_test_split
from ..figures.cells import cells_png
from ..figures.film import FRAME_MS, film_gif, film_html
from ..fileio import atomic_write_bytes
from ..parsing import parse_indices, parse_through
from ..robustness import minimal_adversarial_distance
from ..training import MAX_COUNT
from .output import check_outputs, integer, seed, stage_bars, write_json

NAME = "cells"
HELP = "decision-cell cross sections and distances to the boundary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg cells`` (DESIGN.md, Command line)."""
    p = parser
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="one or more checkpoints (same input shape)")
    p.add_argument("--sample", type=integer(0, MAX_COUNT), default=0,
                   help="index of the test sample at the centre (default 0)")
    p.add_argument("--plane", choices=["random", "adversarial", "samples"], default="random",
                   help="random (seeded), adversarial (FGSM directions of the first two models) or "
                        "samples (through --sample and the two --through samples)")
    p.add_argument("--through", default=None, metavar="J,K",
                   help="samples plane: the two other sample indices (default: the next two)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random plane / random completion")
    p.add_argument("--extent", type=float, default=1.0, help="half width in L2 units of [0,1] pixels")
    p.add_argument("--resolution", type=integer(MIN_RESOLUTION, MAX_RESOLUTION), default=201,
                   help=f"points per side ({MIN_RESOLUTION}..{MAX_RESOLUTION})")
    p.add_argument("--npz", default=None, metavar="FILE", help="write the cross section (npz)")
    p.add_argument("--png", default=None, metavar="FILE", help="write the figure (png)")
    p.add_argument("--stats", type=integer(0, 10_000), default=0, metavar="N",
                   help="also print cell statistics over the first N test samples "
                        "(random and adversarial planes)")
    p.add_argument("--stats-resolution", type=integer(MIN_RESOLUTION, MAX_RESOLUTION), default=51,
                   help="grid of the statistics' maps")
    p.add_argument("--min-adversarial", choices=["none", "fmn", "deepfool"], default="none",
                   help="also report the full-space distance to the nearest adversarial (foolbox, L2)")
    p.add_argument("--film", default=None, metavar="FILE",
                   help="also play the checkpoints' per-epoch snapshots (train --snapshot-every N) on this "
                        "plane and write the film: .html (self-contained, plays offline) or .gif")
    p.add_argument("--film-ms", type=int, default=FRAME_MS, metavar="MS",
                   help="milliseconds per epoch in the film")
    p.add_argument("--full", action="store_true", help="evaluate every grid point (no refinement)")
    p.add_argument("--dataset", default=None, help="default: the first checkpoint's dataset")
    p.add_argument("--arch", default=None, help="for files without a model card (default: inferred)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=integer(1, 1 << 20), default=None)
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")


def _check_args(args: argparse.Namespace) -> None:
    check_grid(args.extent, args.resolution)
    if args.stats < 0:
        raise ConfigError(f"--stats must be a number of samples >= 0, got {args.stats}")
    if args.stats:
        check_grid(args.extent, args.stats_resolution)
    if args.sample < 0:
        raise ConfigError(f"--sample must be a test-sample index >= 0, got {args.sample}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.film and Path(args.film).suffix.lower() not in FILM_FORMATS:
        raise ConfigError(f"--film {args.film}: write the film as .html or .gif")
    if args.film_ms < 10:
        raise ConfigError(f"--film-ms must be at least 10 milliseconds, got {args.film_ms}")


FILM_FORMATS = (".html", ".htm", ".gif")


def _unique(names: list[str]) -> list[str]:
    """Names made unique (runs' cards are often all called ``model``): ``model``, ``model (2)``, ..."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _write_film(args: argparse.Namespace, runs: dict[str, list[Snapshot]], plane: Plane, dev: torch.device,
                title: str) -> list[dict[str, Any]]:
    """Compute the film over the checkpoints' snapshots, write ``--film``, print the radius per epoch."""
    movie = film(runs, plane, args.extent, args.resolution, device=dev, batch_size=args.batch_size,
                 on_event=stage_bars("film"))
    if Path(args.film).suffix.lower() == ".gif":
        data = film_gif(movie, title=title, frame_ms=args.film_ms)
    else:
        data = film_html(movie, title=f"Cells through training: {title}", frame_ms=args.film_ms)
    atomic_write_bytes(args.film, data)
    rows = movie.radii()
    print(f"film: {movie.frames} frames of {len(runs)} run(s), {movie.seconds_per_frame():.2f} s per frame "
          f"-> {args.film}")
    print(f"  {'run':<24} {'epoch':>5} {'radius':>10} {'linearised':>10} {'prediction':>10}")
    for r in rows:
        print(f"  {r['run'][:24]:<24} {r['epoch']:>5d} {r['radius']:>10.4g} {r['predicted_radius']:>10.4g} "
              f"{r['prediction']:>10d}")
    return rows


def _load_models(paths: list[str], device: torch.device, arch: str | None,
                 dataset: str | None) -> tuple[list[torch.nn.Module], list[dict[str, Any]], list[str]]:
    models, metas, names = [], [], []
    for path in paths:
        model, meta = load_checkpoint(path, arch=arch, dataset=dataset, device=str(device))
        if meta.get("inferred"):
            print(f"note: {meta['inferred']}", file=sys.stderr)
        models.append(model)
        metas.append(meta)
        names.append(str(meta.get("name") or Path(path).stem))
    shapes = [tuple(m.get("input_shape") or ()) for m in metas]
    if len({s for s in shapes if s}) > 1:
        listing = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ShapeError(f"the models take different input shapes ({listing}); "
                         "compare models of one dataset on one plane")
    return models, metas, names


def _plane(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, models: list[torch.nn.Module],
           device: torch.device) -> Plane:
    x0, y0 = x[args.sample], int(y[args.sample])
    if args.plane == "random":
        return random_plane(x0, seed=args.seed)
    if args.plane == "adversarial":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return adversarial_plane(x0, y0, models[0], models[1] if len(models) > 1 else None,
                                     seed=args.seed, device=device)
    j, k = parse_through(args.through, args.sample, len(x))
    return sample_plane(x0, x[j], x[k])


def _print_statistics(stats: list[dict[str, Any]], kind: str, args: argparse.Namespace) -> None:
    print(f"cell statistics over {args.stats} samples, {kind} planes "
          f"(extent {args.extent:g}, {args.stats_resolution}x{args.stats_resolution}):")
    print(f"  {'model':<24} {'radius mean':>12} {'median':>9} {'none found':>10} "
          f"{'area frac':>9} {'regions':>8} {'accuracy':>8}")
    for s in stats:
        print(f"  {s['name'][:24]:<24} {s['radius_mean']:>12.4g} {s['radius_median']:>9.4g} "
              f"{s['no_boundary']:>10d} {s['area_fraction_mean']:>9.3f} {s['regions_mean']:>8.2f} "
              f"{s['accuracy']:>8.3f}")


def run(args: argparse.Namespace) -> int:
    """Compute one cross section (and optional statistics), write ``--npz``/``--png``/``--json`` and
    print a summary. User errors raise JacregError (exit 2)."""
    _check_args(args)
    check_outputs(args, "npz", "png", "json")
    explicit = parse_indices(args.through, "--through") if args.plane == "samples" and args.through else []
    dev = pick(args.device)
    models, metas, names = _load_models(args.checkpoints, dev, args.arch, args.dataset)
    runs = snapshot_runs(dict(zip(_unique(names), args.checkpoints, strict=True))) if args.film else {}
    need = max([args.sample + 2, args.stats - 1] + explicit) + 1
    dataset, x, y = load_test_split(metas[0], dataset=args.dataset, limit=need, data_root=args.data_root)
    if args.sample >= x.shape[0]:
        raise ConfigError(f"sample {args.sample} does not exist: {dataset} has {x.shape[0]} test samples "
                          f"(indices 0..{x.shape[0] - 1})")
    if args.stats > x.shape[0]:
        raise ConfigError(f"--stats {args.stats}: {dataset} has only {x.shape[0]} test samples")
    plane = _plane(args, x, y, models, dev)
    if plane.note:
        print(f"note: {plane.note}", file=sys.stderr)
    y0 = int(y[args.sample])
    cs = cross_section(models, plane, args.extent, args.resolution, device=dev, batch_size=args.batch_size,
                       refine=not args.full, on_event=stage_bars("cells"))
    min_adv = None
    if args.min_adversarial != "none":
        min_adv = [minimal_adversarial_distance(m, x[args.sample], attack=args.min_adversarial, device=dev)
                   for m in models]
    if args.npz:
        cs.save_npz(args.npz)
    if args.png:
        atomic_write_bytes(args.png, cells_png(cs, names=names, title=f"{dataset} test sample "
                                               f"{args.sample} (label {y0}), {plane.kind} plane"))
    print(f"{dataset} test sample {args.sample} (label {y0}); {plane.kind} plane, seed {args.seed}; "
          f"extent {args.extent:g}, {args.resolution}x{args.resolution}; {cs.seconds:.2f} s")
    rows = []
    for m, name in enumerate(names):
        met = cs.metrics(m)
        row: dict[str, Any] = {"name": name, "prediction": int(cs.origin_label[m]),
               "confidence": float(cs.origin_confidence[m]),
               "boundary_distance": float(cs.boundary_distance[m]),
               "predicted_distance": float(cs.predicted_distance[m]),
               "area_fraction": met["area_fraction"], "regions": int(met["regions"]),
               "evaluations": int(cs.evaluations[m])}
        if min_adv is not None:
            row["min_adversarial_distance"] = float(min_adv[m])
        rows.append(row)
        radius = (f"{row['boundary_distance']:.4g}" if math.isfinite(row["boundary_distance"])
                  else f"> {4 * args.extent:g} (none found)")
        extra = (f", nearest adversarial ({args.min_adversarial}) {row['min_adversarial_distance']:.4g}"
                 if min_adv is not None else "")
        print(f"  {name}: predicts {row['prediction']} (p={row['confidence']:.3f}), "
              f"in-plane radius {radius} (linearised {row['predicted_distance']:.4g}), "
              f"cell {100 * row['area_fraction']:.1f}% of the window, {row['regions']} regions, "
              f"{row['evaluations']} evaluations{extra}")
    film_rows = None
    if args.film:
        film_rows = _write_film(args, runs, plane, dev, f"sample {args.sample}, {plane.kind} plane")
    stats: dict[str, list[dict[str, Any]]] = {}
    if args.stats:
        for kind in ("random", "adversarial"):
            stats[kind] = cell_statistics(models, x[:args.stats], y[:args.stats], args.stats, kind,
                                          extent=args.extent, resolution=args.stats_resolution,
                                          seed=args.seed, names=names, device=dev,
                                          batch_size=args.batch_size, on_event=stage_bars("statistics"))
            _print_statistics(stats[kind], kind, args)
    write_json(args.json, {
        "dataset": dataset, "sample": args.sample, "label": y0, "plane": plane.kind,
        "note": plane.note, "seed": args.seed, "extent": args.extent, "resolution": args.resolution,
        "seconds": cs.seconds, "models": rows, "npz": args.npz, "png": args.png, "stats": stats,
        "film": args.film, "film_frames": film_rows,
    })
    return 0
