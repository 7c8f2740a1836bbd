"""``python -m jacreg robustness``: an accuracy-vs-epsilon curve of a checkpoint from a foolbox attack."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..checkpoints import load_checkpoint
from ..device import pick
from ..errors import ConfigError
from ..evaluation import load_test_split
from ..figures.robustness import save_curves_png
from ..fileio import atomic_write_text
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
from .output import bar, print_json, write_json

NAME = "robustness"
HELP = "accuracy-vs-epsilon curves from foolbox attacks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg robustness``."""
    parser.add_argument("checkpoint", help="a .safetensors (or torch state_dict) checkpoint")
    parser.add_argument("--dataset", default=None, help="test data (default: the checkpoint's dataset)")
    parser.add_argument("--attack", default="pgd", metavar="NAME",
                        help=f"one of {', '.join(names())} (default: pgd)")
    parser.add_argument("--eps", default=None, metavar="E1,E2,...",
                        help="epsilons in the attack's norm, pixel units (images in [0,1]); sorted if "
                             "unsorted (default: the attack's grid)")
    parser.add_argument("--samples", type=int, default=500, help="the first N test samples (default 500)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a foolbox parameter of the attack, e.g. --param steps=20 (repeatable)")
    parser.add_argument("--check-masking", action="store_true",
                        help="also run PGD with an unbounded budget (epsilon 1) and warn unless it "
                             "reaches chance accuracy")
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


def run(args: argparse.Namespace) -> int:
    """Load safely, attack the first N test samples, write the files."""
    spec = get_attack(args.attack)
    eps = parse_floats(args.eps, "--eps") if args.eps is not None else None
    if args.samples is None or args.samples < 1:
        raise ConfigError("--samples must be at least 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    params = parse_params(args.param, spec)
    dev = pick(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=str(dev))
    ds, x, y = load_test_split(meta, dataset=args.dataset, limit=args.samples, data_root=args.data_root)
    if len(x) < args.samples:
        print(f"note: {ds} has only {len(x)} test samples", file=sys.stderr)
    checked, _ = check_epsilons(spec.default_epsilons if eps is None else eps, spec, tuple(x.shape[1:]))
    progress = bar(100, spec.name, enabled=not args.quiet, bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def on_event(ev: dict[str, Any]) -> None:
        if progress is not None and "progress" in ev:
            progress.n = round(100 * float(ev["progress"]))
            progress.refresh()

    try:
        result = curve(model, x, y, spec, checked if eps is None else eps, batch_size=args.batch_size,
                       device=dev, on_event=on_event, seed=args.seed, **params)
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
