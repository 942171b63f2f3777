"""Limits on what a parameter source may hold, enforced while reading and converting.

Parameters are small settings; data belongs in files that parameters name. Every source
(``-f`` file, ``-p`` value, the Python API's mapping, ``pipeline.yaml``) is bounded:

- ``MAX_TEXT_BYTES``: a parameters or pipeline file, or one ``-p`` value (1 MiB);
- ``MAX_DEPTH``: lists and mappings nested at most 64 levels deep;
- ``MAX_NODES``: at most 100,000 values in all, counted after YAML aliases are expanded
  (a 500-byte file of nested aliases would otherwise expand to billions);
- ``MAX_INT_DIGITS``: integers of at most 4,300 decimal digits (Python's own limit for
  converting text).

A source over a limit is refused with exit 2 and a message naming the limit; YAML is read
with the C loader where libyaml is available.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ..errors import InputTooLarge

MAX_TEXT_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_INT_DIGITS = 4300
_MAX_INT_BITS = int(MAX_INT_DIGITS * 3.3219280948873626)  # log2(10)
_HINT = "Put large inputs in a file and pass its path as a parameter."

SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_text(text: str, source: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise InputTooLarge(f"{source} is {size:,} bytes, over the limit of "
                            f"{MAX_TEXT_BYTES:,} bytes. {_HINT}")


def load_yaml(text: str, source: str) -> Any:
    """YAML (safe subset) within the limits; aliases are counted as expanded.

    Raises:
        InputTooLarge: over a limit (named in the message).
        yaml.YAMLError: not valid YAML.
    """
    check_text(text, source)
    loader = SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except (RecursionError, yaml.YAMLError) as exc:
            if isinstance(exc, yaml.YAMLError) and "nesting depth" not in str(exc):
                raise  # a plain syntax error
            raise InputTooLarge(f"{source} is nested deeper than {MAX_DEPTH} levels. "
                                f"{_HINT}") from None
        if node is None:
            return None
        _check_node(node, source)
        try:
            return loader.construct_document(node)
        except ValueError as exc:  # e.g. an integer past Python's digit limit
            raise InputTooLarge(f"{source}: {exc}. Integers may have at most "
                                f"{MAX_INT_DIGITS} digits. {_HINT}") from None
    finally:
        loader.dispose()


def _check_node(root: yaml.Node, source: str) -> None:
    """Expanded size and depth of a composed YAML graph (aliases are shared nodes)."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            active.discard(key)
            if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
                _check_int_text(node.value, source)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > MAX_NODES:
                raise InputTooLarge(f"{source} expands to more than {MAX_NODES:,} values "
                                    f"(YAML aliases counted as expanded). {_HINT}")
            if depths[key] > MAX_DEPTH:
                raise InputTooLarge(f"{source} is nested deeper than {MAX_DEPTH} levels. "
                                    f"{_HINT}")
            continue
        if key in sizes:
            continue
        if key in active:
            raise InputTooLarge(f"{source} refers to itself through a YAML alias; "
                                "parameters must be finite")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


_INT_TAG = "tag:yaml.org,2002:int"
_BITS_PER_DIGIT = {2: 1.0, 8: 3.0, 10: 3.3219280948873626, 16: 4.0, 60: 5.906890595608519}


def _check_int_text(text: str, source: str) -> None:
    """Bound an integer's size from its text, before YAML converts it (YAML 1.1 reads
    ``0x``, ``0b``, ``0o``/``0``-prefixed and base-60 ``1:30:00`` integers too; a 900 KB
    base-60 integer took 74 s to convert)."""
    body = text.strip().lstrip("+-").replace("_", "")
    lower = body.lower()
    if ":" in body:
        base, digits = 60, body.count(":") + 1
    elif lower.startswith(("0x", "0b", "0o")):
        base, digits = {"x": 16, "b": 2, "o": 8}[lower[1]], len(body) - 2
    elif len(body) > 1 and body.startswith("0"):
        base, digits = 8, len(body) - 1
    else:
        base, digits = 10, len(body)
    if digits * _BITS_PER_DIGIT[base] > _MAX_INT_BITS + _BITS_PER_DIGIT[base]:
        raise InputTooLarge(f"{source} holds an integer of more than {MAX_INT_DIGITS} digits "
                            f"(counted in base 10; written in base {base}). {_HINT}")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_value(value: Any, source: str) -> None:
    """The same limits for a value given in Python, walked by its real type (``type()``,
    which a class cannot fake) without calling any of its own methods; a real numpy array
    counts its elements before numpy's base ``tolist`` expands it."""
    numpy = sys.modules.get("numpy")
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    text = 0
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        nodes += 1
        if nodes > MAX_NODES:
            raise InputTooLarge(f"{source} holds more than {MAX_NODES:,} values. {_HINT}")
        if depth > MAX_DEPTH:
            raise InputTooLarge(f"{source} is nested deeper than {MAX_DEPTH} levels. {_HINT}")
        if issubclass(kind, str):
            text += str.__len__(item)
            if text > MAX_TEXT_BYTES:
                raise InputTooLarge(f"{source} holds more than {MAX_TEXT_BYTES:,} characters "
                                    f"of text. {_HINT}")
        elif issubclass(kind, int) and not issubclass(kind, bool):
            if int.bit_length(item) > _MAX_INT_BITS:
                raise InputTooLarge(f"{source} holds an integer of more than "
                                    f"{MAX_INT_DIGITS} digits. {_HINT}")
        elif issubclass(kind, list):
            stack.extend((v, depth + 1) for v in list.__iter__(item))
        elif issubclass(kind, tuple):
            stack.extend((v, depth + 1) for v in tuple.__iter__(item))
        elif issubclass(kind, dict):
            for key, v in dict.items(item):
                stack.extend(((key, depth + 1), (v, depth + 1)))
        elif numpy is not None and issubclass(kind, numpy.ndarray):
            if numpy.ndarray.__dict__["size"].__get__(item) > MAX_NODES:
                raise InputTooLarge(f"{source} holds more than {MAX_NODES:,} values. {_HINT}")
            stack.append((numpy.ndarray.tolist(item), depth + 1))
