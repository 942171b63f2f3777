"""What the drift statistics need from one side of one column, as mergeable plain data.

A :class:`ColumnSummary` is built from a pandas chunk of a column and merged with the
summary of another chunk of the same column. Merging is associative and commutative, so
the row groups of a Parquet file, or the partitions of a Dask DataFrame on its workers, are
summarised apart and combined; the result does not depend on how the rows were split, up to
the sketch's stated error.

Numbers (numeric values, datetimes as epoch seconds, lengths of text) are kept one of two
ways:

- ``exact``: the finite values themselves; the statistics are exact (in-memory data);
- ``sketch``: an Apache DataSketches KLL quantile sketch with ``k = SKETCH_K``: memory is
  bounded by ``k`` whatever the number of rows, and any rank (CDF value) it returns is off
  by at most :func:`rank_error` (with 99 % confidence).

Exact in both modes: row, missing and infinite counts (±inf counts as missing), count, mean
and spread of the finite numbers (Chan's parallel update), their minimum and maximum, the
counts of categorical levels (up to ``MAX_LEVELS`` distinct levels; past that the column is
marked ``overflow`` and left untested, with a warning), and word counts of a text column
over a seeded sample of at most ``TEXT_SAMPLE`` rows per side (see ``columns``).

Invariant: a summary is picklable plain data (the sketch is held serialised), so Dask
workers can return it; nothing in a summary refers to the frame it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from .columns import as_numbers, infinite_count, token_counts

Mode = Literal["exact", "sketch"]
SKETCH_K = 1000  # KLL accuracy parameter: rank error about 0.33 % (99 % confidence)
MAX_LEVELS = 100_000  # distinct categorical levels counted exactly per column


class ColumnPlan(NamedTuple):
    """How to summarise a column: its kind, and whether it is tested (an id column is
    only counted: rows, missing values)."""

    kind: str
    tested: bool = True


def rank_error(k: int = SKETCH_K) -> float:
    """The KLL sketch's normalised rank error (single-rank queries, 99 % confidence)."""
    from datasketches import kll_doubles_sketch

    return float(kll_doubles_sketch.get_normalized_rank_error(k, False))


