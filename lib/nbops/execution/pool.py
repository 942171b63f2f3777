"""Warm kernels: a pool of kernels started ahead of need with the templates' imports loaded.

Two executors use it (``--executor pool``, the pipelines' default, and ``--executor reuse``,
``--reuse-kernel``):

- ``pool``: every run gets a kernel process of its own, as with ``papermill``; the kernel
  was started in the background while earlier work ran, with the modules the templates
  import (``import``/``from`` statements at the top level of their code cells, plus
  ``nbops.preload`` in the template's metadata) already in ``sys.modules``. Nothing is bound
  in the notebook's namespace, so a notebook that forgets an import still fails. After the
  run the kernel is shut down (in the background): no state reaches another run. Where the
  kernel spec allows (:func:`~nbops.execution.forking.forkable`), kernels are forked from
  a zygote (:mod:`~nbops.execution.zygote`) that imported those modules once, plus the
  ones earlier runs of the same template were seen to import (learned after each run,
  remembered per interpreter and template in the user's cache folder): no run pays the
  imports again.
- ``reuse``: one kernel per parallel job runs run after run. Before each run its namespace
  is cleared (the user's names and the In/Out history), its execution counter reset, open
  figures closed, and its environment and working folder set to the run's. What still
  carries over is documented in the README: imported modules and their module-level state,
  ``sys.path``, random generator states of libraries, thread settings, logging and
  warning filters. So a kernel serves only runs with the same secrets (names and values)
  as its first: a run whose secrets differ gets a fresh kernel.

Invariants: a kernel is handed to one run at a time; a kernel for a planned run is forked
once the zygote has that run's needs (its imports, and what its template's runs imported
before), one without a plan once it has every module known for the pool's templates; a
zygote that became unsafe to fork from (see ``zygote.py``) forks no more; a kernel
that died, timed out or was stopped is never handed out again; :func:`close_pools`
(called at the end of a pipeline or sweep, and at exit) leaves no kernel or zygote process
behind. Kernels learn their run's environment and working folder when they are handed
out, before any cell runs; the thread budget is part of the pool's identity because
numerical libraries read it when they are imported. No kernel or zygote is started with a
secret: a pool's launch environment holds no variable a run that uses it withholds (a run
whose environment lacks one of the pool's variables gets a pool of its own).
"""

from __future__ import annotations

import ast
import atexit
import functools
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from filelock import FileLock
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

from ..contract.secrets import withheld_names
from ..errors import CellFailed, KernelDied
from ..util.envvars import RUN_DIR, THREAD_VARS, TRACKING_URI, kernel_base_env
from ..util.files import atomic_write_json
from ..util.process import kill_process_tree
from ..util.secrets import SECRETS_VAR, Scrubber, ScrubbingPipe, names_in, without
from .base import CellTracker, ExecutionRequest
from .forking import Zygote, ZygoteProvisioner, forkable
from .outcome import ExecutionResult
from .papermill import KERNEL_START_LOCK, PapermillExecutor

PRELOAD_KEY = "preload"  # template metadata: nbops.preload = [module, ...]
FORK_VAR = "NBOPS_FORK"  # "0": pool kernels are started as processes, not forked
MAX_ZYGOTES = 3  # per pool: after that many spoiled zygotes, kernels start as processes
WARM_BATCH = 8
MEMORY_LIMIT = 4000  # modules remembered per template
MEMORY_TEMPLATES = 200  # templates remembered per interpreter
UNLEARNABLE = ("debugpy", "pydev")  # the kernel's debugger: never imported by a zygote
START_TIMEOUT = 60.0
PRELOAD_TIMEOUT = 300.0
_RUN_VARS = (RUN_DIR, TRACKING_URI)  # never part of a pool kernel's launch environment


def imports_of(notebook: Any) -> list[str]:
    """The modules a notebook imports at the top level of its code cells, plus those its
    metadata declares under ``nbops.preload``; in order, without duplicates."""
    names: list[str] = [str(n) for n in notebook.metadata.get("nbops", {}).get(PRELOAD_KEY, [])]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            names.extend(_imports_in(cell.source))
    return list(dict.fromkeys(n for n in names if n and n != "__future__"))


def _imports_in(source: str) -> list[str]:
    # IPython magics and shell lines are not Python: blank them before parsing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line
             for line in source.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    found: list[str] = []
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements at the top level, including inside ``try``/``if`` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.Try):
            yield from _top_level(node.body)
        elif isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)


