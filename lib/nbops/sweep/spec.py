"""What a sweep is asked to do, checked before anything runs: :class:`SweepSpec`.

Built from the command line (:func:`from_options`) or from a pipeline stage's ``sweep:``
block (:func:`from_block`); both end in :func:`_checked`, so the rules are the same:

- the strategy is ``grid`` (every dimension a list of values), ``random`` N or ``optuna`` N;
- a grid has only choices; random and Optuna may mix choices and ranges;
- without any ``--grid``/``--range``/``--space``, random and Optuna search the template's
  ``Literal`` and ``bool`` parameters (the ranges the contract itself declares);
- a parameter is either fixed (``-p``) or swept, not both;
- Optuna needs a metric and a direction (``--maximize M`` or ``--minimize M``);
- at most ``max_trials`` trials (a grid is counted without expanding it).

Every violation is a UsageError whose message names the problem and the next step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import params
from ..contract.template import Template
from ..errors import ConfigError, ParameterError, UsageError
from ..records.types import Direction, Strategy
from .space import (
    Choice,
    Space,
    derived_space,
    grid_size,
    parse_choice,
    parse_grid_option,
    parse_range_option,
    parse_space_mapping,
    parse_space_text,
)

DEFAULT_MAX_TRIALS = 256
_METRIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ ]{0,249}$")
BLOCK_KEYS = {"grid", "range", "space", "random", "optuna", "maximize", "minimize", "seed",
              "max_trials", "prune"}


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: the strategy, its space, the metric, the fixed parameters."""

    strategy: Strategy
    space: Space
    trials: int  # how many trials will be asked for (a grid: its size)
    metric: str | None = None
    direction: Direction | None = None
    seed: int | None = None
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters given by the user
    prune: bool = True  # Optuna: prune trials from their stepped metric


@dataclass
class SweepArgs:
    """The raw sweep options of the command line (or of a pipeline block)."""

    grid: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    space_file: Path | None = None
    random: int | None = None
    optuna: int | None = None
    maximize: str | None = None
    minimize: str | None = None
    seed: int | None = None
    max_trials: int = DEFAULT_MAX_TRIALS
    prune: bool = True


def from_options(template: Template, args: SweepArgs,
                 cli_params: Iterable[tuple[str, str]] = ()) -> SweepSpec:
    """The spec of ``nbops sweep TEMPLATE ...``.

    Raises:
        UsageError: any bad option (the message names it and what to do).
    """
    _, fixed = params.resolve(template, cli=cli_params)
    space: Space = {}
    for option in args.grid:
        _add(space, parse_grid_option(template, option))
    for option in args.ranges:
        _add(space, parse_range_option(template, option))
    if args.space_file is not None:
        try:
            text = args.space_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read space file {args.space_file}: {exc}") from None
        for dim in parse_space_text(template, text, f"space file {args.space_file}").values():
            _add(space, dim)
    return _checked(template, args, space, fixed)


def from_block(template: Template, block: Any, fixed: dict[str, Any]) -> SweepSpec:
    """The spec of a pipeline stage's ``sweep:`` block (``fixed``: the stage's own
    literal parameters, which the sweep does not vary).

    Raises:
        UsageError: a bad block (the caller prefixes the stage).
    """
    if not isinstance(block, dict):
        raise ConfigError("'sweep' must be a mapping, e.g. {grid: {C: [0.1, 1]}, "
                          "maximize: accuracy}")
    unknown = set(map(str, block)) - BLOCK_KEYS
    if unknown:
        raise ConfigError(f"'sweep' has unknown keys {sorted(unknown)}; allowed: "
                          f"{', '.join(sorted(BLOCK_KEYS))}")
    space: Space = {}
    grid = block.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError("'sweep.grid' must map parameter names to lists of values")
    for name, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"'sweep.grid.{name}' must be a list of values")
        _add(space, parse_choice(template, str(name), values, f"sweep.grid.{name}"))
    for key in ("range", "space"):
        if block.get(key) is not None:
            for dim in parse_space_mapping(template, block[key], f"sweep.{key}").values():
                _add(space, dim)
    args = SweepArgs(random=_count(block, "random"), optuna=_count(block, "optuna"),
                     maximize=_text(block, "maximize"), minimize=_text(block, "minimize"),
                     seed=_count(block, "seed", minimum=0),
                     max_trials=_count(block, "max_trials") or DEFAULT_MAX_TRIALS,
                     prune=block.get("prune", True) is not False)
    swept = [n for n in space if n in fixed]
    if swept:  # the stage's literal value is the default the sweep replaces
        fixed = {k: v for k, v in fixed.items() if k not in swept}
    return _checked(template, args, space, fixed)


