"""Choosing runs the way people name them: ``latest``, an id prefix, a ``--where`` filter.

- :func:`resolve_id`: ``latest`` (the newest run, optionally of a stage), an exact id, or
  a prefix that matches exactly one id (ambiguous or unknown → a usage error listing what
  matched or what exists);
- :func:`parse_where` / :func:`matches`: ``metrics.NAME OP VALUE``, ``params.NAME OP VALUE``
  (the run's parameters), ``outputs.NAME OP VALUE``, or ``stage`` / ``status`` ``= VALUE``,
  with ``OP`` one of ``= == != > >= < <=``. Numbers compare as numbers, anything else as
  text; a run without the named value never matches.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

from ..errors import RunNotFoundError, UsageError, did_you_mean
from .types import RunRecord

Field = Literal["metrics", "params", "outputs", "stage", "status"]
_WHERE = re.compile(r"^\s*(?:(metrics|params|outputs)\.([^\s=!<>]+)|(stage|status))\s*"
                    r"(==|=|!=|>=|<=|>|<)\s*(.+?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
    ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class Condition(NamedTuple):
    field: Field
    name: str  # the metric, parameter or output name ("" for stage/status)
    op: str
    value: float | str


def resolve_id(ref: str, ids: list[str], stage_of: Callable[[str], str] | None = None,
               stage: str | None = None) -> str:
    """The run id ``ref`` means among ``ids`` (sorted oldest first)."""
    if ref == "latest":
        pool = [i for i in ids if stage is None or (stage_of and stage_of(i) == stage)]
        if not pool:
            raise RunNotFoundError("no runs yet" + (f" of stage {stage!r}" if stage else "")
                                   + " in this runs folder")
        return pool[-1]
    if ref in ids:
        return ref
    found = [i for i in ids if i.startswith(ref)]
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise UsageError(f"run id prefix {ref!r} matches {len(found)} runs ({shown}); give "
                         "more of the id")
    recent = ", ".join(ids[-3:]) or "none"
    raise RunNotFoundError(f"no run {ref!r} in this runs folder.{did_you_mean(ref, ids)} "
                           f"Newest: {recent}; or use 'latest'.")


def parse_where(text: str) -> Condition:
    match = _WHERE.match(text)
    if not match:
        raise UsageError(f"cannot read --where {text!r}: write metrics.NAME>VALUE, "
                         "params.NAME=VALUE, outputs.NAME!=VALUE, stage=NAME or status=NAME "
                         "(operators = != > >= < <=), e.g. --where 'metrics.accuracy>0.9'")
    group, name, plain, op, raw = match.groups()
    field = cast(Field, group or plain)
    if plain and op not in ("=", "==", "!="):
        raise UsageError(f"--where {text!r}: {plain} takes = or != only")
    return Condition(field, name or "", op, _value(raw))


def _value(raw: str) -> float | str:
    text = raw.strip().strip("'\"")
    try:
        return float(text)
    except ValueError:
        return text


def matches(record: RunRecord, conditions: list[Condition]) -> bool:
    return all(_holds(record, c) for c in conditions)


def _holds(record: RunRecord, condition: Condition) -> bool:
    if condition.field in ("stage", "status"):
        actual: Any = record[condition.field]
    else:
        source = {"metrics": record["metrics"], "params": record["parameters"],
                  "outputs": record["outputs"]}[condition.field]
        if condition.name not in source:
            return False
        actual = source[condition.name]
    wanted = condition.value
    if isinstance(wanted, float):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            try:
                actual = float(str(actual))
            except ValueError:
                return condition.op == "!="
        return _OPS[condition.op](float(actual), wanted)
    return _OPS[condition.op](str(actual), wanted)
