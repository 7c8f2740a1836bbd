"""Processes of a job: is a recorded pid still the process we started, and signalling it safely.

A status file is data, not authority: a pid read from it is signalled only when it is verifiably
the job's own process, i.e. it is alive, larger than 1, not this process, started when the status
says (kernel start time, so a reused pid does not count) and carries the job's id in its
environment (``JACREG_JOB_ID``, set by :func:`jacreg.jobs.start_job`; only processes of the same
user are readable). A job's processes can also be found by that id alone, which is how a job whose
status file is corrupt is still stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

__all__ = ["JOB_ID_ENV", "is_job_process", "job_processes", "pid_alive", "proc_start_time", "proc_state",
           "signal_job_processes"]

#: The environment variable that marks every process of a job (children inherit it).
JOB_ID_ENV = "JACREG_JOB_ID"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        return text[text.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where unknown."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of stat; fields[0] is field 3 (state)
    except (ValueError, IndexError):
        return None


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, Z, ...), or None where unknown."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _valid_pid(pid: object) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid < 2**31


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live process and, if ``start_time`` is given, the same process.

    A zombie (exited, not yet reaped) counts as dead; a pid reused by a newer process (its start
    time differs from the recorded one) counts as dead too; so do pids <= 1 and non-integers.
    """
    if not _valid_pid(pid):
        return False
    assert isinstance(pid, int)
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


def _environ_has(pid: int, job_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read(1 << 20)
    except OSError:
        return False
    return f"{JOB_ID_ENV}={job_id}".encode() in env.split(b"\0")


def is_job_process(pid: object, start_time: object, job_id: str) -> bool:
    """Whether ``pid`` is verifiably a live process of job ``job_id`` (see the module docstring)."""
    if not _valid_pid(pid) or pid == os.getpid():
        return False
    assert isinstance(pid, int)
    start = start_time if isinstance(start_time, int) and not isinstance(start_time, bool) else None
    return pid_alive(pid, start) and (start is not None or start_time is None) and _environ_has(pid, job_id)


def job_processes(job_id: str) -> list[int]:
    """The live processes whose environment carries ``JACREG_JOB_ID=<job_id>`` (this user's)."""
    me = os.getpid()
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            pid = int(name)
            if pid != me and _valid_pid(pid) and _environ_has(pid, job_id) and pid_alive(pid):
                out.append(pid)
    return sorted(out)


def signal_job_processes(pids: Iterable[int], job_id: str, sig: signal.Signals) -> int:
    """Send ``sig`` to each verified process of the job (its whole group when it leads one that is
    not this process's); returns how many were signalled. Never signals pid or group <= 1."""
    sent = 0
    own_group = os.getpgid(0)
    for pid in sorted(set(pids)):
        if not is_job_process(pid, None, job_id):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group == pid and group > 1 and group != own_group:
                os.killpg(group, sig)
            else:
                os.kill(pid, sig)
            sent += 1
    return sent
