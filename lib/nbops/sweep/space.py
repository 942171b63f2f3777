"""The search space of a sweep: choices and numeric ranges, parsed against the contract.

A dimension is a :class:`Choice` (a list of values: ``--grid C=0.1,1,10``, a YAML list,
a ``Literal`` or ``bool`` parameter) or a :class:`Range` (``--range C=0.01:10:log``,
``--range n_estimators=10:200:int``). Invariants: every dimension names a parameter the
template declares; every choice is already converted to the parameter's declared type (a
bad value is a ParameterError naming the parameter); a range has finite bounds with
low < high, positive bounds when logarithmic, and is only allowed on numeric parameters.
Nothing here runs anything.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import product
from typing import Any

import yaml

from ..contract import params
from ..contract.limits import load_yaml
from ..contract.template import Template
from ..contract.types import TypeSpec
from ..errors import ConfigError, InputTooLarge, ParameterError
from ..util.files import dumps

MAX_SPACE_BYTES = 64 * 1024  # a space file is a few lines; anything bigger is a mistake
MAX_CHOICES = 10_000  # values of one parameter (checked before any is parsed)


@dataclass(frozen=True)
class Choice:
    """One of the listed values (typed)."""

    name: str
    values: tuple[Any, ...]

    def describe(self) -> dict[str, Any]:
        return {"choices": list(self.values)}


@dataclass(frozen=True)
class Range:
    """A number between ``low`` and ``high`` (inclusive), uniform or log-uniform."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def describe(self) -> dict[str, Any]:
        low: float | int = int(self.low) if self.integer else self.low
        high: float | int = int(self.high) if self.integer else self.high
        return {"low": low, "high": high, "log": self.log, "int": self.integer}


Dimension = Choice | Range
Space = dict[str, Dimension]


def _split(option: str, flag: str) -> tuple[str, str]:
    name, sep, values = option.partition("=")
    if not sep or not name.strip():
        raise ParameterError(f"{flag} {option!r} must be NAME=VALUES (for example "
                             f"{flag} C=0.1,1,10)")
    return name.strip(), values


def parse_choice(template: Template, name: str, raw_values: list[Any],
                 source: str) -> Choice:
    """A Choice of ``raw_values`` (text from the command line, or YAML values), each
    converted to the parameter's declared type.

    Raises:
        ParameterError: unknown parameter, no values, or a value of the wrong type.
    """
    spec = params.declared(template, name).type
    if not raw_values:
        raise ParameterError(f"{source}: parameter '{name}' has an empty list of values; "
                             "give at least one", name=name)
    if len(raw_values) > MAX_CHOICES:
        raise InputTooLarge(f"{source}: parameter '{name}' has {len(raw_values):,} values, "
                            f"over the limit of {MAX_CHOICES:,}; sample a range instead "
                            f"(--random N --range {name}=LOW:HIGH)")
    typed: dict[str, Any] = {}  # by the JSON of the typed value: a repeated value counts once
    for raw in raw_values:
        value = params.parse_cli_value(raw, spec) if isinstance(raw, str) else raw
        checked, _ = params.resolve(template, overrides={name: value})
        typed.setdefault(dumps(checked[name], indent=None), checked[name])
    return Choice(name, tuple(typed.values()))


def parse_grid_option(template: Template, option: str) -> Choice:
    """``NAME=V1,V2,...`` (``--grid``; also the choices of ``--random`` / ``--optuna``)."""
    name, values = _split(option, "--grid")
    raw = [v.strip() for v in values.split(",")] if values.strip() else []
    if any(v == "" for v in raw):
        raise ParameterError(f"--grid {option!r}: an empty value between commas", name=name)
    return parse_choice(template, name, raw, f"--grid {option!r}")


def _is_numeric(spec: TypeSpec) -> tuple[bool, bool]:
    """(accepts a float, accepts an int) for a declared type."""
    members = spec.args if spec.kind == "union" else (spec,)
    kinds = {m.kind for m in members}
    return "float" in kinds or "any" in kinds, "int" in kinds or "any" in kinds


def _bound(text: Any, name: str, source: str) -> float:
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise ParameterError(f"{source}: the bounds of '{name}' must be numbers, got "
                             f"{text!r}", name=name)
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"{source}: the bounds of '{name}' must be numbers, got "
                             f"{text!r} (write LOW:HIGH, e.g. 0.01:10:log)", name=name) from None
    if not math.isfinite(value):
        raise ParameterError(f"{source}: the bounds of '{name}' must be finite, got {text!r}",
                             name=name)
    return value


