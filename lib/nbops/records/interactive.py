"""Run records for notebooks used by hand (no runner around them): hand runs.

The in-kernel API opens a hand run on its first call. The record takes the stage of the
notebook the kernel runs (its ``nbops.stage`` metadata, found through the
``JPY_SESSION_NAME`` that Jupyter gives the kernel), with the notebook's path and sha256 as
its template, so a template run by hand in JupyterLab is listed with its stage like a
headless run; a kernel that cannot tell which notebook it runs records stage
``interactive``.

A hand run ends (:func:`end_hand_run`: finalized, then mirrored) when the notebook starts
over (its first cell runs again, :func:`starts_over`: each Run All records a run of its
own), on ``nbops.end_run()``, or when the kernel stops. Invariants:

- the record is created with its ``mlflow`` block (``synced: false``), so a hand run that
  was never mirrored is one that ``nbops runs sync`` mirrors;
- the mirroring is done by one :class:`HandMirror` process per kernel, started with the
  kernel's first hand run: it imports MLflow and opens the store while the person works,
  runs in a session of its own (Jupyter stops a kernel by signalling its process group: 2.5
  s after asking it to shut down, SIGTERM; at 5 s, SIGKILL), and finishes a mirror even
  when the kernel is killed meanwhile. If the kernel dies with a hand run open, the process
  sees its pipe close and marks the run ``killed`` (and mirrors that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..tracking.uri import NO_TRACKING, resolve_uri
from ..util.envvars import kernel_base_env, resolve_runs_dir
from ..util.files import sha256_bytes
from .lifecycle import finalize, make_origin, new_record
from .mirror import sync
from .reconcile import reconcile
from .store import RunStore
from .types import RunError, RunRecord, Status, TemplateRef

if TYPE_CHECKING:
    from ..tracking.base import Tracker


def start_interactive_run() -> Path:
    """Open a run record for a notebook used interactively; returns its folder."""
    store = RunStore(resolve_runs_dir())
    stage, template = this_notebook()
    record = new_record(stage, Path.cwd(), template=template, parameters={},
                        origin=make_origin("interactive"))
    record["mlflow"] = {"tracking_uri": resolve_uri(None, store.root),
                        "experiment_id": None, "run_id": None, "synced": False}
    return store.create(record)


def notebook_path() -> Path | None:
    """The notebook file this kernel runs, as Jupyter named it (``JPY_SESSION_NAME``)."""
    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else Path.cwd() / path.name  # the kernel runs beside it


def this_notebook() -> tuple[str, TemplateRef | None]:
    """The stage and template reference of the notebook this kernel runs, if it can tell."""
    path = notebook_path()
    if path is None:
        return "interactive", None
    try:
        raw = path.read_bytes()
        meta = json.loads(raw).get("metadata", {}).get("nbops", {})
    except (OSError, ValueError, AttributeError):
        return "interactive", None
    stage = meta.get("stage") if isinstance(meta, dict) else None
    ref: TemplateRef = {"name": path.stem, "path": str(path), "sha256": sha256_bytes(raw)}
    return (stage if isinstance(stage, str) and stage else "interactive"), ref


_FIRST: dict[str, Any] = {}  # the notebook file's first cell, by (path, mtime, size)


def _first_cell(path: Path) -> tuple[str | None, str] | None:
    """The id and source of the notebook's cell tagged ``parameters``, else of its first
    code cell (None when the file cannot be read or has no code cell)."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if _FIRST.get("key") != key:
            cells = [c for c in json.loads(path.read_bytes()).get("cells", [])
                     if isinstance(c, dict) and c.get("cell_type") == "code"]
            tagged = [c for c in cells if "parameters" in _tags(c.get("metadata"))]
            first = (tagged or cells)[:1]
            _FIRST.update(key=key, cell=None if not first else (
                first[0].get("id"), _text(first[0].get("source", ""))))
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    found: tuple[str | None, str] | None = _FIRST["cell"]
    return found


