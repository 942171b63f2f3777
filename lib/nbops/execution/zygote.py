"""The zygote: a Python process that imports the templates' modules once and forks a kernel
for every run (``python -m nbops.execution.zygote FD``; only the standard library here).

Why: a kernel per run keeps runs isolated, but every new process pays the imports again
(pandas, scikit-learn, MLflow: 3-8 s each on two cores). A process forked from one that
has them imported starts with them in ``sys.modules`` at the cost of a ``fork`` (copy on
write), and is still a process of its own: nothing one run does reaches another.

Protocol: JSON requests on the ``SOCK_SEQPACKET`` socket ``FD``, one reply each:

- ``{"op": "preload", "modules": [...]}``: import them (in order, failures skipped); if
  one brings in a module that must never be imported outside a kernel (:data:`SENSITIVE`)
  or starts a thread, the reply names it (``tainted_by``) and the client forks no more
  from this zygote (a new one leaves that module out);
- ``{"op": "fork", "connection_file", "env", "cwd"}`` with two file descriptors (the
  kernel's stdout and stderr): a child in a session of its own, with exactly that
  environment and working folder, runs ``ipykernel`` on the connection file; the reply
  is its pid and start time (``/proc/PID/stat``, against pid reuse);
- ``{"op": "status", "pid"}``: the exit code of a child reaped, else null.

Invariants: the zygote never runs a thread of its own (a fork copies only the calling
thread; a thread started by an imported module is reported and the client stops forking);
it reaps its children at once; when its driver ends (even by SIGKILL) it kills the process
group of every child still running and exits, so nothing outlives the driver. Two signs
tell it: the socket closes or a reply cannot be sent (noticed between requests), and, on
Linux, ``PR_SET_PDEATHSIG`` (noticed at once, even in the middle of a long import; the
signal also comes when only the driver's thread that started the zygote ends, so the
handler ends the zygote only once its parent is no longer the driver's process). A
child closes the socket, is killed when the zygote ends (``PR_SET_PDEATHSIG``, on Linux),
gets default signal handlers, reseeds numpy's global generator (Python's ``random``
reseeds itself after a fork) and never returns into the zygote's loop.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading
import traceback
import warnings
from typing import Any

MAX_MESSAGE = 1 << 22
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# modules that hook into the running IPython shell when they are imported (matplotlib's
# inline backend registers the hook that shows figures): loaded in the kernel itself,
# never in the zygote; a zygote that gets one through another import forks no more
SENSITIVE = ("matplotlib_inline", "ipympl")
# what ipykernel needs to start: imported by the zygote before anything else
KERNEL_MODULES = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell")

PR_SET_PDEATHSIG = 1  # prctl(2)
DEATH_SIGNAL = signal.SIGUSR1  # sent by the kernel when the driver (its thread) ends

_exited: dict[int, int] = {}
_children: set[int] = set()
_driver = os.getppid()  # the process that started the zygote


def sensitive(name: str) -> bool:
    """Whether ``name`` is (in) a module that must be imported inside a kernel."""
    return any(name == p or name.startswith(p + ".") for p in SENSITIVE)


def start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (the process's start time), None when it is gone or
    a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _reap(*_: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _children.discard(pid)
        _exited[pid] = os.waitstatus_to_exitcode(status)


def _preload(modules: list[str]) -> dict[str, Any]:
    """Import ``modules`` in order; stop at the first that brings in a sensitive module or
    starts a thread (``tainted_by``: the zygote must fork no more)."""
    import importlib

    failed: list[str] = []
    tainted_by = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            if name in sys.modules or sensitive(name):
                continue
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a module that fails is left to the run
                failed.append(name)
            if threading.active_count() > 1 or any(sensitive(n) for n in sys.modules):
                tainted_by = name
                break
    return {"ok": True, "failed": failed, "tainted_by": tainted_by,
            "threads": threading.active_count()}


def _child(conn: socket.socket, request: dict[str, Any], fds: list[int], zygote: int) -> None:
    """In the forked child of ``zygote``: become the run's kernel; never returns."""
    code = 1
    try:
        conn.close()
        os.setsid()
        _death_signal(int(signal.SIGKILL))  # the kernel never outlives the zygote
        if os.getppid() != zygote:
            os._exit(1)
        # what a new Python process has (SIGPIPE stays ignored, as Python sets it)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(DEATH_SIGNAL, signal.SIG_DFL)  # the zygote's handler is not the kernel's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in {devnull, *fds}:
            if fd > 2:
                os.close(fd)
        env = dict(request["env"])
        env["JPY_PARENT_PID"] = str(os.getppid())  # the kernel exits when the zygote goes
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["cwd"])
        if "numpy.random" in sys.modules:  # else every kernel draws the same numbers
            sys.modules["numpy.random"].seed()
        # as ipykernel_launcher: the zygote's own folder is not the kernel's import path
        sys.path[:] = [p for p in sys.path if p not in ("", _START_DIR)]
        sys.argv = ["ipykernel_launcher", "-f", request["connection_file"]]
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    except BaseException:  # noqa: BLE001 - reported on the kernel's stderr
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fork(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    if len(fds) != 2:
        return {"ok": False, "error": "a fork needs stdout and stderr descriptors"}
    gc.freeze()  # the zygote's objects: never scanned (nor copied) by the kernel's collector
    # no reaping between the fork and the bookkeeping (a child that ends at once is reaped
    # after it was added; an old entry of a reused pid is dropped)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _child(conn, request, fds, zygote)
        _exited.pop(pid, None)
        _children.add(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    for fd in fds:
        os.close(fd)
    return {"ok": True, "pid": pid, "start": start_time(pid)}


def _answer(request: dict[str, Any], conn: socket.socket, fds: list[int]) -> dict[str, Any]:
    op = request.get("op")
    if op == "preload":
        return _preload([str(m) for m in request.get("modules", [])])
    if op == "fork":
        return _fork(conn, request, fds)
    if op == "status":
        return {"ok": True, "code": _exited.get(int(request["pid"]))}
    return {"ok": False, "error": f"unknown op {op!r}"}


def _end() -> None:
    """The driver is gone: end every child's session (kernels and what they started)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for pid in list(_children):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _orphaned(*_: Any) -> None:
    """The death signal: end with the driver once it is gone (the signal also comes when
    only the driver's thread that started the zygote ended: then nothing happens)."""
    if os.getppid() != _driver:
        _end()
        os._exit(0)


def _death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent ends (Linux only:
    elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(
            ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signum), ctypes.c_ulong(0),
            ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError):
        pass


def _watch_driver() -> None:
    """End with the driver, told by the death signal (and by the socket everywhere)."""
    signal.signal(DEATH_SIGNAL, _orphaned)
    _death_signal(int(DEATH_SIGNAL))
    _orphaned()  # the driver ended before the signal was set


def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
    """Answer; a driver that is gone ends the zygote."""
    try:
        conn.send(json.dumps(reply).encode())
    except OSError:
        _end()
        os._exit(0)


def serve(fd: int) -> None:
    conn = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _watch_driver()
    _send(conn, {"ok": True, "pid": os.getpid(), **_preload(list(KERNEL_MODULES))})
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 4)
        except OSError:
            data, fds = b"", []
        if not data:
            _end()
            os._exit(0)  # no interpreter clean-up: seconds with thousands of modules
        try:
            reply = _answer(json.loads(data), conn, fds)
        except Exception as error:  # noqa: BLE001 - a bad request is answered, not fatal
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            for fd in fds:
                os.close(fd)
        _send(conn, reply)


_START_DIR = os.getcwd()

if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)  # as ipykernel sets it at start
    serve(int(sys.argv[1]))
