"""Where one side of a drift comparison comes from, and how it is summarised.

A :class:`Source` gives a *head* (a first chunk, from which column kinds and roles are
decided, see ``columns``) and summarises all its rows into one :class:`SideSummary`:

- :class:`FrameSource`: a pandas DataFrame in memory; exact statistics (``exact`` mode)
  with the columns summarised in parallel threads, one per core (numpy's sorts release the
  GIL; no more threads than cores, so nothing is oversubscribed);
- :class:`ParquetSource` / :class:`CsvSource`: a file read in batches of ``batch_rows`` rows
  and merged (``sketch`` mode), so peak memory is bounded by the batch size, the file's
  row-group size (Parquet decodes a row group at a time) and the sketch size, never by the
  number of rows;
- :class:`DaskSource`: a Dask DataFrame; each partition is summarised on the workers (the
  active ``distributed`` client, if any, else Dask's default scheduler) and the summaries
  are merged on the workers in a tree; only the merged summary comes back.

Streaming and Dask sample the words of text columns so that a whole side samples at most
``TEXT_SAMPLE`` rows, as the in-memory path does.

Invariant: every source summarises the same way (``summary.summarise`` per chunk, then
``summary.merge``), so a report does not depend on where the data came from beyond the
sketch's stated error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict

import numpy as np
import pandas as pd

from ..datasets import check_header, table_format
from .columns import TEXT_SAMPLE
from .summary import ColumnPlan, ColumnSummary, Mode, merge, summarise

BATCH_ROWS = 200_000  # rows per streamed batch
HEAD_ROWS = 50_000  # rows of a streamed source read first to decide kinds and roles


class Scores(TypedDict):
    """Running sums for model performance on one side (labels and predictions known)."""

    n: int
    correct: int  # rows where prediction == label (classification)
    squared_error: float  # sum of (label - prediction)^2 (regression)


class PerformanceSpec(TypedDict):
    target: str
    prediction: str
    regression: bool


@dataclass
class SideSummary:
    """All rows of one side: per-column summaries, the row count, performance sums."""

    rows: int
    columns: dict[str, ColumnSummary]
    scores: Scores | None


class Source(Protocol):
    """One side of a comparison (see the module docstring)."""

    mode: Mode

    def head(self) -> pd.DataFrame: ...

    def summarise(self, plans: dict[str, ColumnPlan],
                  performance: PerformanceSpec | None) -> SideSummary: ...


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def scores_of(frame: pd.DataFrame, spec: PerformanceSpec | None) -> Scores | None:
    if spec is None or not {spec["target"], spec["prediction"]} <= set(frame.columns):
        return None
    y, p = frame[spec["target"]], frame[spec["prediction"]]
    if spec["regression"]:
        error = y.astype(float).to_numpy() - p.astype(float).to_numpy()
        return {"n": len(frame), "correct": 0, "squared_error": float(np.sum(error ** 2))}
    return {"n": len(frame), "correct": int((y == p).sum()), "squared_error": 0.0}


def _add_scores(a: Scores | None, b: Scores | None) -> Scores | None:
    if a is None or b is None:
        return a if b is None else b
    return {"n": a["n"] + b["n"], "correct": a["correct"] + b["correct"],
            "squared_error": a["squared_error"] + b["squared_error"]}


def summarise_chunk(frame: pd.DataFrame, plans: dict[str, ColumnPlan], mode: Mode,
                    performance: PerformanceSpec | None, text_rows: int | None,
                    seed: int) -> SideSummary:
    """One chunk of a side (a batch, a partition), every compared column."""
    fraction = 1.0 if text_rows is None else min(1.0, text_rows / max(1, len(frame)))
    columns = {name: summarise(frame[name], plan, mode, fraction, seed)
               for name, plan in plans.items() if name in frame.columns}
    return SideSummary(len(frame), columns, scores_of(frame, performance))


def merge_sides(a: SideSummary, b: SideSummary) -> SideSummary:
    columns = {name: merge(a.columns[name], b.columns[name]) if name in b.columns else part
               for name, part in a.columns.items()}
    return SideSummary(a.rows + b.rows, columns, _add_scores(a.scores, b.scores))


class FrameSource:
    """A pandas DataFrame in memory (exact by default)."""

    def __init__(self, frame: pd.DataFrame, mode: Mode = "exact") -> None:
        self.frame, self.mode = frame, mode

    def head(self) -> pd.DataFrame:
        return self.frame

    def summarise(self, plans: dict[str, ColumnPlan],
                  performance: PerformanceSpec | None) -> SideSummary:
        def one(name: str) -> tuple[str, ColumnSummary]:
            return name, summarise(self.frame[name], plans[name], self.mode)

        columns = dict(parallel_map(one, list(plans)))
        return SideSummary(len(self.frame), columns, scores_of(self.frame, performance))


def parallel_map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``fn`` over ``items`` in up to one thread per core, results in order."""
    workers = min(cores(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="nbops-drift") as pool:
        return list(pool.map(fn, items))


class _BatchSource:
    """Shared streaming logic: read a head, then every batch, summarised and merged."""

    mode: Mode = "sketch"
    batch_rows: int = BATCH_ROWS
    _head: pd.DataFrame | None = None

    def total_rows(self) -> int | None:
        return None

    def batches(self, rows: int | None = None) -> Iterator[pd.DataFrame]:
        """Batches of ``rows`` (default ``batch_rows``); with ``rows``, only the first."""
        raise NotImplementedError

    def head(self) -> pd.DataFrame:
        if self._head is None:
            self._head = next(self.batches(HEAD_ROWS), pd.DataFrame())
        return self._head

    def summarise(self, plans: dict[str, ColumnPlan],
                  performance: PerformanceSpec | None) -> SideSummary:
        total = self.total_rows()
        merged: SideSummary | None = None
        for index, batch in enumerate(self.batches()):
            text_rows = None if total is None else math.ceil(len(batch) * TEXT_SAMPLE / total)
            part = summarise_chunk(batch, plans, self.mode, performance, text_rows, index)
            merged = part if merged is None else merge_sides(merged, part)
        if merged is None:
            return SideSummary(0, {}, None)
        return merged


class ParquetSource(_BatchSource):
    """A Parquet file streamed in batches of ``batch_rows`` rows (row groups are read
    piecewise; the file is never loaded whole)."""

    def __init__(self, path: str | Path, mode: Mode = "sketch",
                 batch_rows: int = BATCH_ROWS) -> None:
        import pyarrow.parquet as pq

        self.path, self.mode, self.batch_rows = Path(path), mode, batch_rows
        check_header(self.path)
        # pre_buffer=False: with it, pyarrow caches every column chunk it has read, so memory
        # would grow with the file; without it, one row group is decoded at a time
        self._file = pq.ParquetFile(self.path, pre_buffer=False)

    def total_rows(self) -> int | None:
        return int(self._file.metadata.num_rows)

    def batches(self, rows: int | None = None) -> Iterator[pd.DataFrame]:
        for batch in self._file.iter_batches(batch_size=rows or self.batch_rows):
            yield batch.to_pandas()
            if rows:
                return


class CsvSource(_BatchSource):
    """A CSV file read in chunks of ``batch_rows`` rows."""

    def __init__(self, path: str | Path, mode: Mode = "sketch",
                 batch_rows: int = BATCH_ROWS) -> None:
        self.path, self.mode, self.batch_rows = Path(path), mode, batch_rows
        check_header(self.path)

    def total_rows(self) -> int | None:
        """An estimate from the line density of the first MiB (it only sets the share of
        rows whose words are sampled, so being approximate is harmless)."""
        size = self.path.stat().st_size
        with self.path.open("rb") as handle:
            start = handle.read(2**20)
        lines = max(1, start.count(b"\n"))
        return max(1, round(size * lines / max(1, len(start))))

    def batches(self, rows: int | None = None) -> Iterator[pd.DataFrame]:
        with pd.read_csv(self.path, chunksize=rows or self.batch_rows) as reader:
            for chunk in reader:
                yield chunk
                if rows:
                    return


class DaskSource:
    """A Dask DataFrame: partitions summarised and merged on the workers."""

    mode: Mode = "sketch"

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def head(self) -> pd.DataFrame:
        return self.frame.partitions[0].compute()

    def summarise(self, plans: dict[str, ColumnPlan],
                  performance: PerformanceSpec | None) -> SideSummary:
        from dask.base import compute
        from dask.delayed import delayed

        parts = self.frame.to_delayed()
        text_rows = math.ceil(TEXT_SAMPLE / max(1, len(parts)))
        chunk = delayed(summarise_chunk, pure=True)
        join = delayed(merge_sides, pure=True)
        level = [chunk(part, plans, "sketch", performance, text_rows, index)
                 for index, part in enumerate(parts)]
        while len(level) > 1:  # a tree of merges, run where the parts are
            level = [join(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        (merged,) = compute(level[0])  # type: ignore[no-untyped-call]
        return merged  # type: ignore[no-any-return]


def is_dask(frame: object) -> bool:
    """A Dask DataFrame (duck-typed, so Dask is only imported when it is used)."""
    return type(frame).__module__.startswith("dask") and hasattr(frame, "to_delayed")


def fits_in_memory(*paths: Path, factor: float = 3.0) -> bool:
    """Whether the files' uncompressed size, times ``factor`` (the in-memory comparison's
    peak), fits in the memory available now."""
    needed = sum(_uncompressed_bytes(p) for p in paths) * factor
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return True
    return needed < available


def _uncompressed_bytes(path: Path) -> int:
    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return path.stat().st_size


def source_for(value: Any, mode: Mode | None = None) -> Source:
    """The source for a DataFrame, a Dask DataFrame, or a Source already."""
    if isinstance(value, pd.DataFrame):
        return FrameSource(value, mode or "exact")
    if is_dask(value):
        return DaskSource(value)
    if hasattr(value, "summarise") and hasattr(value, "head"):
        return value  # type: ignore[no-any-return]
    raise TypeError(f"cannot compare a {type(value).__name__}: pass a pandas or Dask "
                    "DataFrame (or use 'nbops drift' for files)")

