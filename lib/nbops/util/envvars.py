"""The environment variables nbops reads and sets, in one place (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

from .project import find_root

RUN_DIR = "NBOPS_RUN_DIR"  # set by the runner in the kernel: the run folder to record into
RUNS_DIR = "NBOPS_RUNS_DIR"  # the run store (default ./runs)
EXPERIMENT = "NBOPS_EXPERIMENT"  # MLflow experiment name (default nbops)
TRACKING_URI = "MLFLOW_TRACKING_URI"  # MLflow's own variable, honoured as is


def resolve_runs_dir(option: str | Path | None = None) -> Path:
    """``--runs-dir``, else ``$NBOPS_RUNS_DIR``, else the runs folder the working directory
    is inside of (a notebook opened from a run's folder records beside that run, never
    into it), else the project's ``runs/`` (see ``project``), else ``./runs`` (absolute)."""
    chosen = option or os.environ.get(RUNS_DIR)
    if chosen:
        return Path(chosen).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "run.json").is_file():  # a run's folder: its parent is the runs folder
            return folder.parent
    root = find_root(here)
    return (root or here) / "runs"


def current_runs_dir(option: str | Path | None = None) -> Path:
    """The runs folder this process records into: ``option`` when given, else the run's
    (``$NBOPS_RUN_DIR``'s parent, inside a kernel), else :func:`resolve_runs_dir`."""
    run_dir = os.environ.get(RUN_DIR)
    if option is None and run_dir:
        return Path(run_dir).parent
    return resolve_runs_dir(option)


def kernel_env(run_dir: Path, tracking_uri: str | None = None) -> dict[str, str]:
    """The environment of a process that records into ``run_dir`` (a kernel, a mirror
    child): this environment plus the run folder, the tracking store, and nbops importable."""
    env = dict(os.environ)
    env[RUN_DIR] = str(run_dir)
    if tracking_uri:  # mlflow calls in the notebook (the registry) use the run's store
        env[TRACKING_URI] = tracking_uri
    lib = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, env.get("PYTHONPATH", "")) if p)
    return env
