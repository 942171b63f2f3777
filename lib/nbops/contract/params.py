"""Parameters: read from their sources, validate against the contract, render as code.

Precedence, lowest to highest (each source overrides the one before):

1. the template's defaults (its ``parameters`` cell);
2. a parameters file (``-f params.yaml``);
3. ``-p NAME VALUE`` options, or the ``parameters`` mapping of the Python API.

Only declared names are accepted, so a name can never carry code; values are rendered as
Python literals by type, never with ``str()``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
import yaml

from ..errors import ConfigError, InputTooLarge, ParameterError, TypeMismatch, closest
from .limits import MAX_INT_DIGITS, check_text, check_value, load_yaml
from .template import INJECTED_TAG, PARAMETERS_TAG, Parameter, Template
from .types import TypeSpec, coerce, matches_exactly, plain_exact

_DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")


NONE_WORDS = ("None", "none", "null", "~")


def parse_cli_value(raw: str, spec: TypeSpec) -> Any:
    """A ``-p`` value: the text as-is for ``str`` and ``Path``; ``None`` (or ``null``) for
    a parameter that accepts None; otherwise a YAML scalar/flow value."""
    if spec.accepts_none and raw.strip() in NONE_WORDS:
        return None
    if spec.kind in ("str", "path") or (spec.kind == "literal" and all(
            isinstance(c, str) or c is None for c in spec.choices)):
        return raw
    if _DECIMAL.fullmatch(raw.strip()) and _has_member(spec, "int"):
        digits = raw.strip().lstrip("+-").replace("_", "")
        if len(digits) > MAX_INT_DIGITS:
            raise InputTooLarge(f"a -p value has {len(digits)} digits; integers may have at "
                                f"most {MAX_INT_DIGITS}. Put large inputs in a file and pass "
                                "its path as a parameter.")
        return int(raw.strip().replace("_", ""))  # YAML 1.1 would read "010" as octal 8
    try:
        value = load_yaml(raw, "a -p value") if raw.strip() else raw
    except yaml.YAMLError:
        return raw
    if not _str_member(spec):
        return value
    if value is None and spec.accepts_none:
        return None
    others = [m for m in (spec.args if spec.kind == "union" else (spec,)) if m.kind != "str"]
    # e.g. ``int | str``: "5" is the int 5; ``str | None``: "true" stays the text "true"
    return value if any(matches_exactly(value, m) for m in others) else raw


def _has_member(spec: TypeSpec, kind: str) -> bool:
    return spec.kind == kind or (spec.kind == "union" and any(a.kind == kind for a in spec.args))


def _str_member(spec: TypeSpec) -> bool:
    return _has_member(spec, "str")


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a YAML (or JSON) parameters file with the safe loader.

    Raises:
        ConfigError: missing, unreadable, or not a mapping of names to values.
    """
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), f"parameters file {path}")
    except FileNotFoundError:
        raise ConfigError(f"parameters file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read parameters file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"parameters file {path} must be a mapping of parameter names to "
                          "values (NAME: VALUE per line)")
    return data