def _count(block: dict[str, Any], key: str, minimum: int = 1) -> int | None:
    value = block.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"'sweep.{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _text(block: dict[str, Any], key: str) -> str | None:
    value = block.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"'sweep.{key}' must be a metric name, got {value!r}")
    return value


def _add(space: Space, dim: Choice | Any) -> None:
    if dim.name in space:
        raise ParameterError(f"parameter '{dim.name}' is given twice in the search space; "
                             "give it once (--grid, --range or the space file)", name=dim.name)
    space[dim.name] = dim


def _strategy(args: SweepArgs) -> tuple[Strategy, int | None]:
    if args.random is not None and args.optuna is not None:
        raise UsageError("choose one of --random N and --optuna N (without either, the "
                         "sweep runs the --grid)")
    if args.optuna is not None:
        return "optuna", args.optuna
    if args.random is not None:
        return "random", args.random
    return "grid", None


def _direction(args: SweepArgs) -> tuple[str | None, Direction | None]:
    if args.maximize and args.minimize:
        raise UsageError("give one of --maximize METRIC and --minimize METRIC, not both")
    metric = args.maximize or args.minimize
    if metric is not None and not _METRIC.match(metric):
        raise UsageError(f"invalid metric name {metric!r}: a metric the notebook logs "
                         "(nbops.log_metric) or outputs (nbops.output)")
    direction: Direction | None = ("maximize" if args.maximize else
                                   "minimize" if args.minimize else None)
    return metric, direction


def _checked(template: Template, args: SweepArgs, space: Space,
             fixed: dict[str, Any]) -> SweepSpec:
    strategy, count = _strategy(args)
    metric, direction = _direction(args)
    both = sorted(set(space) & set(fixed))
    if both:
        raise ParameterError(f"parameter(s) {', '.join(both)} are both fixed (-p) and swept; "
                             "drop one of the two", name=both[0])
    if not space and strategy != "grid":
        space = derived_space(template, set(fixed))
    if not space:
        raise UsageError(f"nothing to sweep: give --grid NAME=V1,V2, --range NAME=LOW:HIGH or "
                         f"--space FILE (template '{template.name}' declares no Literal or "
                         "bool parameter to search by default)")
    if strategy == "grid":
        ranges = [n for n, d in space.items() if not isinstance(d, Choice)]
        if ranges:
            raise UsageError(f"a grid needs values, but {', '.join(ranges)} is a range: use "
                             "--grid NAME=V1,V2 or sample the range with --random N / "
                             "--optuna N")
        count = grid_size(space)
    if strategy == "optuna":
        if metric is None:
            raise UsageError("--optuna needs the metric to optimise: --maximize METRIC or "
                             "--minimize METRIC")
        _check_optuna_choices(space)
    assert count is not None
    if count > args.max_trials:
        raise UsageError(f"the sweep would run {count:,} trials, over the limit of "
                         f"{args.max_trials:,}; narrow the space or raise the limit with "
                         f"--max-trials {count}")
    return SweepSpec(strategy, space, count, metric, direction, args.seed, fixed, args.prune)


def _check_optuna_choices(space: Space) -> None:
    for name, dim in space.items():
        if isinstance(dim, Choice) and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in dim.values):
            raise ParameterError(f"Optuna can only choose among scalar values; parameter "
                                 f"'{name}' has list or mapping values: sweep it with "
                                 "--grid or --random instead", name=name)
