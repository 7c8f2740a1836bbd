"""What the commands share: ``--json`` files, progress bars on stderr, and a SIGTERM that stops."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from ..events import Event, EventFn
from ..fileio import atomic_write_json, dumps

__all__ = ["bar", "print_json", "stage_bars", "stop_on_sigterm", "write_json"]


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
