"""Declared parameter types: parse an annotation, convert a value to it.

The contract admits JSON-like types only: ``int``, ``float``, ``bool``, ``str``, ``None``,
``list[T]``, ``dict[str, T]``, unions of these (``int | None``, ``Optional[str]``),
``Any``, ``Literal["a", "b", ...]`` (one of the listed values: the choices are named when a
value is not one of them) and ``Path`` (a ``str`` naming an existing file or folder, checked
before a kernel starts; ``""`` means none). Conversion is explicit: numpy scalars become
their Python value, tuples become lists, and anything else that is not a JSON-like value is
rejected, never ``str()``-ed.
"""

from __future__ import annotations

import ast
import math
import numbers
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import TypeMismatch, did_you_mean


@dataclass(frozen=True)
class TypeSpec:
    """A declared type: ``kind`` in int, float, bool, str, none, list, dict, any, union."""

    kind: str
    args: tuple[TypeSpec, ...] = field(default=())
    choices: tuple[Any, ...] = field(default=())  # Literal values

    def __str__(self) -> str:
        if self.kind == "literal":
            return f"Literal[{', '.join(repr(c) for c in self.choices)}]"
        if self.kind == "path":
            return "Path"
        if self.kind == "none":
            return "None"
        if self.kind == "any":
            return "Any"
        if self.kind == "union":
            return " | ".join(str(a) for a in self.args)
        if self.kind == "list":
            return f"list[{self.args[0]}]" if self.args else "list"
        if self.kind == "dict":
            return f"dict[str, {self.args[0]}]" if self.args else "dict"
        return self.kind

    @property
    def accepts_none(self) -> bool:
        return (self.kind in ("none", "any") or (self.kind == "literal" and None in self.choices)
                or any(a.accepts_none for a in self.args if self.kind == "union"))


ANY = TypeSpec("any")
_SCALARS = {"int", "float", "bool", "str"}
_NAMES = {**{s: s for s in _SCALARS}, "None": "none", "NoneType": "none", "Any": "any",
          "object": "any", "list": "list", "List": "list", "dict": "dict", "Dict": "dict",
          "Path": "path"}


