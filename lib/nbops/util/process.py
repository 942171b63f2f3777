"""Processes: is a pid still the process we started, and killing a whole process group.

Linux facts are read from ``/proc/<pid>/stat`` once per check; the start tick tells a
reused pid from the original process.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _start_tick(fields: list[str] | None) -> int | None:
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """The kernel's start tick of a process (Linux), to tell a reused pid from the original."""
    return _start_tick(_stat_fields(pid))


def process_alive(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` still runs the process that started at ``start_time``."""
    fields = _stat_fields(pid)
    current = _start_tick(fields)
    if fields is None or current is None or fields[0] == "Z":
        return False
    return start_time is None or current == start_time


def kill_process_group(pid: int | None) -> None:
    """SIGKILL the process group of ``pid`` (or ``pid`` alone); gone processes are fine."""
    if not pid:
        return
    try:
        os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
