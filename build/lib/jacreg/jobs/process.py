"""Processes: is a recorded pid still the process we started, and signalling its group safely."""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["pid_alive", "proc_start_time", "signal_group"]


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    try:
        fields = text[text.rindex(")") + 2:].split()
        return int(fields[19])  # field 22 of stat; fields[0] is field 3 (state)
    except (ValueError, IndexError):
        return None


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        return text[text.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process and, if ``start_time`` is given, the same process.

    A zombie (exited, not yet reaped) counts as dead; a pid reused by a newer process (its start
    time differs from the recorded one) counts as dead too.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if proc_state(pid) in ("Z", "X"):
        return False
    if start_time is not None:
        now = proc_start_time(pid)
        if now is not None and now != start_time:
            return False
    return True


def signal_group(pgid: int, pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    except (PermissionError, OSError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
