"""Progress events: the one callback type every long computation takes.

Long work (training, cross sections, robustness curves, the reproduction) reports progress by
calling ``on_event(event)`` with a plain ``dict`` whose ``"event"`` key names the kind of event
(``"start"``, ``"progress"``, ``"epoch"``, ``"done"``, ...). The command line renders events with
tqdm, the app with ``st.progress`` and charts, background jobs append them to a JSON-lines file.
A callback may return ``False`` to ask the computation to stop where it supports stopping
(:func:`jacreg.robustness.curve`, :func:`jacreg.cells.cross_section`); any other return value
is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Event", "EventFn", "Stopped", "sink"]

#: One event: a JSON-able dict with at least ``"event"``.
Event = dict[str, Any]
#: The progress callback every long computation takes.
EventFn = Callable[[Event], Any]


class Stopped(Exception):
    """Raised inside a computation whose ``on_event`` callback returned ``False`` (asked to stop)."""


def _ignore(event: Event) -> None:
    return None


def sink(on_event: EventFn | None) -> EventFn:
    """``on_event`` itself, or a callback that ignores every event when it is None."""
    return on_event if on_event is not None else _ignore