def _preload_code(modules: Sequence[str]) -> str:
    return (
        "def _nbops_preload():\n"
        "    import importlib, warnings\n"
        "    with warnings.catch_warnings():\n"
        "        warnings.simplefilter('ignore')\n"
        f"        for name in {json.dumps(list(modules))}:\n"
        "            try:\n"
        "                importlib.import_module(name)\n"
        "            except Exception:\n"
        "                pass\n"
        "_nbops_preload()\n"
        "globals().pop('_nbops_preload', None)\n")


def _setup_code(env: dict[str, str], cwd: Path, reset: bool) -> str:
    """Code run (silently) in a kernel before a run's first cell: exactly the run's
    environment and working folder; for a reused kernel also an empty namespace and
    counter."""
    # what %reset -f does, without its gc.collect() (0.35 s with pandas, sklearn and
    # MLflow loaded): the user's names, the In/Out history and the counter go
    reset_lines = (
        "    ip = get_ipython()\n"
        "    for name in [n for n in ip.user_ns if n not in ip.user_ns_hidden\n"
        "                 and not (n.startswith('__') and n.endswith('__'))]:\n"
        "        del ip.user_ns[name]\n"
        "    ip.history_manager.reset(new_session=False)\n"
        "    ip.execution_count = 1\n"
        "    if 'matplotlib.pyplot' in sys.modules:\n"
        "        sys.modules['matplotlib.pyplot'].close('all')\n") if reset else ""
    return (
        "def _nbops_setup():\n"
        "    import os, sys\n"
        f"{reset_lines}"
        "    os.environ.clear()\n"
        f"    os.environ.update({json.dumps(env)})\n"
        f"    os.chdir({json.dumps(str(cwd))})\n"
        "    api = sys.modules.get('nbops.kernel_api')\n"
        "    if api is not None:\n"
        "        api._new_run()\n"
        "_nbops_setup()\n"
        "globals().pop('_nbops_setup', None)\n")