def _tags(meta: object) -> list[str]:
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _text(source: object) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def starts_over(source: str, cell_id: str | None, cell_meta: object) -> bool:
    """Whether the cell about to run is the notebook's first: the cell tagged
    ``parameters`` (JupyterLab sends each cell's metadata, tags included, when it runs it),
    else the notebook file's parameters cell or, in a notebook without one, its first code
    cell, matched by cell id (by source when the file's cells have no ids)."""
    if "parameters" in _tags(cell_meta):
        return True
    path = notebook_path()
    first = _first_cell(path) if path is not None else None
    if first is None:
        return False
    first_id, first_source = first
    if first_id and cell_id:
        return bool(cell_id == first_id)
    return source.strip() == first_source.strip()


def end_hand_run(run_dir: Path, status: Status, error: RunError | None,
                 mirror: HandMirror | None, wait: bool) -> None:
    """Finalize a hand run, then have it mirrored: by the kernel's mirror process (waiting
    for it when ``wait``), or here when there is none (or it died)."""
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    if record["status"] == "running":
        finalize(store, record, status, error)
    if mirror is None or not mirror.ended(run_dir, wait):
        sync(run_dir)


def _line(*words: str) -> bytes:
    return (json.dumps(list(words)) + "\n").encode("utf-8")


class HandMirror:
    """The mirror process of a kernel's hand runs (see the module's doc)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls, uri: str, runs_dir: Path) -> HandMirror | None:
        """Start it (None with ``--tracking-uri none``: nothing to import or wait for)."""
        if uri == NO_TRACKING:
            return None
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "nbops.records.interactive", uri, str(runs_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=kernel_base_env(), start_new_session=True)
        except OSError:
            return None
        return cls(process)

    def _send(self, line: bytes) -> bool:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line)
            self.process.stdin.flush()
            return True
        except (OSError, ValueError):  # it died, or was closed
            return False

    def opened(self, run_dir: Path) -> None:
        """A hand run is open: if the kernel dies before it ends, it is marked killed."""
        self._send(_line("open", str(run_dir)))

    def ended(self, run_dir: Path, wait: bool) -> bool:
        """The run is final: mirror it (and with ``wait``, return once it is mirrored).
        False when the process is gone (the caller mirrors it)."""
        if not self._send(_line("wait" if wait else "final", str(run_dir))):
            return False
        if not wait:
            return True
        assert self.process.stdout is not None
        for raw in self.process.stdout:  # acks arrive only for "wait", in order
            if raw == _line("done", str(run_dir)):
                return True
        return False

    def close(self, timeout: float) -> None:
        """No more runs: wait (at most ``timeout`` s) while it mirrors what it was given; if
        this process is killed meanwhile, it goes on alone."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _mirror(run_dir: Path, trackers: dict[str, Tracker]) -> None:
    record: RunRecord = RunStore(run_dir.parent).read(run_dir.name)
    info = record["mlflow"]
    sync(run_dir, trackers.get(info["tracking_uri"]) if info else None)


def _serve(uri: str, runs_dir: Path, lines: IO[bytes], acks: IO[bytes]) -> None:
    """The mirror process: open the store, then mirror each run the kernel ends; when the
    kernel is gone, reconcile the runs it left open (``killed``, mirrored)."""
    from ..tracking.base import open_tracker

    trackers: dict[str, Tracker] = {}
    try:  # while the person works: MLflow's import and the store's set-up take seconds
        trackers[uri] = open_tracker(uri, runs_dir)
    except Exception:  # noqa: BLE001 - sync opens it again and records why it failed
        pass
    open_runs: set[Path] = set()
    for raw in lines:
        verb, path = json.loads(raw)
        run_dir = Path(path)
        if verb == "open":
            open_runs.add(run_dir)
            continue
        open_runs.discard(run_dir)
        try:
            _mirror(run_dir, trackers)
        except Exception as exc:  # noqa: BLE001 - the record stays unsynced: runs sync
            print(f"nbops: mirroring {run_dir.name} failed: {exc}", file=sys.stderr)
        if verb == "wait":
            try:
                acks.write(_line("done", path))
                acks.flush()
            except OSError:
                pass
    for run_dir in open_runs:  # the kernel died with this run open
        store = RunStore(run_dir.parent)
        reconcile(store, store.read(run_dir.name))


if __name__ == "__main__":
    _serve(sys.argv[1], Path(sys.argv[2]), sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.flush()
    # everything is written (records by atomic rename, MLflow's store committed per call);
    # tearing down an interpreter that holds MLflow took 1-5 s here, while a kernel waits
    os._exit(0)
