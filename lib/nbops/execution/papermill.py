"""The papermill executor: each notebook in a fresh local kernel, run by papermill.

A papermill engine (``nbops``) wraps papermill's nbclient engine so that every save is
atomic and every cell start/finish reaches the :class:`~nbops.execution.base.CellTracker`.
All knowledge of papermill and nbclient lives in this module: their exceptions are
translated into nbops' engine-neutral ones, papermill's error-marker cell is removed, and
papermill's per-cell statuses are corrected (it marks unexecuted cells "completed").
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
import papermill
from filelock import FileLock
from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_hook
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import Engine, NotebookExecutionManager, papermill_engines
from papermill.exceptions import PapermillExecutionError

from ..errors import CellFailed, CellTimeout, KernelDied, TemplateError, did_you_mean
from ..util.secrets import ScrubbingPipe
from .base import CellTracker, ExecutionRequest, Executor
from .outcome import ExecutionResult

ENGINE_NAME = "nbops"
PAPERMILL_MARKER = "papermill-error-cell-tag"
KERNEL_START_LOCK = f"nbops-kernel-start-{os.getuid()}.lock"  # per user: theirs is not ours


class _TrackedManager(NotebookExecutionManager):  # type: ignore[misc]
    """papermill's execution manager, saving atomically and reporting to the tracker."""

    def __init__(self, nb: nbformat.NotebookNode, tracker: CellTracker, **kwargs: Any) -> None:
        self.tracker = tracker
        super().__init__(nb, output_path=None, **kwargs)
        tracker.notebook = self.nb

    def save(self, **kwargs: Any) -> None:
        self.tracker.save(self.nb)
        self.last_save_time = self.now()

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        if cell_index is not None and cell.cell_type == "code":
            self.tracker.cell_started(cell_index)
        super().cell_start(cell, cell_index, **kwargs)


class _Client(PapermillNotebookClient):  # type: ignore[misc]
    """Starts kernels one at a time per machine; reports the kernel's pid to the tracker
    as soon as the kernel is up."""

    tracker: CellTracker

    def start_new_kernel_client(self) -> Any:
        # jupyter_client picks free ports, releases them, and the kernel binds them later:
        # kernels started at once by several processes can collide on a port and hang until
        # the start-up timeout (jupyter_client#487, papermill#511; 1 run in ~6 with 12 runs
        # at once here). A machine-wide lock held until the kernel answers closes the gap.
        # nbclient binds the sync name to the base coroutine, so override the sync one.
        if self.owns_km:
            with FileLock(str(Path(tempfile.gettempdir()) / KERNEL_START_LOCK), timeout=300):
                kc = super().start_new_kernel_client()
        else:  # a kernel started ahead (execution.pool): running, its ports bound
            kc = run_sync(self._connect_to_running_kernel)()
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        self.tracker.kernel_started(getattr(process, "pid", None))
        return kc

    async def _connect_to_running_kernel(self) -> Any:
        """nbclient's client start without ``wait_for_ready``, whose IOPub check costs 0.2 s
        or more per connection: the kernel is known to run; only IOPub's subscription has
        to be in place before the first cell (else its first outputs could be lost)."""
        self.kc = self.km.client()
        await ensure_async(self.kc.start_channels())
        await iopub_connected(self.kc, self.startup_timeout)
        self.kc.allow_stdin = False
        await run_hook(self.on_notebook_start, notebook=self.nb)
        return self.kc

    def execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
        result = super().execute_cell(cell, cell_index, *args, **kwargs)
        if cell.cell_type == "code":  # reached only when the cell ran to its end
            self.tracker.cell_finished(cell_index)
        return result


async def iopub_connected(client: Any, timeout: float) -> None:
    """Return once ``client``'s IOPub channel receives messages: ask for kernel info until
    a status message about that request arrives (a few milliseconds once subscribed)."""
    deadline = time.monotonic() + timeout
    while True:
        msg_id = client.kernel_info()
        try:
            while True:
                msg = await ensure_async(client.iopub_channel.get_msg(timeout=0.02))
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    return
        except Empty:
            if time.monotonic() > deadline:
                raise KernelDied(f"the kernel did not answer on IOPub within {timeout:g} s"
                                 ) from None