async def _execute_silently(km: AsyncKernelManager, code: str, timeout: float,
                            expressions: dict[str, str] | None = None,
                            wait_ready: bool = False) -> dict[str, Any]:
    """Run ``code`` without output or history; the values of ``expressions`` (text). Only
    the shell reply is awaited (IOPub is not needed), so a running kernel answers in
    milliseconds; ``wait_ready`` first waits for a kernel just started."""
    client = km.client()
    client.start_channels()
    try:
        if wait_ready:
            await client.wait_for_ready(timeout=START_TIMEOUT)
        msg_id = client.execute(code, silent=True, store_history=False,
                                user_expressions=expressions or {}, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelDied(f"the kernel did not answer within {timeout:g} s")
            try:
                reply = await client.get_shell_msg(timeout=min(left, 1.0))
            except Empty:
                if not await km.is_alive():
                    raise KernelDied("the kernel died") from None
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content.get("status") != "ok":
            raise KernelDied(f"kernel set-up failed: {content.get('ename')}: "
                             f"{content.get('evalue')}")
        found: dict[str, Any] = content.get("user_expressions", {})
        return found
    finally:
        client.stop_channels()


def _boot_env(km: AsyncKernelManager) -> dict[str, str]:
    """The kernel's environment once it runs (the launch environment plus what the kernel
    set for itself, e.g. MPLBACKEND)."""
    found = run_sync(_execute_silently)(km, "pass", START_TIMEOUT,
                                        {"env": "dict(__import__('os').environ)"}, True)
    text = found["env"]["data"]["text/plain"]
    env: dict[str, str] = ast.literal_eval(text)
    return env


@dataclass
class WarmKernel:
    """A started kernel, its log file, and what it was started with."""

    km: AsyncKernelManager
    log: Path
    own_env: dict[str, str]  # what the kernel set for itself at start (MPLBACKEND, ...)
    uses: int = 0
    at_start: set[str] | None = None  # a forked kernel's modules before its first run
    # every secret a run in this kernel had (never fewer: a line printed at the end of one
    # run may reach the log after the next run began); its stdout and stderr pass through it
    scrubber: Scrubber = field(default_factory=Scrubber)
    pipe: ScrubbingPipe | None = None
    secrets: str | None = None  # the secrets of the runs it served (see secrets_key)

    @property
    def pid(self) -> int | None:
        process = getattr(self.km.provisioner, "process", None)
        pid = getattr(process, "pid", None)
        return int(pid) if pid is not None else None

    def alive(self) -> bool:
        return bool(self.km.has_kernel) and bool(run_sync(self.km.is_alive)())

    def prepare_run(self, env: dict[str, str], cwd: Path, reset: bool,
                    scrubber: Scrubber | None = None) -> None:
        """Give the kernel the run's environment and working folder (and a clean namespace
        when it is reused); from now on its log is scrubbed of the run's secrets too."""
        if scrubber:
            self.scrubber.merge(scrubber)
        self.secrets = secrets_key(env)
        code = _setup_code({**self.own_env, **env}, cwd, reset)
        run_sync(_execute_silently)(self.km, code, START_TIMEOUT)
        self.uses += 1

    def serves(self, secrets: str) -> bool:
        """Whether this kernel may run a run with these secrets (:func:`secrets_key`):
        a reused kernel's modules may still hold the secrets of the runs it served."""
        return self.uses == 0 or self.secrets == secrets

    def imported(self) -> list[str]:
        """The modules (of installed packages) imported in the kernel, in import order;
        none when it does not answer at once."""
        try:
            found = run_sync(_execute_silently)(self.km, "pass", 5.0,
                                                {"mods": _modules_expression()})
            names = json.loads(ast.literal_eval(found["mods"]["data"]["text/plain"]))
        except Exception:  # noqa: BLE001 - learning is an optimisation only
            return []
        return [str(n) for n in names] if isinstance(names, list) else []

    def shutdown(self) -> None:
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - the process is gone either way
            kill_process_tree(self.pid)
        if self.pipe is not None:
            self.pipe.close(timeout=2.0)
        shutil.rmtree(self.log.parent, ignore_errors=True)


def start_kernel(kernel_name: str, env: dict[str, str], preload: Sequence[str],
                 zygote: Zygote | None = None) -> WarmKernel:
    """Start a kernel in a scratch folder (forked from ``zygote`` when given), wait until
    it answers, import ``preload`` (what the zygote has already is not imported again)."""
    folder = Path(tempfile.mkdtemp(prefix="nbops-kernel-"))
    log = folder / "kernel.log"
    km = AsyncKernelManager(kernel_name=kernel_name)
    if zygote is not None:
        km.kernel_id = str(uuid.uuid4())
        provisioner = ZygoteProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec,
                                        parent=km)
        provisioner.zygote = zygote
        km.provisioner = provisioner
        preload = [m for m in preload if m not in zygote.imported]
    kernel = WarmKernel(km, log, {})
    pipe = kernel.pipe = ScrubbingPipe(log, lambda: kernel.scrubber)
    with FileLock(str(Path(tempfile.gettempdir()) / KERNEL_START_LOCK), timeout=300):
        # the lock: jupyter_client picks ports before the kernel binds them (see papermill.py)
        try:
            run_sync(km.start_kernel)(env=dict(env), cwd=str(folder), stdout=pipe.writer,
                                      stderr=pipe.writer)
        finally:
            pipe.writer.close()  # the kernel holds its own copy: EOF when it exits
        try:
            booted = _boot_env(km)
            kernel.own_env = {k: v for k, v in booted.items() if k not in env}
        except BaseException:
            kernel.shutdown()
            raise
    try:
        if preload:
            run_sync(_execute_silently)(km, _preload_code(preload), PRELOAD_TIMEOUT)
    except BaseException:
        kernel.shutdown()
        raise
    if zygote is not None:  # what a run imports beyond this is learned after it
        kernel.at_start = set(kernel.imported()) or None
    return kernel


