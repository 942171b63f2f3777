"""Request bodies → a checked DataFrame, or a 4xx naming what is wrong.

Accepted (MLflow's scoring protocol, so existing clients work unchanged):

- ``application/json`` with exactly one of ``dataframe_split`` (``columns`` + ``data``),
  ``dataframe_records`` (a list of objects), ``instances`` (a list of objects) or
  ``inputs`` (an object of columns, or a list of objects);
- ``text/csv`` with a header row.

Rules (each a :class:`~nbops.errors.RequestRejected` with the status and field):
empty body or malformed JSON/CSV → 400; another content type → 415; zero rows, a missing
required column, a value of the wrong type (a string or a boolean where a number is
declared, a fraction where an integer is, a nested value anywhere), a missing value (null
or NaN) in a required column → 422 naming the column (and the first bad row); columns the
signature does not know → 422, unless extra columns are allowed, when they are dropped and
reported back so the server can log a warning. Booleans are never numbers here, even
though Python's ``bool`` is an ``int``.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from ..errors import RequestRejected
from .model import ColumnSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NUMBER = {"double", "float"}
_INTEGER = {"long", "integer"}


def parse_body(body: bytes, content_type: str) -> Any:
    """A DataFrame from the request body (before any signature check)."""
    import pandas as pd

    if not body.strip():
        raise RequestRejected(400, "empty body: send JSON (dataframe_split, dataframe_records, "
                                   "instances or inputs) or CSV with a header row")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body))
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise RequestRejected(400, f"malformed CSV: {exc}") from None
    if kind != "application/json":
        raise RequestRejected(415, f"unsupported content type {kind or '(none)'!r}: use "
                                   "application/json or text/csv")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(400, f"malformed JSON: {exc}") from None
    return _frame(data)


def _frame(data: Any) -> Any:
    import pandas as pd

    if not isinstance(data, dict):
        raise RequestRejected(400, "the JSON body must be an object with one of: "
                                   + ", ".join(FORMATS))
    keys = [k for k in FORMATS if k in data]
    if len(keys) != 1:
        found = ", ".join(map(str, data)) or "(none)"
        raise RequestRejected(400, "the JSON body needs exactly one of "
                              f"{', '.join(FORMATS)}; it has: {found}")
    key = keys[0]
    value = data[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list) or \
                not isinstance(value.get("data"), list):
            raise RequestRejected(400, "dataframe_split needs 'columns' (a list) and 'data' "
                                       "(a list of rows)", key)
        columns = value["columns"]
        for number, row in enumerate(value["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestRejected(400, f"dataframe_split row {number} has "
                                      f"{len(row) if isinstance(row, list) else 'no'} values "
                                      f"for {len(columns)} columns", key)
        return pd.DataFrame(value["data"], columns=[str(c) for c in columns], dtype=object)
    if key == "inputs" and isinstance(value, dict):
        lengths = {len(v) if isinstance(v, list) else 1 for v in value.values()}
        if len(lengths) > 1:
            raise RequestRejected(400, "inputs: every column needs the same number of values",
                                  key)
        return pd.DataFrame({str(k): v if isinstance(v, list) else [v]
                             for k, v in value.items()}, dtype=object)
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise RequestRejected(400, f"{key} must be a list of objects (one per row)", key)
    return pd.DataFrame.from_records(value).astype(object)


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
        raise RequestRejected(422, f"unknown column(s) {', '.join(map(repr, extra))}: the model "
                              f"takes {', '.join(map(repr, known))} (the server drops extra "
                              "columns only when started with --allow-extra-columns)", extra[0])
    missing = [c["name"] for c in columns if c["required"] and c["name"] not in frame.columns]
    if missing:
        raise RequestRejected(422, f"missing column(s) {', '.join(map(repr, missing))}", missing[0])
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
        shown = json.dumps(value, default=str)[:40]
        return RequestRejected(422, f"column {name!r} row {row}: expected {expected}, got "
                                    f"{type(value).__name__} {shown}", name)

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
