"""Pipelines: stages declared in ``pipeline.yaml``, checked as a DAG before anything runs.

Syntax::

    name: lifecycle
    stages:
      prepare:
        template: prepare            # a template name or a path relative to this file
        parameters: {n_rows: 2000}
      train:
        template: train
        parameters:
          train_path: ${prepare.outputs.train_path}   # an output of an upstream stage
        after: [prepare]             # optional: extra ordering without passing data
        retryable: true              # optional: may run again if its Dask worker dies

A parameter whose value is exactly ``${STAGE.outputs.NAME}`` receives that output of
``STAGE`` (which must be declared in the template's ``nbops.outputs``) and makes the stage
depend on it. A stage with a ``sweep:`` block (see ``nbops.sweep``) runs a sweep, and its
record is its best trial's: ``${STAGE.best.outputs.NAME}`` says so explicitly (and is
refused on a stage without a sweep), ``${STAGE.outputs.NAME}`` means the same. Everything
is checked before the first kernel starts: unknown stages,
templates, parameters and outputs, bad values, and cycles; every problem is reported at
once, each with its stage and parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..contract import params
from ..contract.limits import load_yaml
from ..contract.template import Template
from ..contract.template import resolve as resolve_template
from ..errors import ConfigError, PipelineError, UsageError, did_you_mean

REF = re.compile(r"^\$\{\s*([A-Za-z_][\w-]*)\.(?:best\.)?outputs\.([A-Za-z_][\w.\-]*)\s*\}$")
BEST = re.compile(r"^\$\{\s*[A-Za-z_][\w-]*\.best\.")  # the best trial of a sweep stage
DEFAULT_FILE = "pipeline.yaml"


@dataclass
class Stage:
    """One stage: a template, literal parameters, and references to upstream outputs."""

    name: str
    template: Template
    parameters: dict[str, Any]
    refs: dict[str, tuple[str, str]]
    after: list[str] = field(default_factory=list)
    retryable: bool = False  # no side effects: may run again after a lost worker (--dask)
    sweep: dict[str, Any] | None = None  # the raw ``sweep:`` block (checked by the sweeper)
    best: set[str] = field(default_factory=set)  # parameters given ${stage.best.outputs.x}

    @property
    def upstream(self) -> list[str]:
        return sorted({s for s, _ in self.refs.values()} | set(self.after))


@dataclass
class Pipeline:
    """A checked pipeline, with its stages in a valid execution order."""

    name: str
    path: Path
    stages: dict[str, Stage]
    order: list[str]
    summary: dict[str, tuple[str, str]] = field(default_factory=dict)


def load(path: Path | None = None, overrides: Iterable[tuple[str, str]] = ()) -> Pipeline:
    """Read, check and order a pipeline file; ``overrides`` are ``(STAGE.NAME, VALUE)``.

    Every problem is collected (each naming its stage and parameter) and reported at once,
    so one edit-run cycle fixes them all.

    Raises:
        ConfigError: missing or unreadable file.
        PipelineError: an inconsistent pipeline (every problem, one per line).
    """
    path = (path or Path(DEFAULT_FILE)).resolve()
    spec = _read(path)
    raw = spec.get("stages")
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(f"{path}: 'stages' must be a mapping of stage names to "
                            "{template, parameters, after}")
    problems: list[str] = []
    stages: dict[str, Stage] = {}
    for name, body in raw.items():
        stage = _stage(path, str(name), body, problems)
        if stage is not None:
            stages[stage.name] = stage
    _apply_overrides(stages, overrides, problems, {str(n) for n in raw})
    _check_references(stages, problems, [str(n) for n in raw])
    summary = _summary(spec.get("summary") or {}, stages, problems, {str(n) for n in raw})
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        raise PipelineError(f"{path}: {count}:\n" + "\n".join(f"  - {p}" for p in problems))
    order = _topological(stages, path)
    return Pipeline(str(spec.get("name", path.parent.name)), path, stages, order, summary)


def _summary(raw: Any, stages: dict[str, Stage], problems: list[str],
             declared: set[str]) -> dict[str, tuple[str, str]]:
    """``summary: {label: ${stage.outputs.name}}``: what to print when the pipeline ends."""
    if not isinstance(raw, dict):
        problems.append("'summary' must map labels to ${stage.outputs.name}")
        return {}
    found = {}
    for label, value in raw.items():
        match = REF.match(value) if isinstance(value, str) else None
        if not match:
            problems.append(f"summary '{label}' must be ${{stage.outputs.name}}, got {value!r}")
            continue
        source, out = match.group(1), match.group(2)
        if source in declared and source not in stages:
            continue  # the stage itself is broken: said once, there
        if source not in stages or out not in stages[source].template.outputs:
            problems.append(f"summary '{label}' refers to unknown {source}.outputs.{out}")
            continue
        found[str(label)] = (source, out)
    return found


def _read(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), f"pipeline file {path}")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} does not exist; create it or pass its path "
                          "(nbops pipeline run PATH)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: the pipeline file must be a mapping with 'stages'")
    return data


def _stage(path: Path, name: str, body: Any, problems: list[str]) -> Stage | None:
    """The stage, or None with its problems appended (every one found, not the first)."""
    if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        problems.append(f"invalid stage name {name!r} (letters, digits, _ and -)")
        return None
    if not isinstance(body, dict) or not isinstance(body.get("template"), str):
        problems.append(f"stage '{name}' needs 'template: NAME_OR_PATH'")
        return None
    unknown = set(body) - {"template", "parameters", "after", "retryable", "sweep"}
    if unknown:
        problems.append(f"stage '{name}' has unknown keys {sorted(map(str, unknown))}; "
                        "allowed: template, parameters, after, retryable, sweep")
    retryable = body.get("retryable", False)
    if not isinstance(retryable, bool):
        problems.append(f"stage '{name}': 'retryable' must be true or false, got {retryable!r}")
    sweep = body.get("sweep")
    if sweep is not None and not isinstance(sweep, dict):
        problems.append(f"stage '{name}': 'sweep' must be a mapping, e.g. "
                        "{grid: {C: [0.1, 1]}, maximize: accuracy}")
        sweep = None
    ref = body["template"]
    local = path.parent / ref
    try:
        template = resolve_template(local if ref.endswith(".ipynb") else ref,
                                    project_dir=path.parent)
    except UsageError as exc:
        problems.append(f"stage '{name}': {exc}")
        return None
    raw = body.get("parameters") or {}
    after = body.get("after") or []
    if not isinstance(raw, dict) or not isinstance(after, list):
        problems.append(f"stage '{name}': 'parameters' must be a mapping and 'after' a list "
                        "of stage names")
        return None
    literal, refs, best = {}, {}, set()
    for key, value in raw.items():
        match = REF.match(value) if isinstance(value, str) else None
        where = f"stage '{name}', parameter '{key}'"
        try:
            if match:  # names of referenced parameters are checked like literal ones
                params.declared(template, str(key))
                refs[str(key)] = (match.group(1), match.group(2))
                if BEST.match(value):
                    best.add(str(key))
            else:
                checked, _ = params.resolve(template, overrides={str(key): value})
                literal[str(key)] = checked[str(key)]
        except UsageError as exc:
            problems.append(f"{where}: {exc}")
    return Stage(name, template, literal, refs, [str(a) for a in after], retryable is True,
                 sweep, best)


def _apply_overrides(stages: dict[str, Stage], overrides: Iterable[tuple[str, str]],
                     problems: list[str], declared: set[str]) -> None:
    for target, raw in overrides:
        stage_name, _, param = target.partition(".")
        if stage_name in declared and stage_name not in stages:
            continue  # the stage itself is broken: said once, there
        if stage_name not in stages or not param:
            problems.append(f"override '{target}' must be STAGE.PARAMETER with a stage of "
                            f"this pipeline.{did_you_mean(stage_name, stages)} Stages: "
                            f"{', '.join(stages)}")
            continue
        stage = stages[stage_name]
        try:
            resolved, _ = params.resolve(stage.template, cli=[(param, raw)])
        except UsageError as exc:
            problems.append(f"override '{target}': {exc}")
            continue
        stage.parameters[param] = resolved[param]
        stage.refs.pop(param, None)


def _check_references(stages: dict[str, Stage], problems: list[str],
                      declared: list[str]) -> None:
    for stage in stages.values():
        for dep in stage.after:
            if dep not in declared:
                problems.append(f"stage '{stage.name}' runs after unknown stage "
                                f"'{dep}'.{did_you_mean(dep, declared)}")
        for param, (source, out) in stage.refs.items():
            where = f"stage '{stage.name}', parameter '{param}'"
            if source not in declared:
                problems.append(f"{where} refers to unknown stage '{source}'."
                                f"{did_you_mean(source, declared)} Stages: "
                                f"{', '.join(declared)}")
                continue
            if source not in stages:
                continue  # the source stage is broken: said once, there
            if param in stage.best and stages[source].sweep is None:
                problems.append(f"{where} asks for the best trial of stage '{source}', which "
                                f"has no 'sweep:' block; write ${{{source}.outputs.{out}}}")
                continue
            outputs = stages[source].template.outputs
            if out not in outputs:
                problems.append(
                    f"{where} refers to unknown output '{out}' of stage '{source}'."
                    f"{did_you_mean(out, outputs)} Template "
                    f"'{stages[source].template.name}' declares: "
                    f"{', '.join(outputs) or '(none)'}")


def _topological(stages: dict[str, Stage], path: Path) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = trail[trail.index(name):] + [name]
            raise PipelineError(f"{path}: the stages form a cycle: {' -> '.join(cycle)}")
        state[name] = "active"
        for dep in stages[name].upstream:
            visit(dep, trail + [name])
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, [])
    return order