class KernelPool:
    """Kernels of one kind (kernel name, thread budget, reuse or not), started ahead."""

    def __init__(self, kernel_name: str, env: dict[str, str], reuse: bool) -> None:
        self.kernel_name = kernel_name
        self.env = launch_env(env)
        self.reuse = reuse
        self.size = 1
        self.expected: int | None = None  # runs still to come, when known
        self.modules: list[str] = []  # every module asked for: kernels without a plan
        self.upcoming: deque[list[str]] = deque()  # the planned runs' imports, in order
        self._lock = threading.Lock()
        self._starting: deque[Future[WarmKernel]] = deque()
        self._idle: list[WarmKernel] = []
        self._busy: set[int] = set()
        self._all: list[WarmKernel] = []
        self._closed = False
        self.holders = 0  # drivers (pipelines, sweeps) that prepared it and still need it
        self._threads = ThreadPoolExecutor(4, thread_name_prefix="nbops-pool")
        # a kernel per run is forked from a zygote that imported the modules once (not for
        # reuse: its one kernel imports them itself); learned: modules runs imported
        self.forking = not reuse and _forking_allowed(kernel_name)
        # per template (key: its code), the modules its runs imported beyond what their
        # kernel had at start; remembered across processes in the user's cache folder
        self.learned: dict[str, list[str]] = _remembered() if self.forking else {}
        self.seen: list[str] = []  # the templates this pool ran or was told of, in order
        self._zygote: Zygote | None = None
        self._zygotes: list[Zygote] = []  # every one started (closed with the pool)
        self._zygote_lock = threading.Lock()
        self._warming = self._rewarm = False
        self._changed: set[str] = set()  # templates whose learned modules are new

    def want(self, modules: Iterable[str], key: str | None = None) -> None:
        """Kernels started from now on preload these modules too (and, when forked, what
        runs of the template ``key`` were seen to import)."""
        with self._lock:
            self.modules = list(dict.fromkeys([*self.modules, *modules]))
            if key is not None and key not in self.seen:
                self.seen.append(key)

    def needs(self, notebook: Any) -> list[str]:
        """What a kernel for ``notebook`` should have imported: its imports, and what its
        template's runs imported later on (when kernels are forked)."""
        learned = self.learned.get(template_key(notebook), []) if self.forking else []
        return list(dict.fromkeys([*imports_of(notebook), *learned]))

    def _known(self) -> list[str]:
        """Every module asked for, and learned for the templates this pool has seen."""
        with self._lock:
            learned = [m for key in self.seen for m in self.learned.get(key, [])]
            return list(dict.fromkeys([*self.modules, *learned]))

    def plan(self, size: int, expected: int | None,
             upcoming: Sequence[Sequence[str]] = ()) -> None:
        """Keep ``size`` kernels ready for ``expected`` more runs (None: unknown); start
        them now. ``upcoming``: the imports of the runs to come, in the order they are
        expected: the next kernels preload only those of their run (a process per run pays
        for its own imports; the union of a whole pipeline's would cost every stage)."""
        with self._lock:
            self.size, self.expected = max(1, size), expected
            self.upcoming = deque(list(m) for m in upcoming)
        self._fill()

    def acquire(self, secrets: str = "") -> WarmKernel:
        """A ready kernel (waiting for one being started), or one started now; one that
        served runs with other secrets than ``secrets`` (:func:`secrets_key`) is never
        handed out (it is shut down when no idle kernel serves them)."""
        spoiled = None
        with self._lock:
            if self._closed:
                raise KernelDied("the kernel pool was closed")
            if self.expected is not None:
                self.expected = max(0, self.expected - 1)
            fitting = [k for k in self._idle if k.serves(secrets)]
            if fitting:
                kernel: WarmKernel | None = fitting[-1]
                self._idle.remove(fitting[-1])
            else:
                kernel, spoiled = None, self._idle.pop() if self._idle else None
            pending = self._starting.popleft() if kernel is None and self._starting else None
        if spoiled is not None:
            self._discard(spoiled)
        if kernel is None:
            kernel = (pending.result() if pending is not None
                      else self._start())
        with self._lock:
            self._busy.add(id(kernel))
        self._fill()
        if not kernel.alive():
            self._discard(kernel)
            return self.acquire(secrets)
        return kernel

    def release(self, kernel: WarmKernel, healthy: bool) -> None:
        """Back to the pool (reuse, still healthy) or shut down in the background."""
        keep = self.reuse and healthy and kernel.alive()
        with self._lock:
            self._busy.discard(id(kernel))
            keep = keep and not self._closed
            if keep:
                self._idle.append(kernel)
        if not keep:
            self._discard(kernel)

    def _discard(self, kernel: WarmKernel) -> None:
        with self._lock:
            if kernel in self._all:
                self._all.remove(kernel)
            self._busy.discard(id(kernel))
        self._threads.submit(kernel.shutdown)

    def learn(self, key: str, modules: Iterable[str]) -> None:
        """Modules a run of the template ``key`` imported: the zygote imports them too (in
        the background), so later kernels have them."""
        with self._lock:
            known = self.learned.get(key, [])
            merged = list(dict.fromkeys([*known, *modules]))[:MEMORY_LIMIT]
            if merged == known:
                return
            self.learned[key] = merged
            self._changed.add(key)
        zygote = self._zygote
        if zygote is not None and zygote.usable:
            self._threads.submit(self._warm, zygote)

    def _zygote_now(self) -> Zygote | None:
        """The zygote to fork from, started on first need; one spoiled by a module it
        imported is replaced (up to :data:`MAX_ZYGOTES`); None: start processes."""
        if not self.forking:
            return None
        with self._zygote_lock:
            if self._zygote is not None and self._zygote.usable:
                return self._zygote
            if self._closed or len(self._zygotes) >= MAX_ZYGOTES:
                return None
            try:
                zygote = Zygote(self.env)
            except (KernelDied, OSError):
                self.forking = False
                return None
            self._zygotes.append(zygote)
            self._zygote = zygote
            return zygote if zygote.usable else None

    def _warm(self, zygote: Zygote) -> None:
        """Have ``zygote`` import every module asked for or learned, a few at a time (a
        kernel to fork waits for one batch at most); one warming at a time."""
        with self._lock:
            if self._warming:
                self._rewarm = True
                return
            self._warming, self._rewarm = True, False
        try:
            while True:
                wanted = [m for m in self._known() if m not in zygote.imported]
                for start in range(0, len(wanted), WARM_BATCH):
                    if self._closed or not zygote.usable:
                        return
                    zygote.preload(wanted[start:start + WARM_BATCH])
                with self._lock:
                    if not self._rewarm:
                        return
                    self._rewarm = False
        except (KernelDied, OSError):
            zygote.usable = False
        finally:
            with self._lock:
                self._warming = False

    def _fork_ready(self, modules: list[str]) -> Zygote | None:
        """A usable zygote with ``modules`` imported, or None."""
        for _ in range(MAX_ZYGOTES):
            zygote = self._zygote_now()
            if zygote is None:
                return None
            try:
                zygote.preload(modules)
            except (KernelDied, OSError):
                zygote.usable = False
            if zygote.usable:
                return zygote
        return None

    def _start(self, modules: list[str] | None = None) -> WarmKernel:
        """A kernel with ``modules`` imported (a planned run's needs; None: every module
        known); forked once the zygote has them."""
        modules = self._known() if modules is None else modules
        zygote = self._fork_ready(modules)
        try:
            kernel = start_kernel(self.kernel_name, self.env, modules, zygote)
        except KernelDied:
            if zygote is None:
                raise
            zygote.usable = False  # it could not fork: processes from now on
            kernel = start_kernel(self.kernel_name, self.env, modules)
        if zygote is not None and not self._closed:
            self._threads.submit(self._warm, zygote)  # the other runs' imports, meanwhile
        with self._lock:
            closed = self._closed
            if not closed:
                self._all.append(kernel)
        if closed:
            kernel.shutdown()
            raise KernelDied("the kernel pool was closed")
        return kernel

    def _fill(self) -> None:
        """Start kernels until ``size`` are ready or being started (fewer when fewer runs
        are expected; a reused kernel counts while it lives)."""
        with self._lock:
            if self._closed:
                return
            ready = len(self._starting) + len(self._idle)
            if self.reuse:
                ready += len(self._busy)
            wanted = self.size if self.expected is None else min(self.size, self.expected)
            missing = max(0, wanted - ready)
            for _ in range(missing):
                planned = (self.upcoming.popleft() if self.upcoming and not self.reuse
                           else None)
                self._starting.append(self._threads.submit(self._start, planned))

    def close(self) -> None:
        """Shut every kernel down, those being started included; wait for it."""
        with self._lock:
            self._closed = True
            starting, self._starting = list(self._starting), deque()
            kernels, self._all, self._idle = list(self._all), [], []
        for kernel in kernels:
            kernel.shutdown()
        for future in starting:
            try:
                future.result()  # started after close: _start shut it down itself
            except BaseException:  # noqa: BLE001, S110 - closing: nothing to report
                pass
        self._threads.shutdown(wait=True)
        with self._zygote_lock:
            zygotes, self._zygotes, self._zygote = list(self._zygotes), [], None
        if zygotes and self._changed:
            _remember({key: self.learned[key] for key in self._changed})
        for zygote in zygotes:
            zygote.close()  # it kills any kernel of its own still running