def parse_annotation(node: ast.expr) -> TypeSpec:
    """Turn an annotation's AST into a TypeSpec.

    Raises:
        ValueError: the annotation is not one of the admitted types.
    """
    if isinstance(node, ast.Constant) and node.value is None:
        return TypeSpec("none")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return parse_annotation(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(parse_annotation(node.left), parse_annotation(node.right))
    name = _dotted_name(node.value if isinstance(node, ast.Subscript) else node)
    if isinstance(node, ast.Subscript):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name == "Literal":
            return _literal(args)
        specs = [parse_annotation(a) for a in args]
        if name == "Optional" and len(specs) == 1:
            return _union(specs[0], TypeSpec("none"))
        if name == "Union":
            result = specs[0]
            for spec in specs[1:]:
                result = _union(result, spec)
            return result
        if _NAMES.get(name) == "list" and len(specs) == 1:
            return TypeSpec("list", (specs[0],))
        if _NAMES.get(name) == "dict" and len(specs) == 2 and specs[0].kind == "str":
            return TypeSpec("dict", (specs[1],))
        raise ValueError(f"unsupported annotation {ast.unparse(node)!r}")
    if name in _NAMES:
        return TypeSpec(_NAMES[name])
    raise ValueError(f"unsupported annotation {ast.unparse(node)!r}")


def _literal(args: list[ast.expr]) -> TypeSpec:
    choices = []
    for arg in args:
        if not isinstance(arg, ast.Constant) or not (
                arg.value is None or isinstance(arg.value, (str, int, bool))):
            raise ValueError(f"Literal takes str, int, bool or None values, not "
                             f"{ast.unparse(arg)!r}")
        choices.append(arg.value)
    if not choices:
        raise ValueError("Literal needs at least one value")
    return TypeSpec("literal", choices=tuple(choices))


def _dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr  # typing.Optional -> Optional
    return ast.unparse(node)


def _union(a: TypeSpec, b: TypeSpec) -> TypeSpec:
    members = (a.args if a.kind == "union" else (a,)) + (b.args if b.kind == "union" else (b,))
    unique = tuple(dict.fromkeys(members))
    return unique[0] if len(unique) == 1 else TypeSpec("union", unique)


def infer_spec(value: Any) -> TypeSpec:
    """The type implied by an unannotated default value."""
    if value is None:
        return ANY
    for kind, py in (("bool", bool), ("int", int), ("float", float), ("str", str),
                     ("list", list), ("dict", dict)):
        if isinstance(value, py):
            return TypeSpec(kind)
    return ANY


def coerce(value: Any, spec: TypeSpec) -> Any:
    """Convert ``value`` to ``spec``, explicitly and losslessly, or raise TypeMismatch.

    The result is rebuilt from exact built-in types only (recursively, keys included),
    whatever ``value`` claims to be; a result that is not is refused, never passed on.
    """
    try:
        result = _convert(value, spec)
    except RecursionError:
        raise TypeMismatch("nested too deeply (or contains itself)") from None
    if not plain_exact(result):
        raise TypeMismatch(f"a {_type_name(value)} does not convert to plain {spec} values")
    return result


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _convert(value: Any, spec: TypeSpec) -> Any:
    value = _plain(value)
    if spec.kind == "union":
        return _coerce_union(value, spec)
    handler = _HANDLERS[spec.kind]
    return handler(value, spec)


def _coerce_union(value: Any, spec: TypeSpec) -> Any:
    # An exact type match wins over a conversion: 1 stays int in ``int | str``.
    for member in spec.args:
        if matches_exactly(value, member):
            return _convert(value, member)
    for member in spec.args:
        try:
            return _convert(value, member)
        except TypeMismatch:
            continue
    raise TypeMismatch(f"expected {spec}")


def matches_exactly(value: Any, spec: TypeSpec) -> bool:
    """Whether ``value`` already has the scalar or container type ``spec`` names."""
    if spec.kind == "literal":
        return any(type(value) is type(c) and value == c for c in spec.choices)
    if spec.kind == "path":
        return isinstance(value, str)
    if spec.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "none":
        return value is None
    exact: dict[str, type] = {"float": float, "bool": bool, "str": str, "list": list,
                              "dict": dict}
    return spec.kind in exact and isinstance(value, exact[spec.kind])


def _plain(value: Any, depth: int = 0) -> Any:
    """Exact built-in values, whatever the value claims to be.

    numpy scalars and arrays (real ones: their type must derive from numpy's own classes,
    not merely name numpy as its module) go through numpy's base ``tolist`` and are
    normalised again, since an object array holds arbitrary objects; tuples become lists;
    instances of subclasses of int, float, str, list, dict are copied into the exact type
    through the built-in's own methods. Types are read with ``type()``, never
    ``isinstance`` (a class may fake ``__class__``), and no method of the value's own class
    (``__repr__``, ``__str__``, ``__iter__``, ``tolist``...) is ever called, so what is
    validated, recorded and rendered is what the kernel gets.

    Raises:
        TypeMismatch: a numpy value nested in itself deeper than the limit allows.
    """
    kind = type(value)
    if kind in (bool, int, float, str, list, dict) or value is None:
        return value
    numpy_base = _numpy_base(kind)
    if numpy_base is not None:
        if depth >= _MAX_NUMPY_UNWRAP:
            raise TypeMismatch("a numpy value nested in itself")
        return _plain(numpy_base.tolist(value), depth + 1)
    if issubclass(kind, int) and not issubclass(kind, bool):
        return int.__add__(value, 0)
    if issubclass(kind, float):
        return float.__mul__(value, 1.0)  # keeps -0.0 and nan
    if issubclass(kind, str):
        return str.__str__(value)  # an exact copy for a subclass
    if issubclass(kind, tuple):
        return list(tuple.__iter__(value))
    if issubclass(kind, list):
        return list(list.__iter__(value))
    if issubclass(kind, dict):
        return dict(dict.items(value))
    return value


_MAX_NUMPY_UNWRAP = 8


def _numpy_base(kind: type) -> Any:
    """numpy's ``ndarray`` or ``generic`` when ``kind`` really derives from it, else None.

    numpy is looked up among the loaded modules: a real numpy value implies numpy is loaded,
    and the contract never imports it itself.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    for base in (numpy.ndarray, numpy.generic):
        if issubclass(kind, base):
            return base
    return None


def plain_exact(value: Any) -> bool:
    """Whether ``value`` is made of exact JSON-like built-ins only (keys exact ``str``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list:
            stack.extend(list.__iter__(item))
        elif kind is dict:
            for key, inner in dict.items(item):
                if type(key) is not str:
                    return False
                stack.append(inner)
        elif not (item is None or kind in (bool, int, float, str)):
            return False
    return True


def _to_int(value: Any, spec: TypeSpec) -> int:
    if isinstance(value, bool):
        raise TypeMismatch("expected int, got a bool")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 10)
        except ValueError:
            pass
    raise TypeMismatch("expected int")


def _to_float(value: Any, spec: TypeSpec) -> float:
    if isinstance(value, bool):
        raise TypeMismatch("expected float, got a bool")
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:
            raise TypeMismatch("out of range for a float") from None
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        text = {".nan": "nan", ".inf": "inf", "-.inf": "-inf", "+.inf": "inf"}.get(text, text)
        try:
            return float(text)
        except ValueError:
            pass
    raise TypeMismatch("expected float")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _to_bool(value: Any, spec: TypeSpec) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeMismatch("expected bool (true/false)")


def _to_str(value: Any, spec: TypeSpec) -> str:
    if isinstance(value, str):
        return value
    raise TypeMismatch("expected str")


def _to_none(value: Any, spec: TypeSpec) -> None:
    if value is None:
        return None
    raise TypeMismatch("expected None")


def _to_list(value: Any, spec: TypeSpec) -> list[Any]:
    if not isinstance(value, list):
        raise TypeMismatch(f"expected {spec}")
    item = spec.args[0] if spec.args else ANY
    return [_item(_convert, v, item, f"[{i}]") for i, v in enumerate(value)]


def _to_dict(value: Any, spec: TypeSpec) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeMismatch(f"expected {spec}")
    item = spec.args[0] if spec.args else ANY
    out: dict[str, Any] = {}
    for raw_key, v in value.items():
        key = _plain(raw_key)
        if not isinstance(key, str):
            raise TypeMismatch(f"dict keys must be str, got {type(key).__name__} {key!r}")
        out[key] = _item(_convert, v, item, f"[{key!r}]")
    return out


def _item(fn: Any, value: Any, spec: TypeSpec, where: str) -> Any:
    try:
        return fn(value, spec)
    except TypeMismatch as exc:
        raise TypeMismatch(f"item {where}: {exc}") from None


def _to_literal(value: Any, spec: TypeSpec) -> Any:
    for choice in spec.choices:  # the exact type: True is not 1, "1" is not 1
        if type(value) is type(choice) and value == choice:
            return choice
    for choice in spec.choices:  # a -p or YAML spelling of an int or bool choice
        if isinstance(value, str) and not isinstance(choice, str) and choice is not None:
            try:
                if coerce(value, TypeSpec(type(choice).__name__)) == choice:
                    return choice
            except TypeMismatch:
                continue
    hint = did_you_mean(str(value), [str(c) for c in spec.choices])
    raise TypeMismatch(f"expected one of {', '.join(repr(c) for c in spec.choices)}.{hint}")


def _to_path(value: Any, spec: TypeSpec) -> str:
    if isinstance(value, str):
        return value
    raise TypeMismatch("expected a path (a string)")


def _to_any(value: Any, spec: TypeSpec) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return _to_list(value, TypeSpec("list"))
    if isinstance(value, dict):
        return _to_dict(value, TypeSpec("dict"))
    raise TypeMismatch(
        f"a {_type_name(value)} is not a JSON-like value "
        "(use int, float, bool, str, None, list or dict)"
    )


_HANDLERS = {"int": _to_int, "float": _to_float, "bool": _to_bool, "str": _to_str,
             "none": _to_none, "list": _to_list, "dict": _to_dict, "any": _to_any,
             "literal": _to_literal, "path": _to_path}
