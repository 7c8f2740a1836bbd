"""Command line: ``python -m jacreg train|eval|cells|robustness|reproduce ...``.

The commands call the same library functions as the app. Human progress goes to stderr (tqdm);
``--json FILE`` writes the result. Exit codes: 0 success, 2 user error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import JacregError
from .fileio import atomic_write_json

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every user error goes through one path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def write_json(path: str | None, result: dict[str, Any]) -> None:
    """Write a command's result to ``--json FILE`` (atomically), if given."""
    if path:
        atomic_write_json(path, result)


def parse_floats(text: str, what: str = "values") -> list[float]:
    """Parse ``"0,0.1,0.2"`` into floats (JacregError on bad input)."""
    from .errors import ConfigError

    try:
        vals = [float(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{what}: give at least one number")
    return vals


# --- train / eval ------------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    from .training import add_train_arguments

    p = sub.add_parser("train", help="train a model (plain, L2, dropout, JR, adversarial training)")
    add_train_arguments(p)
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import run_train_command

    return run_train_command(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="clean accuracy and mean ||J||_F of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--samples", type=int, default=None, help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, metavar="FILE")
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .training import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, samples=args.samples,
                                 batch_size=args.batch_size, device=args.device,
                                 data_root=args.data_root, progress=True)
    write_json(args.json, result)
    print(json.dumps(result))
    return 0


# --- cells (jacreg.cells) ----------------------------------------------------------------------

def _add_cells(sub: argparse._SubParsersAction) -> None:
    try:
        from .cells import add_cells_arguments, run_cells_command
    except ImportError:
        return
    p = sub.add_parser("cells", help="decision-cell cross sections and distances to the boundary")
    add_cells_arguments(p)
    p.set_defaults(handler=run_cells_command)


# --- robustness (jacreg.robustness) ------------------------------------------------------------

def _add_robustness(sub: argparse._SubParsersAction) -> None:
    try:
        from .robustness import add_robustness_arguments, run_robustness_command
    except ImportError:
        return
    p = sub.add_parser("robustness", help="accuracy-vs-epsilon curves from foolbox attacks")
    add_robustness_arguments(p)
    p.set_defaults(handler=run_robustness_command)


# --- reproduce (jacreg.reproduce) --------------------------------------------------------------

def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    try:
        from .reproduce import add_reproduce_arguments, run_reproduce_command
    except ImportError:
        return
    p = sub.add_parser("reproduce", help="train the zoo and reproduce the paper's tables and figures")
    add_reproduce_arguments(p)
    p.set_defaults(handler=run_reproduce_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m jacreg", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"jacreg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_train, _add_eval, _add_cells, _add_robustness, _add_reproduce):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.handler(args) or 0)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JacregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
