"""The environment variables nbops reads and sets, in one place (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

from .project import find_root

RUN_DIR = "NBOPS_RUN_DIR"  # set by the runner in the kernel: the run folder to record into
RUNS_DIR = "NBOPS_RUNS_DIR"  # the run store (default ./runs)
EXPERIMENT = "NBOPS_EXPERIMENT"  # MLflow experiment name (default nbops)
TRACKING_URI = "MLFLOW_TRACKING_URI"  # MLflow's own variable, honoured as is
TRIGGER = "NBOPS_TRIGGER"  # why runs of this process happen (e.g. schedule, in a cron line)
CYCLE = "NBOPS_CYCLE"  # the loop cycle id a process works for
ZYGOTE_OF = "NBOPS_ZYGOTE_OF"  # in a zygote's (and its kernels') environment: the driver's pid
USER = "NBOPS_USER"  # who acts in the ledger (default: the login name)
LOOP_USER = "nbops-loop"  # who acts for runs a loop tick starts (a person approves them)
MIRROR_TIMEOUT = "NBOPS_MIRROR_TIMEOUT"  # seconds a run waits for its MLflow mirror (600)
# the thread pools of numerical libraries in a kernel: OpenMP (scikit-learn, torch), MKL,
# OpenBLAS, Accelerate, numexpr
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


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


def thread_budget(parallel: int, cores: int | None = None) -> int:
    """Threads per kernel when ``parallel`` kernels share ``cores`` cores: max(1, C // N)
    (two kernels of two OpenMP threads each on two cores ran 2.2x slower than 1 each)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, parallel))


def thread_env(threads: int | None) -> dict[str, str]:
    """The variables that cap numerical thread pools at ``threads``; a variable the user
    set explicitly is kept (their choice wins). Empty when ``threads`` is None."""
    if threads is None:
        return {}
    return {var: str(threads) for var in THREAD_VARS if var not in os.environ}


def kernel_env(run_dir: Path, tracking_uri: str | None = None,
               threads: int | None = None) -> dict[str, str]:
    """The environment of a process that records into ``run_dir`` (a kernel, a mirror
    child): :func:`kernel_base_env` plus the run folder and the tracking store."""
    env = kernel_base_env(threads)
    env[RUN_DIR] = str(run_dir)
    if tracking_uri:  # mlflow calls in the notebook (the registry) use the run's store
        env[TRACKING_URI] = tracking_uri
    return env


def kernel_base_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a kernel before it knows its run (a warm pool kernel): this
    environment plus nbops importable and, when ``threads`` is given, the thread budget of
    :func:`thread_env`."""
    env = dict(os.environ)
    env.update(thread_env(threads))
    lib = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, env.get("PYTHONPATH", "")) if p)
    return env