_POOLS: dict[tuple[Any, ...], list[KernelPool]] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(kernel_name: str, env: dict[str, str], reuse: bool) -> KernelPool:
    """The process's pool for this kernel, thread budget and mode whose kernels were
    started with no variable ``env`` lacks (a secret ``env`` withholds; made on first
    use)."""
    key = (kernel_name, reuse, tuple(env.get(var) for var in THREAD_VARS))
    with _POOLS_LOCK:
        pools = _POOLS.setdefault(key, [])
        launch = launch_env(env).keys()
        for pool in pools:
            if pool.env.keys() <= launch:
                return pool
        pool = KernelPool(kernel_name, env, reuse)
        pools.append(pool)
        return pool


def hold(kernel_name: str, env: dict[str, str], reuse: bool) -> KernelPool:
    """The pool for these settings, held by one more driver until :func:`let_go`."""
    pool = pool_for(kernel_name, env, reuse)
    with _POOLS_LOCK:
        pool.holders += 1
    return pool


def let_go(pool: KernelPool) -> None:
    """One driver is done with ``pool``; the last one shuts it down (a sweep inside a
    pipeline never closes the pipeline's kernels)."""
    with _POOLS_LOCK:
        pool.holders -= 1
        if pool.holders > 0:
            return
        for key, known in list(_POOLS.items()):
            if pool in known:
                known.remove(pool)
            if not known:
                del _POOLS[key]
    pool.close()


