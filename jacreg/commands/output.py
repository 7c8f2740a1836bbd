"""What the commands share: ``--json`` files, progress bars on stderr, and a SIGTERM that stops."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from ..events import Event, EventFn
from ..fileio import atomic_write_json, check_writable, dumps
from ..parsing import MAX_SEED

__all__ = ["add_backend_arguments", "bar", "check_outputs", "integer", "print_json", "seed", "stage_bars",
           "stop_on_sigterm", "write_json"]


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``lo`` to ``hi`` (a clean usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r:.40}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo:,} to {hi:,}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


#: argparse type of a random seed.
seed = integer(0, MAX_SEED)


def check_outputs(args: argparse.Namespace, *options: str) -> None:
    """Before any work: every output file given (``--json``, ``--png``, ...) can be written."""
    for option in options:
        check_writable(getattr(args, option, None), f"--{option.replace('_', '-')}")


def write_json(path: str | None, result: Any) -> None:
    """Write a command's result to ``--json FILE`` (atomically, strict JSON), if given."""
    if path:
        atomic_write_json(path, result)


def print_json(result: Any) -> None:
    """The result as one line of strict JSON on stdout."""
    print(dumps(result))


def bar(total: int, desc: str, *, enabled: bool = True, **kwargs: Any) -> tqdm | None:
    """A tqdm bar on stderr (None when disabled)."""
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)


def stage_bars(desc: str) -> EventFn:
    """An ``on_event`` that draws one percentage bar per stage and model of ``progress`` events
    (``{"stage", "model", "models", "fraction"}``), as cross sections and cell statistics send them."""
    state: dict[str, Any] = {"key": None, "bar": None}

    def on_event(ev: Event) -> None:
        key = (ev.get("stage"), ev.get("model"))
        if key != state["key"]:
            if state["bar"] is not None:
                state["bar"].close()
            label = f"{desc} {ev.get('stage')}"
            if ev.get("model") is not None:
                label += f" model {int(ev['model']) + 1}/{ev.get('models')}"
            state["bar"] = tqdm(total=100, desc=label, leave=False, file=sys.stderr,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
            state["key"] = key
        progress = state["bar"]
        progress.n = round(100 * float(ev.get("fraction", 0.0)))
        progress.refresh()
        if ev.get("fraction", 0.0) >= 1.0 and ev.get("stage") != "map":
            progress.close()
            state["bar"], state["key"] = None, None

    return on_event


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend local|ray`` and ``--ray-address``: where a long command runs."""
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: in this process (default); ray: on a Ray cluster (pip install "
                             "'jacreg[ray]'), with the files and events coming back here")
    parser.add_argument("--ray-address", default=None, metavar="[ray://]HOST:PORT",
                        help="the Ray head: HOST:PORT (its --port) on a node of the cluster, "
                             "ray://HOST:PORT (its client port, default 10001) from elsewhere "
                             "(default $JACREG_RAY_ADDRESS)")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside: SIGTERM raises KeyboardInterrupt, so a stopped job ends like Ctrl-C (its last
    checkpoint kept, a ``stopped`` event written)."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
