"""The in-notebook recording API: ``nbops.log_metric`` and friends.

Headless (``nbops run``), the runner sets ``NBOPS_RUN_DIR`` in the kernel's environment and
every call appends an event to ``<run_dir>/events.jsonl`` (files go under ``artifacts/``
and ``models/``); the runner folds them into ``run.json`` when the notebook ends.
Interactively, with no run context, the first call opens a run record of its own, a hand
run (see ``records.interactive``), that ends when the notebook's parameters cell runs again
(each Run All records a run of its own: an IPython ``pre_run_cell`` hook), on
:func:`end_run`, or at interpreter exit; it ends ``failed`` when the last cell run raised
(an IPython ``post_run_cell`` hook), else ``succeeded``, and is then mirrored.

This module imports only the standard library: heavy packages are imported on use.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TypeMismatch
from .tracking.uri import current_uri
from .util import envvars
from .util.files import encode_json, sha256_file, walk_files
from .util.secrets import Scrubber, from_environment, names_in

if TYPE_CHECKING:
    from .records.interactive import HandMirror
    from .records.types import RunError, Status

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ ]{0,249}$")
_lock = threading.RLock()
# run_dir: the run recorded into; interactive: it is a hand run; steps: next metric steps;
# error: how the last cell run in the hand run failed; mirror: the kernel's HandMirror
_state: dict[str, Any] = {"run_dir": None, "interactive": False, "steps": {}, "error": None,
                          "mirror": None, "hooked": False}
_scrub: dict[str, Scrubber] = {}  # "run": the secrets of this kernel's run and those read


class Secret:
    """The type of a secret in a parameters cell: ``API_TOKEN: Secret`` (no value; the
    line above it: ``from nbops import Secret``). Read the value with :func:`secret`."""

    def __init__(self) -> None:
        raise TypeError("Secret is only an annotation: declare 'NAME: Secret' in the "
                        "parameters cell and read the value with nbops.secret('NAME')")


def _scrubber() -> Scrubber:
    with _lock:
        if "run" not in _scrub:
            _scrub["run"] = from_environment()
        return _scrub["run"]


def secret(name: str) -> str:
    """The value of the secret ``name``. Headless, only a secret the template declares
    (``NAME: Secret`` in its parameters cell), from the kernel's environment. By hand in
    JupyterLab: the environment variable ``NAME``, else the project's credentials file.
    Whatever this kernel records afterwards has the value scrubbed."""
    if os.environ.get(envvars.RUN_DIR):
        if name not in names_in(os.environ) or not os.environ.get(name):
            raise LookupError(f"this template does not declare the secret {name!r}: add "
                              f"'{name}: Secret' to its parameters cell (after 'from nbops "
                              "import Secret')")
        return os.environ[name]
    from .contract.secrets import lookup

    value = lookup(name)
    if value is None:
        raise LookupError(f"no value for the secret {name!r}: set the environment variable "
                          f"{name} or add it to the project's credentials file")
    _scrubber().add(name, value)
    return value


def _leave_recorded_folder() -> None:
    """A notebook opened from a run's folder and run in Jupyter works in a scratch folder
    and records a new run beside that one: the recorded run's folder is never written to.
    (Only for kernels Jupyter started for a notebook; a headless run has its own folder.)"""
    if os.environ.get(envvars.RUN_DIR) or not os.environ.get("JPY_SESSION_NAME"):
        return
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "run.json").is_file():
            import tempfile

            os.environ.setdefault(envvars.RUNS_DIR, str(folder.parent))
            scratch = tempfile.mkdtemp(prefix="nbops-rerun-")
            os.chdir(scratch)
            print(f"nbops: this notebook belongs to recorded run {folder.name}; running it "
                  f"works in {scratch} and records a new run in {folder.parent}")
            return


_leave_recorded_folder()


def _new_run() -> None:
    """A reused kernel (``--reuse-kernel``) is about to record another headless run: forget
    the previous run's folder and metric steps (called by the executor, never by users)."""
    with _lock:
        _state.update(run_dir=None, interactive=False, steps={})
        _scrub.clear()


def _run_dir() -> Path:
    with _lock:
        if _state["run_dir"] is None:
            env = os.environ.get(envvars.RUN_DIR)
            if env:
                _state["run_dir"] = Path(env)
            else:
                _state["run_dir"] = _open_hand_run()
        return Path(_state["run_dir"])


def _open_hand_run() -> Path:
    from .records.interactive import HandMirror, start_interactive_run

    run_dir = start_interactive_run()
    if _state["mirror"] is None:
        _state["mirror"] = HandMirror.start(current_uri(), run_dir.parent)
    if _state["mirror"] is not None:
        _state["mirror"].opened(run_dir)
    _state.update(interactive=True, error=None)
    if not _state["hooked"]:
        _state["hooked"] = True
        atexit.register(_end_at_exit)
        _watch_cells()
    return run_dir


