"""``python -m jacreg train``: one option per :class:`~jacreg.training.TrainConfig` field."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from ..events import Event
from ..jobs.remote import check_remote_config, describe_worker, ray_address, train_remote
from ..training import TrainConfig, train
from .output import add_backend_arguments, bar, check_outputs, print_json, stop_on_sigterm, write_json

NAME = "train"
HELP = "train a model (plain, L2, dropout, JR, adversarial training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (its metadata gives the help and choices), plus --json, --quiet."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        help_text = f.metadata.get("help")
        if kind == "bool":
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kw: dict[str, Any] = {"default": f.default, "help": help_text}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if kind.startswith("int"):
            kw["type"] = int
        elif kind.startswith("float"):
            kw["type"] = float
        parser.add_argument(flag, **kw)
    add_backend_arguments(parser)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the final metrics as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _epoch_line(event: Event) -> str:
    text = (f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f} "
            f"train acc {event['train_accuracy']:.4f}")
    if "test_accuracy" in event:
        text += f" test acc {event['test_accuracy']:.4f} mean ||J||_F {event['jacobian_norm_mean']:.3f}"
    return text


def run(args: argparse.Namespace) -> int:
    """Train with a progress bar on stderr, events to --events, the result to --json."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    address = ray_address(args.ray_address) if args.backend == "ray" else None
    config = check_remote_config(TrainConfig(**values)) if address else TrainConfig(**values).validate()
    check_outputs(args, "out", "events", "json")
    if config.events:
        Path(config.events).parent.mkdir(parents=True, exist_ok=True)
    progress = None

    def on_event(event: Event) -> None:
        nonlocal progress
        kind = event["event"]
        if kind == "start" and event.get("backend"):
            print(describe_worker(event["backend"]), file=sys.stderr)
        if kind == "start" and not args.quiet:
            progress = bar(event["total_steps"], "train")
            if progress is not None:
                progress.update(event["start_epoch"] * event["steps_per_epoch"])
        elif kind == "step" and progress is not None:
            progress.n = event["step"]
            progress.set_postfix(loss=f"{event['loss']:.3f}", jr=f"{event['jr']:.3g}", refresh=False)
            progress.refresh()
        elif kind in ("epoch", "jr_estimator"):
            line = (_epoch_line(event) if kind == "epoch"
                    else f"JR estimator: {event['method']} ({event['reason']})")
            if progress is not None:
                progress.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    try:
        with stop_on_sigterm():
            result = train_remote(config, address, on_event) if address else train(config, on_event)
    finally:
        if progress is not None:
            progress.close()
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(args.json, result)
        print_json(result)
    return 0
