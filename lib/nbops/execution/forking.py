"""The driver's side of the zygote (:mod:`nbops.execution.zygote`): start it, have it
import modules, and start kernels by forking it, through a jupyter_client provisioner.

- :class:`Zygote`: one zygote process and the socket to it (requests are serialised by a
  lock: any thread may use it);
- :class:`ForkedProcess`: what ``subprocess.Popen`` is to a launched kernel, for a kernel
  the zygote forked (poll, wait, signals); the zygote is its parent and reaps it, so its
  liveness is read from ``/proc`` and its exit code asked from the zygote;
- :class:`ZygoteProvisioner`: jupyter_client's local provisioner (connection file, ports,
  signals to the kernel's process group) launching by fork instead of ``Popen``.

Only a kernel spec that runs ``ipykernel_launcher`` with this very interpreter is forked
(:func:`forkable`); any other kernel is launched as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypedDict

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from ..errors import KernelDied
from ..util.envvars import ZYGOTE_OF
from .zygote import INLINE_BACKEND, MAX_MESSAGE, sensitive, start_time

START_TIMEOUT = 60.0
DRIVER_VAR = ZYGOTE_OF  # the driver's pid, in the zygote's and its kernels' /proc environ


# modules that made a zygote unusable (see zygote.py): later zygotes of this process leave
# them to the kernels
AVOID: set[str] = set()


class PreloadReply(TypedDict):
    ok: bool
    failed: list[str]
    tainted_by: str | None  # the module after which the zygote must fork no more


def forkable(argv: list[str]) -> bool:
    """Whether a kernel spec's ``argv`` is ipykernel run by this interpreter."""
    if len(argv) < 5 or argv[1:3] != ["-m", "ipykernel_launcher"]:
        return False
    if argv[3:] != ["-f", "{connection_file}"]:
        return False
    if argv[0] in ("python", f"python{sys.version_info[0]}"):
        return True  # jupyter_client runs these with sys.executable
    found = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
    try:
        return found is not None and os.path.samefile(found, sys.executable)
    except OSError:
        return False


class Zygote:
    """A started zygote; :meth:`close` ends it and every kernel it forked."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="nbops-zygote-"))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._conn = ours
        self._lock = threading.Lock()
        self.usable = True  # False once a module it imported makes forking unsafe
        self.imported: set[str] = set()
        with (self.folder / "zygote.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nbops.execution.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), cwd=self.folder, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
                env={**env, "MPLBACKEND": env.get("MPLBACKEND", INLINE_BACKEND),
                     DRIVER_VAR: str(os.getpid())})
        theirs.close()
        try:
            hello = self._receive(START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.pid = int(hello["pid"])
        self._check(hello)

    def _receive(self, timeout: float) -> dict[str, Any]:
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(MAX_MESSAGE)
        except TimeoutError:
            raise KernelDied(f"the zygote did not answer within {timeout:g} s") from None
        if not data:
            raise KernelDied(f"the zygote exited (log: {self.folder / 'zygote.log'})")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def _ask(self, request: dict[str, Any], fds: Sequence[int] = (),
             timeout: float = START_TIMEOUT) -> dict[str, Any]:
        with self._lock:
            if self.process.poll() is not None:
                raise KernelDied("the zygote exited")
            socket.send_fds(self._conn, [json.dumps(request).encode()], list(fds))
            reply = self._receive(timeout)
        if not reply.get("ok"):
            raise KernelDied(f"the zygote refused: {reply.get('error')}")
        return reply

    def _check(self, reply: dict[str, Any]) -> None:
        culprit = reply.get("tainted_by")
        if culprit or int(reply.get("threads", 1)) > 1:
            self.usable = False
            AVOID.add(str(culprit or "?"))

    def preload(self, modules: list[str], timeout: float = 300.0) -> PreloadReply:
        """Import ``modules`` in the zygote (those it has, must not have, or that spoiled
        an earlier zygote are skipped)."""
        wanted = [m for m in modules
                  if m not in self.imported and m not in AVOID and not sensitive(m)]
        if not wanted or not self.usable:
            return {"ok": True, "failed": [], "tainted_by": None}
        reply = self._ask({"op": "preload", "modules": wanted}, timeout=timeout)
        self.imported.update(wanted)
        self._check(reply)
        return {"ok": True, "failed": list(reply.get("failed", [])),
                "tainted_by": reply.get("tainted_by")}

    def fork(self, connection_file: str, env: dict[str, str], cwd: str,
             stdout: IO[bytes] | int | None, stderr: IO[bytes] | int | None
             ) -> ForkedProcess:
        """A kernel forked from the zygote, writing to ``stdout``/``stderr``."""
        opened: list[int] = []
        fds = [_fd(stdout, opened), _fd(stderr, opened)]
        try:
            reply = self._ask({"op": "fork", "connection_file": connection_file,
                               "env": env, "cwd": cwd}, fds)
        finally:
            for fd in opened:
                os.close(fd)
        return ForkedProcess(self, int(reply["pid"]), reply.get("start"))

    def exit_code(self, pid: int) -> int | None:
        try:
            code = self._ask({"op": "status", "pid": pid}, timeout=5.0).get("code")
        except (KernelDied, OSError):
            return None
        return int(code) if code is not None else None

    def close(self) -> None:
        """End the zygote; it kills the kernels it forked that still run."""
        self.usable = False
        try:
            self._conn.close()
        finally:
            try:
                self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            shutil.rmtree(self.folder, ignore_errors=True)


def _fd(target: IO[bytes] | int | None, opened: list[int]) -> int:
    if target is None or target == subprocess.DEVNULL:
        opened.append(os.open(os.devnull, os.O_WRONLY))  # the zygote gets a copy
        return opened[-1]
    return target if isinstance(target, int) else target.fileno()


class ForkedProcess:
    """A kernel the zygote forked, seen like ``subprocess.Popen``."""

    stdin = stdout = stderr = None

    def __init__(self, zygote: Zygote, pid: int, started: str | None) -> None:
        self.zygote = zygote
        self.pid = pid
        self._started = started
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and (self._started is None
                                        or start_time(self.pid) != self._started):
            code = self.zygote.exit_code(self.pid)
            self.returncode = code if code is not None else -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ZygoteProvisioner(LocalProvisioner):
    """Launches the kernel by forking :attr:`zygote` (set before the kernel starts)."""

    zygote: Zygote | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        if self.zygote is None:
            raise KernelDied("no zygote to fork the kernel from")
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        manager: Any = self.parent
        process = self.zygote.fork(str(manager.connection_file), env, cwd,
                                   kwargs.get("stdout"), kwargs.get("stderr"))
        self.process = process  # type: ignore[assignment]  # Popen's interface
        self.pid = self.pgid = process.pid  # a session of its own: its group is its pid
        self.cwd = cwd
        info: KernelConnectionInfo = self.connection_info
        return info
