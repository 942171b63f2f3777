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
it reaps its children at once; when the socket closes (the driver ended, even by SIGKILL)
it kills the process group of every child still running and exits, so nothing outlives
the driver. A child closes the socket, gets default signal handlers, reseeds numpy's
global generator (Python's ``random`` reseeds itself after a fork) and never returns into
the zygote's loop.
"""

from __future__ import annotations

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

_exited: dict[int, int] = {}
_children: set[int] = set()


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


def _child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the run's kernel; never returns."""
    code = 1
    try:
        conn.close()
        os.setsid()
        # what a new Python process has (SIGPIPE stays ignored, as Python sets it)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _child(conn, request, fds)
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


def serve(fd: int) -> None:
    conn = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    conn.send(json.dumps({"ok": True, "pid": os.getpid(),
                          **_preload(list(KERNEL_MODULES))}).encode())
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
        conn.send(json.dumps(reply).encode())


_START_DIR = os.getcwd()

if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)  # as ipykernel sets it at start
    serve(int(sys.argv[1]))