@dataclass(frozen=True)
class Numbers:
    """Finite numbers of one side: exact moments and range, and the values or a sketch."""

    count: int
    mean: float
    m2: float  # sum of squared deviations from the mean
    low: float
    high: float
    values: np.ndarray | None = None  # exact mode: the finite values (unsorted)
    sketch: bytes | None = None  # sketch mode: a serialised KLL sketch

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    @property
    def exact(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class ColumnSummary:
    """One side of one column (see the module docstring for what is exact)."""

    kind: str
    rows: int
    missing: int  # missing or ±inf
    infinite: int
    numbers: Numbers | None = None  # numeric, datetime (epoch seconds), text (lengths)
    counts: pd.Series | None = None  # categorical and boolean: level → count
    tokens: pd.Series | None = None  # text: word → count (on the sample)
    overflow: bool = False  # more than MAX_LEVELS distinct levels
    notes: list[str] = field(default_factory=list)


def summarise(series: pd.Series, plan: ColumnPlan, mode: Mode, text_fraction: float = 1.0,
              seed: int = 0) -> ColumnSummary:
    """The summary of one chunk of a column whose kind was decided beforehand.

    ``text_fraction`` < 1 samples that share of this chunk's rows for the word counts (the
    streaming readers set it so the whole side samples about ``TEXT_SAMPLE`` rows).
    """
    kind = plan.kind
    if kind == "numeric":  # one pass over the raw floats: no copy but the finite values
        raw = series.to_numpy(dtype=float, na_value=np.nan)
        finite = np.isfinite(raw)
        values = raw[finite]
        infinite = int(np.isinf(raw).sum())
        base = ColumnSummary(kind, len(raw), len(raw) - len(values), infinite)
        return replace(base, numbers=_numbers(values, mode)) if plan.tested else base
    infinite = infinite_count(series, kind)
    missing = int(series.isna().sum()) + infinite
    base = ColumnSummary(kind, len(series), missing, infinite)
    if not plan.tested:
        return base
    if kind in ("categorical", "boolean"):
        counts = series.dropna().astype(str).value_counts()
        if len(counts) > MAX_LEVELS:
            return replace(base, overflow=True)
        return replace(base, counts=counts.astype("int64"))
    numbers = _numbers(np.asarray(as_numbers(series, kind), dtype=float), mode)
    if kind != "text":
        return replace(base, numbers=numbers)
    text = series.dropna()
    if text_fraction < 1.0 and len(text):
        text = text.sample(frac=text_fraction, random_state=seed)
    return replace(base, numbers=numbers, tokens=token_counts(text))


def _numbers(values: np.ndarray, mode: Mode) -> Numbers:
    if len(values) == 0:
        return Numbers(0, 0.0, 0.0, math.inf, -math.inf,
                       values=values if mode == "exact" else None,
                       sketch=None if mode == "exact" else _sketch(values))
    mean = float(values.mean())
    m2 = float(np.sum((values - mean) ** 2))
    low, high = float(values.min()), float(values.max())
    if mode == "exact":
        return Numbers(len(values), mean, m2, low, high, values=values)
    return Numbers(len(values), mean, m2, low, high, sketch=_sketch(values))


def _sketch(values: np.ndarray) -> bytes:
    from datasketches import kll_doubles_sketch

    sketch = kll_doubles_sketch(SKETCH_K)
    if len(values):
        sketch.update(values)
    return bytes(sketch.serialize())


def load_sketch(numbers: Numbers) -> Any:
    """The KLL sketch of sketch-mode numbers (built from the values in exact mode)."""
    from datasketches import kll_doubles_sketch

    data = numbers.sketch if numbers.sketch is not None else _sketch(
        np.asarray(numbers.values, dtype=float))
    return kll_doubles_sketch.deserialize(data)


def merge(a: ColumnSummary, b: ColumnSummary) -> ColumnSummary:
    """Two chunks of the same column as one (associative and commutative)."""
    if a.kind != b.kind:
        raise ValueError(f"cannot merge a {a.kind} summary with a {b.kind} one")
    overflow = a.overflow or b.overflow
    counts = None if overflow else _add(a.counts, b.counts)
    if counts is not None and len(counts) > MAX_LEVELS:
        overflow, counts = True, None
    return ColumnSummary(a.kind, a.rows + b.rows, a.missing + b.missing,
                         a.infinite + b.infinite, _merge_numbers(a.numbers, b.numbers),
                         counts, _add(a.tokens, b.tokens), overflow, [*a.notes, *b.notes])


def merge_all(parts: list[ColumnSummary]) -> ColumnSummary:
    """All chunks of a column as one (pairwise, so sketches merge in a balanced tree)."""
    if not parts:
        raise ValueError("no chunks to merge")
    while len(parts) > 1:
        parts = [merge(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _add(a: pd.Series | None, b: pd.Series | None) -> pd.Series | None:
    if a is None or b is None:
        return a if b is None else b
    return a.add(b, fill_value=0).astype("int64")


def _merge_numbers(a: Numbers | None, b: Numbers | None) -> Numbers | None:
    if a is None or b is None:
        return a if b is None else b
    count = a.count + b.count
    if count == 0:
        mean, m2 = 0.0, 0.0
    else:  # Chan et al.: exact moments of the union from the moments of the parts
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / count
        m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / count
    low, high = min(a.low, b.low), max(a.high, b.high)
    if a.values is not None and b.values is not None:
        return Numbers(count, mean, m2, low, high, values=np.concatenate([a.values, b.values]))
    sketch = load_sketch(a)
    sketch.merge(load_sketch(b))
    return Numbers(count, mean, m2, low, high, sketch=bytes(sketch.serialize()))