def _watch_cells() -> None:
    """In an IPython kernel: end the hand run when the notebook starts over, and note
    whether each cell raised (nothing outside IPython; IPython is never imported here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and hasattr(shell, "events"):
        shell.events.register("pre_run_cell", _before_cell)
        shell.events.register("post_run_cell", _after_cell)


def _before_cell(info: Any) -> None:
    if not _state["interactive"]:
        return
    from .records.interactive import starts_over

    if starts_over(getattr(info, "raw_cell", "") or "", getattr(info, "cell_id", None),
                   getattr(info, "cell_meta", None)):
        ended = _end(None, wait=False)
        if ended is not None:
            print(f"nbops: run {ended[0]} ended ({ended[1]}); what the notebook records from "
                  "now on goes to a new run")


def _after_cell(result: Any) -> None:
    if not _state["interactive"]:
        return
    exc = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
    _state["error"] = None if exc is None else _cell_error(exc)


def _cell_error(exc: BaseException) -> RunError:
    text = _scrubber().text(str(exc))
    return {"ename": type(exc).__name__, "evalue": text, "cell_index": None,
            "message": f"the last cell run raised {type(exc).__name__}: {text}"}


def tracking_uri() -> str:
    """The MLflow tracking URI runs of this notebook go to (``MLFLOW_TRACKING_URI`` or the
    embedded SQLite store of the runs folder), for registry calls in templates."""
    return current_uri()


def current_run_id() -> str:
    """The id of the run this notebook is recording into (opening one if needed)."""
    return _run_dir().name


def _check_name(name: str, what: str) -> str:
    if isinstance(name, str) and _scrubber().text(name) != name:  # a file or key on disk
        raise ValueError(f"the {what} name contains a secret's value: "
                         f"{_scrubber().text(name)!r}")
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid {what} name {name!r}: use letters, digits, _ . - / and "
                         "spaces, not starting with a dot")
    return name


def _emit(event: dict[str, Any]) -> None:
    event["t"] = time.time()
    line = json.dumps(_scrubber().value(encode_json(event)), allow_nan=False) + "\n"
    with _lock, open(_run_dir() / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def _number(value: Any) -> float:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a metric value must be a number, got {type(value).__name__}")
    return float(value)


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record a metric value; without ``step`` the values of a name are numbered 0, 1, …"""
    _check_name(name, "metric")
    number = _number(value)
    _run_dir()
    with _lock:
        steps: dict[str, int] = _state["steps"]
        if step is None:
            step = steps.get(name, -1) + 1
        steps[name] = max(int(step), steps.get(name, -1))
    _emit({"kind": "metric", "name": name, "value": number, "step": int(step)})


def log_params(**params: Any) -> None:
    """Record values the notebook chose (hyperparameters, derived settings)."""
    from .contract.types import ANY, coerce

    clean = {}
    for key, value in params.items():
        try:
            clean[_check_name(key, "param")] = coerce(value, ANY)
        except TypeMismatch:
            clean[key] = repr(value)
    _emit({"kind": "params", "params": clean})


def _store(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        shutil.copy2(source, dest)
    return dest


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> Path:
    """Copy a file or folder into the run's ``artifacts/``; returns the stored path."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"log_artifact: {source} does not exist")
    rel = _check_name(name or source.name, "artifact")
    dest = _store(source, _run_dir() / "artifacts" / rel)
    _emit({"kind": "artifact", "path": f"artifacts/{rel}"})
    return dest


def log_figure(fig: Any, name: str) -> Path:
    """Save a matplotlib figure as ``artifacts/figures/<name>`` (PNG unless named .svg/.pdf)."""
    _check_name(name, "figure")
    if not re.search(r"\.(png|svg|pdf|jpg)$", name):
        name += ".png"
    dest = _run_dir() / "artifacts" / "figures" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, bbox_inches="tight", dpi=100)
    _emit({"kind": "artifact", "path": f"artifacts/figures/{name}"})
    return dest


def log_model(model: Any, name: str, input_example: Any = None) -> Path:
    """Save a scikit-learn or PyTorch model in MLflow's model format under ``models/``.

    Logging a name again (Run All twice, a re-run cell) replaces the earlier model: the new
    one is saved beside it first, then swapped in, so a failure keeps the old one.
    """
    from .models import save_model

    _check_name(name, "model")
    dest = _run_dir() / "models" / name
    fresh = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.parent.mkdir(parents=True, exist_ok=True)
    flavor = save_model(model, fresh, input_example)
    if dest.exists():
        shutil.rmtree(dest)
    fresh.rename(dest)
    # the files' hashes go with the event, so this same run can load the model before
    # its record is closed (nbops.load_model verifies against them)
    files = [{"path": f"models/{name}/{rel}", "sha256": sha256_file(dest / rel),
              "bytes": (dest / rel).stat().st_size} for rel, _ in walk_files(dest)]
    _emit({"kind": "model", "name": name, "flavor": flavor, "path": f"models/{name}",
           "files": files})
    return dest


def output(name: str, value: Any) -> None:
    """Publish a JSON value that later pipeline stages can consume as a parameter."""
    from .contract.types import ANY, coerce

    _check_name(name, "output")
    try:
        clean = coerce(value, ANY)
    except TypeMismatch as exc:
        raise TypeError(f"output {name!r}: {exc}") from None
    _emit({"kind": "output", "name": name, "value": clean})


def _end_at_exit() -> None:
    _end(None, wait=False)
    mirror: HandMirror | None = _state["mirror"]
    if mirror is not None:
        mirror.close(timeout=120)  # Jupyter kills a kernel sooner; its mirror goes on alone


def end_run(status: Status | None = None) -> None:
    """End the hand run and mirror it (returns once it is mirrored); the next recorded call
    opens a new one. ``status`` by default: ``failed`` when the last cell run raised, else
    ``succeeded``. A no-op headless, where the runner ends the run."""
    _end(status, wait=True)


def _end(status: Status | None, wait: bool) -> tuple[str, Status] | None:
    """End the open hand run, if any: its id and status."""
    with _lock:
        if not _state["interactive"] or _state["run_dir"] is None:
            return None
        run_dir, error = Path(_state["run_dir"]), _state["error"]
        _state.update(run_dir=None, interactive=False, steps={}, error=None)
    from .records.interactive import end_hand_run

    chosen: Status = status or ("failed" if error is not None else "succeeded")
    end_hand_run(run_dir, chosen, error if chosen == "failed" else None, _state["mirror"],
                 wait)
    return run_dir.name, chosen
