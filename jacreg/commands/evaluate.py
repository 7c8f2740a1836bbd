"""``python -m jacreg eval``: clean accuracy and mean ||J||_F of a checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..evaluation import evaluate_checkpoint
from ..training import MAX_COUNT
from .output import bar, check_outputs, integer, print_json, write_json

NAME = "eval"
HELP = "clean accuracy and mean ||J||_F of a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    parser.add_argument("--arch", default=None, help="for a file without a model card (default: inferred)")
    parser.add_argument("--samples", type=integer(1, MAX_COUNT), default=None,
                        help="first N test samples (default: all)")
    parser.add_argument("--batch-size", type=integer(1, 65536), default=250)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    check_outputs(args, "json")
    progress = None

    def on_start(total: int) -> None:
        nonlocal progress
        progress = bar(total, "eval")

    try:
        result = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, samples=args.samples,
                                     batch_size=args.batch_size, device=args.device, data_root=args.data_root,
                                     arch=args.arch,
                                     on_start=on_start,
                                     on_batch=lambda n: progress.update(n) if progress is not None else None)
    finally:
        if progress is not None:
            progress.close()
    if result.get("note"):
        print(f"note: {result['note']}", file=sys.stderr)
    write_json(args.json, result)
    print_json(result)
    return 0