def close_pools() -> None:
    """Shut down every pool of this process (no kernel is left behind)."""
    with _POOLS_LOCK:
        pools = [pool for known in _POOLS.values() for pool in known]
        _POOLS.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


class PoolExecutor(PapermillExecutor):
    """Runs each notebook in a warm kernel from a :class:`KernelPool`."""

    def __init__(self, reuse: bool = False) -> None:
        self.reuse = reuse
        self._held: list[KernelPool] = []

    def prepare(self, notebooks: Sequence[Any], *, parallel: int, threads: int | None,
                expected: int | None, secret_names: Sequence[str] = ()) -> None:
        """Start ``parallel`` kernels now with the imports of ``notebooks`` preloaded, and
        without any secret (``secret_names`` and the other withheld names); the pools stay
        until :meth:`close`."""
        kinds = {_kernel_of(nb) for nb in notebooks}
        env = without(kernel_base_env(threads), withheld_names(secret_names))
        for kernel_name in sorted(kinds):
            pool = hold(kernel_name, env, self.reuse)
            self._held.append(pool)
            mine = [nb for nb in notebooks if _kernel_of(nb) == kernel_name]
            for nb in mine:
                pool.want(imports_of(nb), template_key(nb))
            pool.plan(parallel, expected, [pool.needs(nb) for nb in mine])

    def close(self) -> None:
        """Let go of the pools :meth:`prepare` held (the last holder shuts them down)."""
        held, self._held = self._held, []
        for pool in held:
            let_go(pool)

    def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
        pool = pool_for(request.kernel_name, request.env, self.reuse)
        key = template_key(request.notebook)
        pool.want(imports_of(request.notebook), key)
        kernel = self._ready_kernel(pool, request, secrets_key(request.env))
        healthy = False
        offset = kernel.log.stat().st_size if kernel.log.exists() else 0
        try:
            self._execute(request, tracker, km=kernel.km)
            healthy = True
        except CellFailed:  # the notebook failed, the kernel is fine
            healthy = True
            raise
        finally:
            if kernel.pipe is not None:
                kernel.pipe.drain()
            _copy_log(kernel.log, offset, request.kernel_log)
            healthy = healthy and not tracker.stop.is_set()
            if healthy and kernel.at_start is not None:
                pool.learn(key, [m for m in kernel.imported() if m not in kernel.at_start])
            pool.release(kernel, healthy)

    @staticmethod
    def _ready_kernel(pool: KernelPool, request: ExecutionRequest, secrets: str
                      ) -> WarmKernel:
        """A pool kernel set up for this run (one that served runs with other secrets is
        never reused for it); one that fails its set-up (died meanwhile) is replaced once
        by a new kernel."""
        for attempt in (1, 2):
            kernel = pool.acquire(secrets)
            try:
                kernel.prepare_run(request.env, request.cwd, reset=kernel.uses > 0,
                                   scrubber=request.scrubber)
                return kernel
            except Exception:
                pool.release(kernel, healthy=False)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _annotate_notebook(self, result: ExecutionResult) -> None:
        super()._annotate_notebook(result)
        result.notebook.metadata.setdefault("nbops", {})["executor"] = (
            "reuse" if self.reuse else "pool")


