"""The prediction log: what the server was asked and what it answered, for monitoring.

Layout: ``<runs>/predictions/<model name>/part-<start time>-<pid>-<n>.jsonl``, one JSON
object per predicted row::

    {"request_id": ..., "row": 0, "time": "2026-12-01T12:00:00.123456+00:00",
     "model": "nbops-demo", "version": 3, "variant": "champion", "latency_ms": 4.2,
     "inputs": {"mean radius": 14.1, ...}, "prediction": 1}

Invariants:
- every server process writes its own part files (the pid is in the name), so lines from
  two processes never interleave; a line is written whole or not at all (one ``write`` of
  an encoded line from one thread);
- writes happen on a background thread: a slow disk never delays a response; when its
  queue is full, or a write fails (an unwritable folder, a full disk), records are dropped,
  never blocking, and never silently: ``dropped`` counts the rows, ``last_error`` says why,
  ``on_drop`` is called, and an error is logged (the first loss, then at most once a
  minute);
- a part is closed at ``max_part_bytes`` and the oldest parts of the model are deleted
  while the model's folder is over ``max_total_bytes`` (rotation: bounded on disk);
- ``sample`` < 1 keeps that share of requests (decided per request, so a request's rows
  stay together).

:func:`read_log` reads a time window back as a DataFrame (the inputs as columns, plus
``prediction`` and the metadata columns ``_time``, ``_model``, ``_version``, ``_variant``,
``_request_id``, ``_row``, ``_latency_ms``): what the monitor template takes as its
current data, and what ``ab_evaluate`` joins with labels. A failed request is logged as one
line with ``row`` -1, no inputs and its ``error`` (read back only when asked for).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypedDict, cast

LOG = logging.getLogger("nbops.serve")
FOLDER = "predictions"
META = ("_time", "_model", "_version", "_variant", "_request_id", "_row", "_latency_ms")


class LogEntry(TypedDict, total=False):
    """One predicted row (or, with ``row`` -1 and ``error``, one failed request)."""

    request_id: str
    row: int
    time: str
    model: str
    version: int | None
    variant: str
    latency_ms: float
    inputs: dict[str, Any]
    prediction: Any
    error: str  # failed requests only


def log_folder(runs_dir: Path, model: str) -> Path:
    safe = re.sub(r"[^\w.-]", "_", model) or "model"
    return runs_dir / FOLDER / safe


class Batch(NamedTuple):
    """One answered request, turned into lines on the log's thread (not the request's):
    the checked inputs, the predictions, and the fields every line of it shares."""

    frame: Any  # the checked input DataFrame
    predictions: list[Any]
    meta: dict[str, Any]  # request_id, time, model, version, variant, latency_ms


class PredictionLog:
    """Appends entries on a background thread, with sampling and size-bounded rotation."""

    def __init__(self, folder: Path, *, sample: float = 1.0, max_part_bytes: int = 32 * 2**20,
                 max_total_bytes: int = 1024 * 2**20, queue_size: int = 10_000,
                 on_drop: Callable[[int], object] | None = None) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"log sample must be between 0 and 1, got {sample}")
        self.folder, self.sample = folder, sample
        self.max_part_bytes, self.max_total_bytes = max_part_bytes, max_total_bytes
        self.dropped = 0
        self.last_error: str | None = None
        self.on_drop = on_drop
        self._drop_lock = threading.Lock()
        self._drop_logged = float("-inf")
        self._queue: queue.Queue[list[LogEntry] | Batch | None] = queue.Queue(queue_size)
        self._part: Any = None
        self._path = folder / "(none)"
        self._part_bytes = 0
        self._parts = 0
        self._random = random.Random()
        self._thread = threading.Thread(target=self._run, name="nbops-prediction-log",
                                        daemon=True)
        self._thread.start()

    def wanted(self) -> bool:
        """Whether to log the next request (the sampling decision)."""
        return self.sample >= 1.0 or self._random.random() < self.sample

    def append(self, entries: list[LogEntry] | Batch) -> None:
        try:
            self._queue.put_nowait(entries)
        except queue.Full:
            self._drop(entries, "the queue is full: the disk cannot keep up with the traffic")

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            entries = self._queue.get()
            if entries is None:
                break
            try:
                self._write(_lines(entries))
            except (OSError, ValueError, TypeError) as exc:
                self._drop(entries, f"{type(exc).__name__}: {exc}")
        if self._part is not None:
            self._part.close()

    def _drop(self, entries: list[LogEntry] | Batch, reason: str) -> None:
        rows = len(entries.predictions if isinstance(entries, Batch) else entries)
        with self._drop_lock:
            self.dropped += rows
            self.last_error = reason
            now = time.monotonic()
            tell = now - self._drop_logged >= 60  # the first loss, then once a minute
            if tell:
                self._drop_logged = now
        if tell:
            LOG.error("prediction log %s: dropped %d row(s), %d so far: %s", self.folder,
                      rows, self.dropped, reason)
        if self.on_drop is not None:
            self.on_drop(rows)

    def _write(self, lines: list[bytes]) -> None:
        for line in lines:
            if (self._part is None or self._part_bytes + len(line) > self.max_part_bytes
                    or not self._path.exists()):  # full, or deleted under us (clean-up)
                self._rotate()
            self._part.write(line)
            self._part_bytes += len(line)
        self._part.flush()

    def _rotate(self) -> None:
        if self._part is not None:
            self._part.close()
            self._part = None
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._parts += 1
        path = self.folder / f"part-{stamp}-{os.getpid()}-{self._parts}.jsonl"
        self._part = path.open("ab", buffering=0)
        self._path = path
        self._part_bytes = 0
        self._trim(keep=path)

    def _trim(self, keep: Path) -> None:
        parts = sorted(self.folder.glob("part-*.jsonl"))
        sizes = {p: p.stat().st_size for p in parts}
        total = sum(sizes.values())
        for part in parts:
            if total <= self.max_total_bytes or part == keep:
                break
            total -= sizes[part]
            part.unlink(missing_ok=True)


def _lines(item: list[LogEntry] | Batch) -> list[bytes]:
    """Encoded lines: entries one by one; a batch's inputs through pandas' JSON writer (fast;
    NaN as null), each line the shared fields, the row number, inputs and prediction."""
    if not isinstance(item, Batch):
        return [(json.dumps(e, default=_plain, allow_nan=False) + "\n").encode() for e in item]
    shared = json.dumps(item.meta, default=_plain, allow_nan=False)[1:-1]
    rows = item.frame.to_json(orient="records", lines=True, double_precision=15,
                              date_format="iso").splitlines()
    return [f'{{{shared}, "row": {i}, "inputs": {row}, "prediction": '
            f'{json.dumps(prediction, default=_plain)}}}\n'.encode()
            for i, (row, prediction) in enumerate(zip(rows, item.predictions, strict=True))]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def parse_window(window: str, now: datetime | None = None) -> tuple[datetime | None,
                                                                    datetime | None]:
    """``""`` (all), ``"90m"`` / ``"6h"`` / ``"7d"`` (the last so long), or ``START/END`` in
    ISO 8601 (either side may be empty)."""
    now = now or datetime.now(timezone.utc)
    text = window.strip()
    if not text:
        return None, None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - timedelta(**{unit: float(match.group(1))}), None
    if "/" in text:
        start, end = text.split("/", 1)
        return _time(start), _time(end)
    raise ValueError(f"cannot read window {window!r}: use 90m, 6h, 7d, or START/END in "
                     "ISO 8601 (e.g. 2026-12-01T00:00/2026-12-02T00:00)")


def _time(text: str) -> datetime | None:
    if not text.strip():
        return None
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def entries(folder: str | Path) -> Iterator[LogEntry]:
    """Every complete line of the log's parts, oldest part first, parsed. A line still
    being written (no newline yet) ends its part; an unreadable part (deleted by rotation
    while read) or a line that is not a JSON object is skipped."""
    path = Path(folder)
    for part in sorted(path.glob("part-*.jsonl")) if path.is_dir() else []:
        try:
            handle = part.open(encoding="utf-8")
        except OSError:
            continue
        with handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # a line still being written
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield cast(LogEntry, entry)


def read_log(folder: str | Path, window: str = "", variant: str | None = None,
             errors: bool = False) -> Any:
    """The logged rows of ``folder`` within ``window`` as a DataFrame (see module doc);
    with ``errors``, failed requests too (``_error`` set, no inputs or prediction).

    Raises:
        ValueError: no such folder, a bad window, or no rows in the window.
    """
    import pandas as pd

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"no prediction log at {path} (nbops serve writes one under "
                         f"<runs>/{FOLDER}/<model>)")
    start, end = parse_window(window)
    rows = []
    for entry in entries(path):
        at = datetime.fromisoformat(entry["time"])
        if (start and at < start) or (end and at >= end):
            continue
        if (variant and entry["variant"] != variant) or ("error" in entry and not errors):
            continue
        row = {**entry.get("inputs", {}), "prediction": entry.get("prediction"),
               "_time": entry["time"], "_model": entry["model"], "_version": entry["version"],
               "_variant": entry["variant"], "_request_id": entry["request_id"],
               "_row": entry["row"], "_latency_ms": entry["latency_ms"]}
        if errors:
            row["_error"] = entry.get("error")
        rows.append(row)
    if not rows:
        raise ValueError(f"the prediction log {path} has no rows in window {window or 'all'!r}")
    return pd.DataFrame(rows)
