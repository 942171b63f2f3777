"""Processes: is a pid still the process we started, and killing a whole process group.

Linux facts are read from ``/proc/<pid>/stat`` once per check; the start tick tells a
reused pid from the original process. ``marked`` finds processes by a variable of their
starting environment (``/proc/<pid>/environ``): how a run's leftovers are found after
their parent kernel exited.
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


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (Linux); empty elsewhere."""
    found: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        fields = _stat_fields(int(entry))
        if fields and len(fields) > 1 and fields[1].isdigit():
            found.setdefault(int(fields[1]), []).append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), including those that
    left its process group or session."""
    children = _children_map()
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def kill_process_tree(pid: int | None, start_time: int | None = None) -> None:
    """SIGKILL ``pid``, its process group and every descendant (even one that started a new
    session). With ``start_time``, descendants are looked for only while ``pid`` is still
    the process that started then (a reused pid is never followed)."""
    if not pid:
        return
    pid = int(pid)
    family: list[int] = []
    if process_alive(pid, start_time):
        try:
            os.kill(pid, signal.SIGSTOP)  # the kernel starts no new children meanwhile
        except (ProcessLookupError, PermissionError, OSError):
            pass
        family = descendants(pid)
    kill_process_group(pid)
    for child in family:
        kill_process_group(child)


def marked(name: str, value: str) -> list[int]:
    """Processes (Linux; of any user we may read) that started with ``name=value`` in their
    environment, this one left out: what a run's kernel started, found even when the kernel
    is gone and they were handed to init (they inherit the run's folder variable)."""
    needle = f"{name}={value}".encode()
    found: list[int] = []
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for pid in entries:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if pid != os.getpid() and needle in environ.split(b"\0"):
            found.append(pid)
    return found


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
