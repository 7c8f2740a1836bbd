"""``python -m jacreg robustness``: an accuracy-vs-epsilon curve of a checkpoint from a foolbox attack."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_checkpoint
from ..device import pick
from ..errors import ConfigError
from ..evaluation import load_test_split
from ..events import EventFn
from ..figures.robustness import save_curves_png
from ..fileio import atomic_write_text
from ..jobs.remote import CARD_KEYS, RaySession, describe_worker, ray_address
from ..parsing import parse_floats
from ..robustness import (
    DEFAULT_BATCH_SIZE,
    check_epsilons,
    curve,
    get_attack,
    masking_probe,
    names,
    parse_params,
    sanity_check,
    to_csv,
    to_jsonable,
)
from ..training import MAX_COUNT
from .output import (
    add_backend_arguments,
    bar,
    check_outputs,
    integer,
    print_json,
    seed,
    stop_on_sigterm,
    write_json,
)

NAME = "robustness"
HELP = "accuracy-vs-epsilon curves from foolbox attacks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg robustness``."""
    parser.add_argument("checkpoint", help="a .safetensors (or torch state_dict) checkpoint")
    parser.add_argument("--dataset", default=None, help="test data (default: the checkpoint's dataset)")
    parser.add_argument("--arch", default=None, help="for a file without a model card (default: inferred)")
    parser.add_argument("--attack", default="pgd", metavar="NAME",
                        help=f"one of {', '.join(names())} (default: pgd)")
    parser.add_argument("--eps", default=None, metavar="E1,E2,...",
                        help="epsilons in the attack's norm, pixel units (images in [0,1]); sorted if "
                             "unsorted (default: the attack's grid)")
    parser.add_argument("--samples", type=integer(1, MAX_COUNT), default=500,
                        help="the first N test samples (default 500)")
    parser.add_argument("--batch-size", type=integer(1, 65536), default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a foolbox parameter of the attack, e.g. --param steps=20 (repeatable)")
    parser.add_argument("--check-masking", action="store_true",
                        help="also run PGD with an unbounded budget (epsilon 1) and warn unless it "
                             "reaches chance accuracy")
    add_backend_arguments(parser)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    parser.add_argument("--csv", default=None, metavar="FILE", help="write epsilon,accuracy rows")
    parser.add_argument("--png", default=None, metavar="FILE", help="plot the curve")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _report(result: dict[str, Any]) -> None:
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for e, a in zip(result["epsilons"], result["accuracy"], strict=True):
        print(f"  eps {e:<8g} accuracy {a:.4f}", file=sys.stderr)
    print(f"{result['title']}: {result['samples']} samples in {result['seconds']:.1f} s", file=sys.stderr)


def _on_ray(args: argparse.Namespace, address: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            attack: str, grid: list[float], params: dict[str, Any],
            on_event: EventFn) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The curve (and the masking probe) on one Ray worker; SIGTERM stops it like Ctrl-C."""
    options = {"batch_size": args.batch_size, "seed": args.seed}
    with stop_on_sigterm(), RaySession(address, device=args.device) as session:
        where = session.info
        print(describe_worker(where), file=sys.stderr)
        result = session.curve(model, x, y, attack, grid, on_event=on_event, **options, **params)
        probe = session.curve(model, x, y, "pgd", None, probe=True, **options) if args.check_masking else None
    result["backend"] = {k: where.get(k) for k in CARD_KEYS}
    return result, probe


def run(args: argparse.Namespace) -> int:
    """Load safely, attack the first N test samples, write the files."""
    check_outputs(args, "json", "csv", "png")
    spec = get_attack(args.attack)
    eps = parse_floats(args.eps, "--eps") if args.eps is not None else None
    if args.samples is None or args.samples < 1:
        raise ConfigError("--samples must be at least 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    params = parse_params(args.param, spec)
    spec.build(**params)  # every parameter checked before any work
    address = ray_address(args.ray_address) if args.backend == "ray" else None
    dev = pick("cpu" if address else args.device)  # on Ray, --device is the worker's
    model, meta = load_checkpoint(args.checkpoint, arch=args.arch, dataset=args.dataset, device=str(dev))
    if meta.get("inferred"):
        print(f"note: {meta['inferred']}", file=sys.stderr)
    ds, x, y = load_test_split(meta, dataset=args.dataset, limit=args.samples, data_root=args.data_root)
    if len(x) < args.samples:
        print(f"note: {ds} has only {len(x)} test samples", file=sys.stderr)
    checked, _ = check_epsilons(spec.default_epsilons if eps is None else eps, spec, tuple(x.shape[1:]))
    progress = bar(100, spec.name, enabled=not args.quiet, bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def on_event(ev: dict[str, Any]) -> None:
        if progress is not None and "progress" in ev:
            progress.n = round(100 * float(ev["progress"]))
            progress.refresh()

    grid = checked if eps is None else eps
    try:
        if address:
            result, probe = _on_ray(args, address, model, x, y, spec.name, grid, params, on_event)
        else:
            result = curve(model, x, y, spec, grid, batch_size=args.batch_size, device=dev, on_event=on_event,
                           seed=args.seed, **params)
            probe = (masking_probe(model, x, y, batch_size=args.batch_size, device=dev, seed=args.seed)
                     if args.check_masking else None)
    finally:
        if progress is not None:
            progress.close()
    result["model"] = meta.get("name") or os.path.basename(str(args.checkpoint))
    result.update({"checkpoint": str(args.checkpoint), "dataset": ds})
    result["warnings"] = sanity_check([result] + ([dict(probe, model=result["model"])] if probe else []))
    if probe is not None:
        result["masking_probe"] = {"epsilon": 1.0, "accuracy": probe["accuracy"][0],
                                   "seconds": probe["seconds"], "samples": probe["samples"]}
    _report(result)
    out = to_jsonable(result)
    write_json(args.json, out)
    if args.csv:
        atomic_write_text(args.csv, to_csv(result))
    if args.png:
        save_curves_png([result], args.png)
    print_json({k: out[k] for k in ("attack", "epsilons", "accuracy", "samples", "seconds")})
    return 0