def make_range(template: Template, name: str, low: Any, high: Any, flags: set[str],
               source: str) -> Range:
    """A checked Range on a numeric parameter (``int`` parameters get integer ranges).

    Raises:
        ParameterError: unknown or non-numeric parameter, bad bounds or flags.
    """
    spec = params.declared(template, name).type
    unknown = flags - {"log", "int"}
    if unknown:
        raise ParameterError(f"{source}: unknown range flag(s) {sorted(unknown)} for '{name}'; "
                             "use :log and/or :int", name=name)
    floats, ints = _is_numeric(spec)
    if not floats and not ints:
        raise ParameterError(f"{source}: parameter '{name}' is {spec}, not a number: give its "
                             f"values with --grid {name}=A,B instead of a range", name=name)
    lo, hi = _bound(low, name, source), _bound(high, name, source)
    integer = "int" in flags or not floats
    if integer and not ints:
        raise ParameterError(f"{source}: parameter '{name}' is {spec}; an :int range needs an "
                             "int parameter", name=name)
    if integer and (lo != int(lo) or hi != int(hi)):
        raise ParameterError(f"{source}: the integer range of '{name}' needs whole bounds, "
                             f"got {low}:{high}", name=name)
    if not lo < hi:
        raise ParameterError(f"{source}: the range of '{name}' needs LOW < HIGH, got "
                             f"{low}:{high}", name=name)
    if "log" in flags and lo <= 0:
        raise ParameterError(f"{source}: a :log range of '{name}' needs LOW > 0, got {low}",
                             name=name)
    return Range(name, lo, hi, log="log" in flags, integer=integer)


def parse_range_option(template: Template, option: str, flag: str = "--range") -> Range:
    """``NAME=LOW:HIGH[:log][:int]``."""
    name, text = _split(option, flag)
    parts = text.split(":")
    if len(parts) < 2:
        raise ParameterError(f"{flag} {option!r} must be NAME=LOW:HIGH[:log][:int] (for "
                             f"example {flag} C=0.01:10:log)", name=name)
    return make_range(template, name, parts[0].strip(), parts[1].strip(),
                      {p.strip() for p in parts[2:]}, f"{flag} {option!r}")


def _reject_aliases(text: str, source: str) -> None:
    """A space is a few lines written by hand: YAML anchors and aliases are refused
    outright (no expansion, however small)."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(f"{source} uses YAML anchors/aliases (&/*); write each "
                                  "parameter's values out in full")
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None


def parse_space_text(template: Template, text: str, source: str) -> Space:
    """A YAML space: ``NAME: [V1, V2]`` (choices), ``NAME: LOW:HIGH[:log][:int]`` or
    ``NAME: {low: L, high: H, log: true, int: true}`` (ranges).

    Raises:
        ConfigError: too big, aliases, not YAML, not a mapping.
        ParameterError: a bad parameter, value or range.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPACE_BYTES:
        raise InputTooLarge(f"{source} is over {MAX_SPACE_BYTES:,} bytes; a search space is "
                            "a few lines")
    _reject_aliases(text, source)
    try:
        data = load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    return parse_space_mapping(template, data, source)


def parse_space_mapping(template: Template, data: Any, source: str) -> Space:
    """The space of an already loaded mapping (a space file, a pipeline ``space:``)."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source} must map parameter names to a list of values or a "
                          "range (C: [0.1, 1] or C: 0.01:10:log)")
    space: Space = {}
    for name, body in data.items():
        key = str(name)
        where = f"{source}, parameter '{key}'"
        if isinstance(body, list):
            space[key] = parse_choice(template, key, body, where)
        elif isinstance(body, str):
            space[key] = parse_range_option(template, f"{key}={body}", where)
        elif isinstance(body, dict) and set(map(str, body)) <= {"low", "high", "log", "int"}:
            flags = {f for f in ("log", "int") if body.get(f) is True}
            space[key] = make_range(template, key, body.get("low"), body.get("high"), flags,
                                    where)
        else:
            raise ConfigError(f"{where}: give a list of values, LOW:HIGH[:log][:int], or "
                              "{low, high, log, int}")
    return space


def derived_space(template: Template, exclude: set[str]) -> Space:
    """What the contract itself bounds: each ``Literal`` and ``bool`` parameter (not fixed
    by the user) as a choice of its allowed values."""
    space: Space = {}
    for name, param in template.parameters.items():
        if name in exclude:
            continue
        if param.type.kind == "literal":
            space[name] = Choice(name, tuple(param.type.choices))
        elif param.type.kind == "bool":
            space[name] = Choice(name, (False, True))
    return space


def grid_size(space: Space) -> int:
    """The number of grid points (no expansion: safe on a huge grid)."""
    return math.prod(len(d.values) for d in space.values() if isinstance(d, Choice))


def expand_grid(space: Space) -> list[dict[str, Any]]:
    """The cartesian product, in the order the dimensions were given (the last varies
    fastest). Only choices; ranges are refused by the caller."""
    names = list(space)
    choices = [d.values for d in space.values() if isinstance(d, Choice)]
    return [dict(zip(names, combo, strict=True)) for combo in product(*choices)]


def sample(space: Space, rng: random.Random) -> dict[str, Any]:
    """One random point: uniform over choices, (log-)uniform within ranges."""
    point: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            point[name] = dim.values[rng.randrange(len(dim.values))]
            continue
        if dim.log:
            value = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
        else:
            value = rng.uniform(dim.low, dim.high)
        point[name] = (min(int(dim.high), max(int(dim.low), round(value))) if dim.integer
                       else min(dim.high, max(dim.low, value)))
    return point


def describe(space: Space) -> dict[str, Any]:
    """The space as JSON data (for the sweep record)."""
    return {name: dim.describe() for name, dim in space.items()}
