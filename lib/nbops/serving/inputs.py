"""Request bodies → a checked DataFrame, or a 4xx naming what is wrong.

Accepted (MLflow's scoring protocol, so existing clients work unchanged):

- ``application/json`` with exactly one of ``dataframe_split`` (``columns`` + ``data``),
  ``dataframe_records`` (a list of objects), ``instances`` (a list of objects) or
  ``inputs`` (an object of columns, or a list of objects);
- ``text/csv`` with a header row.

Rules (each a :class:`~nbops.errors.RequestRejected` with the status and field):
empty body, a body that is not UTF-8, malformed JSON/CSV, JSON nested deeper than
``MAX_DEPTH`` levels, or a string holding a lone surrogate (``"\\ud800"``: not Unicode) →
400; another content type → 415; more columns than ``limit`` (see :func:`column_limit`)
→ 422; zero rows, a missing required column, a value of the wrong type (a string or a
boolean where a number is declared, a fraction where an integer is, a nested value
anywhere), a missing value (null or NaN) in a required column → 422 naming the column (and
the first bad row); columns the signature does not know → 422, unless extra columns are
allowed, when they are dropped and reported back so the server can log a warning.
Booleans are never numbers here, even though Python's ``bool`` is an ``int``.

Invariant: the shape of a body is measured before it is parsed or turned into a frame,
so the work a request causes is bounded by the limits, not by what it claims: the JSON
text is scanned for its depth and its widest object without building anything, a CSV's
fields are counted line by line before pandas reads it (a data line wider than the header
is refused: pandas would silently turn its first values into an index), and parsed JSON
is checked for its column count before pandas sees it. Error texts name at most ``SHOWN`` columns.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..errors import RequestRejected
from .model import ColumnSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_DEPTH = 32  # a request needs 4 levels; a nested cell value a few more (then a 422)
SHOWN = 5  # column names an error text lists before "and N more"
_NUMBER = {"double", "float"}
_INTEGER = {"long", "integer"}
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def column_limit(columns: list[ColumnSpec], allow_extra: bool, max_columns: int) -> int:
    """The most columns a request may have: the signature's count when extra columns are
    refused anyway; otherwise ``max_columns`` (or the signature's count, if larger)."""
    if columns and not allow_extra:
        return len(columns)
    return max(len(columns), max_columns)


def names(values: Iterable[Any], count: int | None = None) -> str:
    """``'a', 'b', 'c'``: at most ``SHOWN`` names (each cut to 40 characters), then
    "and N more" when ``count`` says there are more."""
    shown = [repr(str(v))[:40] for _, v in zip(range(SHOWN), values, strict=False)]
    more = (count or 0) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def parse_body(body: bytes, content_type: str, columns: list[ColumnSpec] | None = None,
               limit: int = 1000) -> Any:
    """A DataFrame from the request body (before the signature's type checks), refused
    when wider than ``limit`` columns (names checked against ``columns``, the signature)
    or deeper than ``MAX_DEPTH``, before anything of that size is built."""
    if not body.strip():
        raise RequestRejected(400, "empty body: send JSON (dataframe_split, dataframe_records, "
                                   "instances or inputs) or CSV with a header row")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ("text/csv", "application/json"):
        raise RequestRejected(415, f"unsupported content type {kind or '(none)'!r}: use "
                                   "application/json or text/csv")
    try:
        text = body.decode("utf-8")  # strict: raw surrogates and stray bytes are refused
    except UnicodeDecodeError as exc:
        raise RequestRejected(400, f"the body is not UTF-8: byte {exc.start} "
                                   f"(0x{body[exc.start]:02x}) cannot be decoded") from None
    if kind == "text/csv":
        return _csv(text, body, columns or [], limit)
    depth, widest = json_shape(body)
    if depth > MAX_DEPTH:
        raise RequestRejected(400, f"the JSON body is nested {depth:,} levels deep; requests "
                                   f"need 4 (at most {MAX_DEPTH} are read)")
    if widest > max(limit, 64):
        _too_wide(widest, [], columns or [], limit, "keys in one JSON object")
    try:
        data = json.loads(text)
    except RecursionError:
        raise RequestRejected(400, "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise RequestRejected(400, f"malformed JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body):  # rare: only then look at every string
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestRejected(400, "a string in the body holds a lone surrogate "
                                  f"({exc.object[exc.start]!r}), which is not Unicode: "
                                  "send text as UTF-8 or as \\u escapes of whole "
                                  "characters") from None
    return _frame(data, depth, columns or [], limit)


def json_shape(body: bytes) -> tuple[int, int]:
    """(deepest nesting, most keys in one object) of a JSON text, found without parsing it
    (vectorised: a few passes over the bytes, nothing built per value). Brackets and
    colons inside strings do not count; for malformed JSON the figures are approximate."""
    import numpy as np

    if b"\\" in body:  # drop escapes: every " left then opens or closes a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    raw = np.frombuffer(body, np.uint8)
    outside = ~np.logical_xor.accumulate(raw == ord('"'))  # one byte a character, no more
    where = np.flatnonzero(outside & np.isin(raw, np.frombuffer(b"[]{}:", np.uint8)))
    marks = raw[where]
    del raw, outside, where
    opening = (marks == ord("[")) | (marks == ord("{"))
    steps = opening.astype(np.int32) - ((marks == ord("]")) | (marks == ord("}")))
    depth = np.cumsum(steps, dtype=np.int32)
    deepest = int(depth.max()) if len(depth) else 0
    colon = marks == ord(":")
    widest = 0
    if colon.any() and deepest <= MAX_DEPTH:
        for level in np.unique(depth[colon]).tolist():  # keys per object, level by level
            here = (depth == level) & (opening | colon)
            owner = np.cumsum(opening[here])[colon[here]]
            widest = max(widest, int(np.bincount(owner).max()))
    return deepest, widest


def _too_wide(count: int, given: list[str], columns: list[ColumnSpec], limit: int,
              what: str = "columns") -> None:
    known = [c["name"] for c in columns]
    unknown = [n for n in given[:10 * SHOWN] if n not in known]
    listed = f" (not in it: {names(unknown)}, ...)" if unknown and known else ""
    if known and limit == len(known):  # extra columns refused: the signature is the limit
        raise RequestRejected(422, f"the request has {count:,} {what}; the model takes "
                              f"{len(known):,} columns: {names(known, len(known))}{listed}",
                              unknown[0] if unknown else None)
    raise RequestRejected(422, f"the request has {count:,} {what}, over the limit of "
                               f"{limit:,} columns (--max-columns){listed}",
                          unknown[0] if unknown else None)


def csv_fields(body: bytes) -> Any:
    """The number of fields on each line of a CSV text (an array, the header first; blank
    lines at the start skipped), found without parsing it: commas and newlines inside
    quotes do not count (a doubled quote inside a quoted field keeps the parity)."""
    import numpy as np

    stripped = body.lstrip(b"\r\n")
    raw = np.frombuffer(stripped, np.uint8)
    outside = ~np.logical_xor.accumulate(raw == ord('"'))
    ends = np.flatnonzero((raw == ord("\n")) & outside)
    commas = np.flatnonzero((raw == ord(",")) & outside)
    del raw, outside
    lines = len(ends) + (0 if len(ends) and ends[-1] == len(stripped) - 1 else 1)
    return np.bincount(np.searchsorted(ends, commas), minlength=lines) + 1


def _csv(text: str, body: bytes, columns: list[ColumnSpec], limit: int) -> Any:
    import csv

    import numpy as np
    import pandas as pd

    fields = csv_fields(body)
    header = int(fields[0])
    if header > limit:
        first = text.lstrip("\r\n")[:4096].split("\n", 1)[0]
        given = next(csv.reader([first]), [])
        _too_wide(header, [g.strip() for g in given], columns, limit)
    wider = np.flatnonzero(fields > header)
    if len(wider):  # pandas would silently take the first values as an index
        line = int(wider[0])
        raise RequestRejected(400, f"malformed CSV: line {line + 1} has {int(fields[line]):,} "
                                   f"fields; the header has {header:,}")
    try:
        return pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        raise RequestRejected(400, f"malformed CSV: {str(exc)[:300]}") from None


def _frame(data: Any, depth: int, columns: list[ColumnSpec], limit: int) -> Any:
    import pandas as pd

    if not isinstance(data, dict):
        raise RequestRejected(400, "the JSON body must be an object with one of: "
                                   + ", ".join(FORMATS))
    keys = [k for k in FORMATS if k in data]
    if len(keys) != 1:
        raise RequestRejected(400, "the JSON body needs exactly one of "
                              f"{', '.join(FORMATS)}; it has: {names(data, len(data)) or '(none)'}")
    key = keys[0]
    value = data[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list) or \
                not isinstance(value.get("data"), list):
            raise RequestRejected(400, "dataframe_split needs 'columns' (a list) and 'data' "
                                       "(a list of rows)", key)
        given = [str(c) for c in value["columns"]]
        _width(given, columns, limit)
        for number, row in enumerate(value["data"]):
            if not isinstance(row, list) or len(row) != len(given):
                raise RequestRejected(400, f"dataframe_split row {number} has "
                                      f"{len(row) if isinstance(row, list) else 'no'} values "
                                      f"for {len(given)} columns", key)
        if depth > 4:  # deeper than the format: some cell holds a list or an object
            _scalars((name, row, cell) for row, cells in enumerate(value["data"])
                     for name, cell in zip(given, cells, strict=True))
        return pd.DataFrame(value["data"], columns=given, dtype=object)
    if key == "inputs" and isinstance(value, dict):
        _width([str(k) for k in value], columns, limit)
        lengths = {len(v) if isinstance(v, list) else 1 for v in value.values()}
        if len(lengths) > 1:
            raise RequestRejected(400, "inputs: every column needs the same number of values",
                                  key)
        spread = {str(k): v if isinstance(v, list) else [v] for k, v in value.items()}
        if depth > 3:
            _scalars((name, row, cell) for name, cells in spread.items()
                     for row, cell in enumerate(cells))
        return pd.DataFrame(spread, dtype=object)
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise RequestRejected(400, f"{key} must be a list of objects (one per row)", key)
    seen: dict[str, None] = {}
    for row in value:
        seen.update(dict.fromkeys(row))
        if len(seen) > limit:
            break
    _width(list(seen), columns, limit)
    if depth > 3:
        _scalars((str(name), number, cell) for number, row in enumerate(value)
                 for name, cell in row.items())
    return pd.DataFrame.from_records(value).astype(object)


def _width(given: list[str], columns: list[ColumnSpec], limit: int) -> None:
    """Refuse more columns than ``limit``, or a column named twice, before any frame."""
    if len(given) > limit:
        _too_wide(len(given), given, columns, limit)
    if len(set(given)) < len(given):
        twice = [name for name, times in Counter(given).items() if times > 1]
        raise RequestRejected(422, f"column(s) named more than once: {names(twice, len(twice))}",
                              twice[0])


def _scalars(cells: Iterable[tuple[str, int, Any]]) -> None:
    for name, row, cell in cells:
        if isinstance(cell, (list, dict)):
            raise RequestRejected(422, f"column {name!r} row {row}: expected a single value, "
                                       f"got {_preview(cell)}", name)


def _preview(value: Any) -> str:
    """A short description of a value for an error text (never its whole content)."""
    if isinstance(value, (list, dict)):
        return f"a nested {type(value).__name__} of {len(value):,} item(s)"
    return f"{type(value).__name__} {repr(value)[:40]}"


def check(frame: Any, columns: list[ColumnSpec], allow_extra: bool) -> tuple[Any, list[str]]:
    """The frame reduced to the signature's columns, typed; and the extra columns dropped.

    Without a signature (``columns`` empty) the frame passes through unchanged.
    """
    if len(frame) == 0:
        raise RequestRejected(422, "no rows to predict: send at least one row")
    if not columns:
        return frame, []
    known = [c["name"] for c in columns]
    extra = [str(c) for c in frame.columns if c not in known]
    if extra and not allow_extra:
        raise RequestRejected(422, f"unknown column(s) {names(extra, len(extra))}: the model "
                              f"takes {names(known, len(known))} (the server drops extra "
                              "columns only when started with --allow-extra-columns)", extra[0])
    missing = [c["name"] for c in columns if c["required"] and c["name"] not in frame.columns]
    if missing:
        raise RequestRejected(422, f"missing column(s) {names(missing, len(missing))}",
                              missing[0])
    import pandas as pd

    typed = {}
    for spec in columns:
        if spec["name"] in frame.columns:
            typed[spec["name"]] = _column(frame[spec["name"]], spec)
        else:  # optional and absent
            typed[spec["name"]] = pd.Series([None] * len(frame), dtype=object)
    return pd.DataFrame(typed), extra


def _column(values: Any, spec: ColumnSpec) -> Any:
    try:
        fast = _fast_column(values.tolist(), spec)
    except (OverflowError, ValueError):  # e.g. an integer beyond 64 bits
        fast = None
    return fast if fast is not None else _checked_column(values, spec)


def _fast_column(raw: list[Any], spec: ColumnSpec) -> Any:
    """The common case in one vectorised step: every value already of the declared type
    and present (None when not: the value-by-value path then finds and names the problem)."""
    import numpy as np
    import pandas as pd

    kinds = {type(v) for v in raw}
    if spec["type"] in _NUMBER and kinds <= {int, float}:
        array = np.asarray(raw, dtype=float)
        return pd.Series(array) if np.isfinite(array).all() else None
    if spec["type"] in _INTEGER and kinds == {int}:
        return pd.Series(np.asarray(raw, dtype=np.int64))
    if spec["type"] == "string" and kinds == {str}:
        return pd.Series(raw, dtype=object)
    if spec["type"] == "boolean" and kinds == {bool}:
        return pd.Series(raw, dtype=bool)
    return None


def _checked_column(values: Any, spec: ColumnSpec) -> Any:
    import numpy as np
    import pandas as pd

    name, kind = spec["name"], spec["type"]
    out: list[Any] = []
    for row, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if spec["required"]:
                raise RequestRejected(422, f"column {name!r} row {row}: a value is required "
                                           "(got null/NaN)", name)
            out.append(None)
            continue
        out.append(_value(value, kind, name, row))
    if kind in _NUMBER:
        return pd.Series(out, dtype=float)
    if kind in _INTEGER:
        has_null = any(v is None for v in out)
        return pd.Series(out, dtype="Int64" if has_null else np.int64)
    if kind == "boolean":
        return pd.Series(out, dtype="boolean" if any(v is None for v in out) else bool)
    return pd.Series(out, dtype=object)


def _value(value: Any, kind: str, name: str, row: int) -> Any:
    def wrong(expected: str) -> RequestRejected:
        return RequestRejected(422, f"column {name!r} row {row}: expected {expected}, got "
                                    f"{_preview(value)}", name)

    if isinstance(value, (dict, list)):
        raise wrong(f"a single {kind} value")
    if kind in _NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            raise wrong("a finite number") from None
        if math.isinf(number):
            raise wrong("a finite number")
        return number
    if kind in _INTEGER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("an integer")
        if isinstance(value, float) and not value.is_integer():
            raise wrong("an integer")
        if not -(2**63) <= int(value) < 2**63:
            raise wrong("an integer within 64 bits")
        return int(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    return value
