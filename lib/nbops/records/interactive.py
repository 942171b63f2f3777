"""Run records for notebooks used by hand (no runner around them).

The in-kernel API opens one on its first call (stage ``interactive``) and closes it at
interpreter exit or on ``nbops.end_run()``; closing finalizes and mirrors it like any run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..util.envvars import kernel_env, resolve_runs_dir
from .lifecycle import finalize, new_record
from .mirror import sync
from .store import RunStore
from .types import Status


def start_interactive_run() -> Path:
    """Open a run record for a notebook used interactively; returns its folder."""
    store = RunStore(resolve_runs_dir())
    record = new_record("interactive", Path.cwd(), template=None, parameters={})
    return store.create(record)


def finish_interactive_run(run_dir: Path, status: Status = "succeeded",
                           at_exit: bool = False) -> None:
    """Close an interactive run record, then mirror it.

    At interpreter exit MLflow can no longer be imported (threads are shut down), so the
    mirror then runs in a short child process.
    """
    store = RunStore(run_dir.parent)
    finalize(store, store.read(run_dir.name), status, None)
    if at_exit:
        code = "import sys; from nbops.records.mirror import sync; sync(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(run_dir)], env=kernel_env(run_dir),
                       check=False, timeout=600)
    else:
        sync(run_dir)