def _forking_allowed(kernel_name: str) -> bool:
    """Whether this kernel can be forked from a zygote (ipykernel of this interpreter, on
    Linux; not with ``NBOPS_FORK=0``)."""
    if os.environ.get(FORK_VAR, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except Exception:  # noqa: BLE001 - no such kernel: its start will say so
        return False
    return forkable(list(spec.argv))


def _memory_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nbops" / "zygote-modules.json"


def _remembered() -> dict[str, list[str]]:
    """The modules earlier pools of this interpreter learned, per template; none when the
    file is missing or unreadable."""
    try:
        known = json.loads(_memory_file().read_text()).get(sys.executable, {})
    except (OSError, ValueError, AttributeError, RuntimeError, KeyError):
        return {}  # no such file, not JSON, not a table, or no home folder at all
    if not isinstance(known, dict):
        return {}
    return {str(k): [str(n) for n in v][:MEMORY_LIMIT]
            for k, v in known.items() if isinstance(v, list)}


def _remember(learned: dict[str, list[str]]) -> None:
    """Write what this pool learned to the file, the most recent templates last (best
    effort: it is a cache)."""
    path = _memory_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=10):
            try:
                table = json.loads(path.read_text())
            except (OSError, ValueError):
                table = {}
            if not isinstance(table, dict):
                table = {}
            mine = table.get(sys.executable)
            mine = dict(mine) if isinstance(mine, dict) else {}
            for key, modules in learned.items():
                mine.pop(key, None)
                mine[key] = modules
            table[sys.executable] = dict(list(mine.items())[-MEMORY_TEMPLATES:])
            atomic_write_json(path, table)
    except Exception:  # noqa: BLE001, S110 - a cache that cannot be written is no error
        pass


def template_key(notebook: Any) -> str:
    """A template's identity for learning: its code cells, parameters left out."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type == "code" and not tags & {"parameters", "injected-parameters"}:
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()[:16]


def _learnable_prefixes() -> tuple[str, ...]:
    """Where the modules a zygote may learn live: installed packages, the standard
    library and nbops itself, never a user's own folders."""
    paths = sysconfig.get_paths()
    found = {paths[k] for k in ("purelib", "platlib", "stdlib") if k in paths}
    found.add(str(Path(__file__).resolve().parents[1]))
    return tuple(sorted(p.rstrip(os.sep) + os.sep for p in found))


@functools.cache
def _modules_expression() -> str:
    """A user expression listing the kernel's imported modules a zygote may learn."""
    # as JSON text: IPython's repr of a list stops at 1000 items
    return ("__import__('json').dumps([n for n, m in list(__import__('sys').modules.items()) if "
            "isinstance(getattr(m, '__file__', None), str) and "
            f"m.__file__.startswith({_learnable_prefixes()!r}) and "
            "not any(p.startswith('_') for p in n.split('.')) and "
            f"not n.startswith({UNLEARNABLE!r})])")


def launch_env(env: dict[str, str]) -> dict[str, str]:
    """What a pool kernel is started with, of a run's ``env``: never a run's folder, store
    or secrets (kernels are started before their run)."""
    return without(env, {*_RUN_VARS, SECRETS_VAR, *names_in(env)})


def secrets_key(env: dict[str, str]) -> str:
    """What tells the secrets of runs apart: a digest of the names ``NBOPS_SECRETS`` lists
    in ``env`` and their values ("" for none; kept in memory only)."""
    names = sorted(names_in(env))
    if not names:
        return ""
    pairs = json.dumps([[n, env.get(n, "")] for n in names])
    return hashlib.sha256(pairs.encode()).hexdigest()


def _kernel_of(notebook: Any) -> str:
    return str(notebook.metadata.get("kernelspec", {}).get("name") or "python3")


def _copy_log(source: Path, offset: int, target: Path | None) -> None:
    """Append what the kernel wrote during the run to the run's kernel log."""
    if target is None or not source.exists():
        return
    with source.open("rb") as src, target.open("ab") as dst:
        src.seek(offset)
        shutil.copyfileobj(src, dst)