class NbopsEngine(Engine):  # type: ignore[misc]
    """papermill engine used by :class:`PapermillExecutor`."""

    @classmethod
    def execute_notebook(cls, nb: nbformat.NotebookNode, kernel_name: str,
                         output_path: str | None = None, progress_bar: bool = True,
                         log_output: bool = False, autosave_cell_every: int = 30,
                         **kwargs: Any) -> nbformat.NotebookNode:
        tracker: CellTracker = kwargs.pop("nbops_tracker")
        nb_man = _TrackedManager(nb, tracker, progress_bar=progress_bar,
                                 log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, tracker=tracker, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        result: nbformat.NotebookNode = nb_man.nb
        return result

    @classmethod
    def execute_managed_notebook(cls, nb_man: NotebookExecutionManager, kernel_name: str,
                                 **kwargs: Any) -> nbformat.NotebookNode:
        tracker: CellTracker = kwargs["tracker"]
        client = _Client(
            nb_man, km=kwargs.get("km"), kernel_name=kernel_name,
            timeout=kwargs.get("execution_timeout"),
            startup_timeout=kwargs.get("start_timeout", 60), shutdown_kernel="immediate",
            store_widget_state=True, log_output=False,
            resources={"metadata": {"path": kwargs["kernel_cwd"]}},  # kernel cwd, no process chdir
        )
        client.tracker = tracker
        start_kwargs: dict[str, Any] = {"env": kwargs["env"]}
        log = kwargs.get("kernel_log")
        if log is not None:
            start_kwargs["stderr"] = log
            start_kwargs["stdout"] = log
        executed: nbformat.NotebookNode = client.execute(**start_kwargs)
        return executed


papermill_engines.register(ENGINE_NAME, NbopsEngine)


class PapermillExecutor(Executor):
    """Each notebook in a fresh local kernel, executed by papermill."""

    def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
        self._execute(request, tracker)

    def _execute(self, request: ExecutionRequest, tracker: CellTracker, km: Any = None) -> None:
        """Execute with papermill in a new kernel, or in ``km``'s kernel when given (its
        output then goes to wherever that kernel was started to write)."""
        pipe = (ScrubbingPipe(request.kernel_log, request.scrubber)
                if request.kernel_log and km is None and request.scrubber else None)
        log = (pipe.writer if pipe is not None else
               request.kernel_log.open("ab") if request.kernel_log and km is None else None)
        try:
            papermill.execute_notebook(
                request.notebook, None, kernel_name=request.kernel_name,
                engine_name=ENGINE_NAME, progress_bar=request.progress, log_output=False,
                execution_timeout=request.cell_timeout, nbops_tracker=tracker,
                env=request.env, kernel_cwd=str(request.cwd), kernel_log=log, km=km,
            )
        except CellTimeoutError as exc:
            raise CellTimeout(str(exc)) from exc
        except DeadKernelError as exc:
            raise KernelDied(str(exc)) from exc
        except PapermillExecutionError as exc:
            raise CellFailed(str(exc)) from exc
        finally:
            if pipe is not None:
                pipe.close()
            elif log is not None:
                log.close()

    def check(self, request: ExecutionRequest) -> None:
        """The template's kernel must be installed; it is never replaced by another."""
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        manager = KernelSpecManager()
        try:
            manager.get_kernel_spec(request.kernel_name)
        except NoSuchKernel:
            known = sorted(manager.find_kernel_specs())
            raise TemplateError(
                f"the template asks for kernel {request.kernel_name!r}, which is not "
                f"installed here.{did_you_mean(request.kernel_name, known)} Installed "
                f"kernels: {', '.join(known) or '(none)'}. Install it (e.g. python -m "
                "ipykernel install --user --name NAME) or change the notebook's kernel in "
                "JupyterLab.") from None

    def _clean_notebook(self, notebook: Any) -> None:
        notebook.cells = [c for c in notebook.cells
                          if PAPERMILL_MARKER not in c.metadata.get("tags", [])]

    def _annotate_notebook(self, result: ExecutionResult) -> None:
        nb = result.notebook
        for cell in nb.cells:
            pm = cell.metadata.setdefault("papermill", {})
            if (cell.cell_type == "code" and cell.get("execution_count") is None
                    and pm.get("status") == "completed"):
                pm["status"] = "pending"  # papermill marks unexecuted cells "completed"
        failed_at = result.error["cell_index"] if result.error else None
        if isinstance(failed_at, int) and 0 <= failed_at < len(nb.cells):
            pm = nb.cells[failed_at].metadata.setdefault("papermill", {})
            pm["status"], pm["exception"] = "failed", True
