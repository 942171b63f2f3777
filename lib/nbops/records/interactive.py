"""Run records for notebooks used by hand (no runner around them).

The in-kernel API opens one on its first call and closes it at interpreter exit or on
``nbops.end_run()``; closing finalizes and mirrors it like any run. The record takes the
stage of the notebook the kernel runs (its ``nbops.stage`` metadata, found through the
``JPY_SESSION_NAME`` that Jupyter gives the kernel), with the notebook's path and sha256 as
its template, so a template run by hand in JupyterLab is listed with its stage like a
headless run; a kernel that cannot tell which notebook it runs records stage
``interactive``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..util.envvars import kernel_env, resolve_runs_dir
from ..util.files import sha256_bytes
from .lifecycle import finalize, make_origin, new_record
from .mirror import sync
from .store import RunStore
from .types import Status, TemplateRef


def start_interactive_run() -> Path:
    """Open a run record for a notebook used interactively; returns its folder."""
    store = RunStore(resolve_runs_dir())
    stage, template = this_notebook()
    record = new_record(stage, Path.cwd(), template=template, parameters={},
                        origin=make_origin("interactive"))
    return store.create(record)


def this_notebook() -> tuple[str, TemplateRef | None]:
    """The stage and template reference of the notebook this kernel runs, if it can tell."""
    import json
    import os

    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name:
        return "interactive", None
    path = Path(name)
    if not path.is_absolute():  # relative to the server root; the kernel runs beside it
        path = Path.cwd() / path.name
    try:
        raw = path.read_bytes()
        meta = json.loads(raw).get("metadata", {}).get("nbops", {})
    except (OSError, ValueError, AttributeError):
        return "interactive", None
    stage = meta.get("stage") if isinstance(meta, dict) else None
    ref: TemplateRef = {"name": path.stem, "path": str(path), "sha256": sha256_bytes(raw)}
    return (stage if isinstance(stage, str) and stage else "interactive"), ref


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