def resolve(
    template: Template,
    *,
    cli: Iterable[tuple[str, str]] = (),
    file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge and validate parameters.

    Returns:
        (resolved, given): every declared parameter with its final typed value, and the
        subset that was given explicitly (what gets injected into the notebook).

    Raises:
        ParameterError: unknown name or unconvertible value.
        ConfigError: unreadable parameters file.
    """
    given: dict[str, Any] = {}
    if file is not None:
        for name, value in load_params_file(file).items():
            check_value(value, f"parameter {name!r} in {file}")
            given[name] = _checked(template, name, value, source=f"file {file}")
    for name, raw in cli:
        spec = declared(template, name).type
        check_text(raw, f"-p {name}")
        given[name] = _checked(template, name, parse_cli_value(raw, spec), source="-p", raw=raw)
    for name, value in (overrides or {}).items():
        check_value(value, f"parameter {name!r}")
        given[name] = _checked(template, name, value, source="parameters")
    resolved = {name: p.default for name, p in template.parameters.items()}
    resolved.update(given)
    return resolved, given


def declared(template: Template, name: str) -> Parameter:
    """The declared parameter ``name``, or a ParameterError naming the valid ones."""
    if not isinstance(name, str) or name not in template.parameters:
        raise ParameterError(_unknown_message(template, name), name=str(name))
    return template.parameters[name]


def _unknown_message(template: Template, name: object) -> str:
    if name in template.secrets:
        return (f"{name} is a secret of template '{template.name}', not a parameter: a "
                "parameter's value is written into the executed notebook and the record. "
                f"Set the environment variable {name} (or put it in the credentials file) "
                "instead.")
    if not template.has_parameters_cell:
        return (f"template '{template.name}' declares no parameters (it has no cell tagged "
                f"'parameters'), so parameter {name!r} cannot be set. Tag a cell "
                "'parameters' in the template to declare some.")
    valid = ", ".join(template.parameters) or "(none)"
    match = closest(str(name), template.parameters)
    hint = f" Did you mean '{match}'?" if match else ""
    return (f"unknown parameter {name!r} for template '{template.name}'.{hint} "
            f"Valid parameters: {valid}. Run 'nbops templates' to see their types and help.")


def _checked(template: Template, name: str, value: Any, *, source: str,
             raw: str | None = None) -> Any:
    param = declared(template, name)
    try:
        checked = coerce(value, param.type)
    except TypeMismatch as exc:
        shown = raw if raw is not None else value
        raise ParameterError(
            f"parameter '{name}' of template '{template.name}' (from {source}) expects "
            f"{param.type}, got {_show(shown)}: {exc}. For example: "
            f"{example(name, param.type)} (default: {_show(param.default)}).",
            name=name,
        ) from None
    _check_paths(template, name, checked, param.type, source)
    return checked


def _check_paths(template: Template, name: str, value: Any, spec: TypeSpec,
                 source: str) -> None:
    """A ``Path`` parameter must name something that exists ("" and None mean none)."""
    is_path = spec.kind == "path" or (spec.kind == "union" and any(
        a.kind == "path" for a in spec.args))
    if not is_path or not isinstance(value, str) or value == "":
        return
    if not Path(value).expanduser().exists():
        raise ParameterError(f"parameter '{name}' of template '{template.name}' (from "
                             f"{source}) names {value!r}, which does not exist (looked in "
                             f"{Path.cwd()}); pass an existing file or folder", name=name)


def example(name: str, spec: TypeSpec) -> str:
    """A ``-p`` spelling that works for ``spec`` (shown in type errors)."""
    samples = {"int": "5", "float": "0.5", "bool": "true", "str": "text",
               "list": '"[1, 2]"', "dict": '"{accuracy: 0.9}"', "none": "None",
               "any": "5", "path": "data/train.csv"}
    members = spec.args if spec.kind == "union" else (spec,)
    shown = []
    for member in members:
        if member.kind == "literal":
            shown += [f"-p {name} {c}" for c in member.choices[:3]]
        else:
            shown.append(f"-p {name} {samples.get(member.kind, 'VALUE')}")
    return " or ".join(dict.fromkeys(shown))


def _show(value: Any) -> str:
    """A short repr for messages; a look-alike's own ``__repr__`` is never called."""
    if not plain_exact(value):
        kind = type(value)
        return f"a {kind.__module__}.{kind.__qualname__}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def render_value(value: Any) -> str:
    """Python source that evaluates to exactly ``value`` (a JSON-like value).

    Only exact built-in types are rendered (``type(value) is str``, not ``isinstance``), so
    no method of a subclass or of a look-alike ever runs while the injected cell is built;
    :func:`~nbops.contract.types.coerce` has already rebuilt every value that way.

    Raises:
        TypeError: the value is not made of exact JSON-like built-ins.
    """
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return repr(value)
    if kind is float:
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)
    if kind is str:
        return repr(value)
    if kind is list:
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    if kind is dict:
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"cannot render a {type(key).__name__} key as a parameter key")
            items.append(f"{repr(key)}: {render_value(item)}")
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot render {kind.__name__} as a parameter value")


def render_cell_source(given: Mapping[str, Any]) -> str:
    """The source of the injected-parameters cell."""
    lines = ["# Parameters injected by nbops"]
    for name, value in given.items():
        if not name.isidentifier():  # defence in depth: names were checked against the contract
            raise ParameterError(f"{name!r} is not a valid parameter name", name=name)
        lines.append(f"{name} = {render_value(value)}")
    return "\n".join(lines) + "\n"


def inject(nb: nbformat.NotebookNode, given: Mapping[str, Any]) -> nbformat.NotebookNode:
    """A copy of ``nb`` with an ``injected-parameters`` cell after the ``parameters`` cell.

    An earlier injected cell is replaced, never duplicated.
    """
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]
    if not given:
        return nb
    cell = nbformat.v4.new_code_cell(render_cell_source(given))
    cell.metadata["tags"] = [INJECTED_TAG]
    position = 0
    for index, existing in enumerate(nb.cells):
        if PARAMETERS_TAG in existing.metadata.get("tags", []):
            position = index + 1
            break
    nb.cells.insert(position, cell)
    return nb
