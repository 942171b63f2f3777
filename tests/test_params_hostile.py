"""Values that lie about what they are never reach a kernel as code (issue 22, class 1).

Every value crossing into a kernel is rebuilt from exact built-ins (recursively, keys
included), whatever it claims to be; the injected cell and the record see the same value.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbops.contract.params import render_cell_source, render_value, resolve
from nbops.contract.template import load_template
from nbops.errors import InputTooLarge, ParameterError

NOTEBOOKS = Path(__file__).parent / "notebooks"
ECHO = load_template(NOTEBOOKS / "echo.ipynb")
PAYLOAD = "x'); open('PWNED', 'w'); ('"
CALLED: list[str] = []


class Evil(str):
    """A str whose own methods would inject code and report that they ran."""

    def __str__(self) -> str:
        CALLED.append("__str__")
        return PAYLOAD

    def __repr__(self) -> str:
        CALLED.append("__repr__")
        return PAYLOAD

    def __iter__(self) -> Any:
        CALLED.append("__iter__")
        return iter(PAYLOAD)


class EvilInt(int):
    def __repr__(self) -> str:
        CALLED.append("__repr__")
        return "__import__('os').getcwd()"


class FakeNumpy:
    """Claims to come from numpy; its tolist returns a hostile value."""

    __module__ = "numpy"

    def tolist(self) -> Any:
        CALLED.append("tolist")
        return Evil("fake")


class ClaimsStr:
    """isinstance(x, str) is True through a faked __class__; type() tells the truth."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return str

    def __repr__(self) -> str:
        CALLED.append("__repr__")
        return PAYLOAD


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLED.clear()


def _object_array(*items: Any) -> Any:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _zero_d(item: Any) -> Any:
    array = np.empty((), dtype=object)
    array[()] = item
    return array


def _injected(name: str, value: Any) -> Any:
    """What the kernel would get: the injected cell parsed and evaluated as literals."""
    _, given = resolve(ECHO, overrides={name: value})
    source = render_cell_source(given)
    assert "PWNED" not in source and "__import__" not in source
    tree = ast.parse(source)
    assign = tree.body[0]
    assert isinstance(assign, ast.Assign)
    return ast.literal_eval(assign.value), given[name]


@pytest.mark.parametrize("name, value, expected", [
    ("s", _zero_d(Evil("abc")), "abc"),
    ("a", _object_array(Evil("abc"), 1), ["abc", 1]),
    ("a", _object_array(_object_array(Evil("deep"))), [["deep"]]),
    ("l", _object_array([Evil("in a list")]), [["in a list"]]),
    ("d", {Evil("key"): _object_array(Evil("v"))}, {"key": ["v"]}),
    ("a", {"k": (Evil("t"), EvilInt(7))}, {"k": ["t", 7]}),
    ("i", np.array(EvilInt(5), dtype=object), 5),
    ("s", Evil("plain subclass"), "plain subclass"),
], ids=["0d-object-array", "object-array", "nested-arrays", "list-in-array", "keys",
        "tuple-and-int-subclass", "int-subclass-array", "str-subclass"])
def test_hostile_values_are_rebuilt_from_exact_builtins(name: str, value: Any,
                                                        expected: Any) -> None:
    in_kernel, recorded = _injected(name, value)
    assert in_kernel == expected and recorded == expected
    assert CALLED == []  # not one of the value's own methods ran


def _exact(value: Any) -> bool:
    if isinstance(value, list):
        return type(value) is list and all(_exact(v) for v in value)
    if isinstance(value, dict):
        return type(value) is dict and all(type(k) is str and _exact(v)
                                           for k, v in value.items())
    return value is None or type(value) in (bool, int, float, str)


@pytest.mark.parametrize("value", [
    _object_array(Evil("a"), {Evil("b"): [Evil("c")]}), {"x": [_zero_d(EvilInt(2))]},
], ids=["array-of-dicts", "dict-of-arrays"])
def test_the_resolved_value_holds_exact_types_only(value: Any) -> None:
    resolved, _ = resolve(ECHO, overrides={"a": value})
    assert _exact(resolved["a"])


@pytest.mark.parametrize("value", [FakeNumpy(), ClaimsStr(), [FakeNumpy()], {"k": ClaimsStr()}],
                         ids=["fake-numpy", "fake-class", "in-list", "in-dict"])
def test_look_alikes_are_refused_without_calling_them(value: Any) -> None:
    for name in ("a", "s"):
        with pytest.raises(ParameterError, match=f"'{name}'"):
            resolve(ECHO, overrides={name: value})
    assert CALLED == []


def test_an_array_holding_itself_is_refused() -> None:
    array = np.empty(1, dtype=object)
    array[0] = array
    with pytest.raises((ParameterError, InputTooLarge)):
        resolve(ECHO, overrides={"a": array})


def test_a_huge_array_is_refused_before_it_expands() -> None:
    with pytest.raises(InputTooLarge, match="values"):
        resolve(ECHO, overrides={"a": np.zeros(200_000)})


@pytest.mark.parametrize("value", [Evil("x"), EvilInt(1), [Evil("x")], {Evil("k"): 1},
                                   (1, 2), ClaimsStr()],
                         ids=["str-subclass", "int-subclass", "in-list", "key", "tuple",
                              "fake-class"])
def test_render_value_refuses_anything_but_exact_builtins(value: Any) -> None:
    with pytest.raises(TypeError):
        render_value(value)
    assert CALLED == []


@pytest.mark.slow
def test_a_hostile_value_reaches_the_kernel_as_data(run_api: Any, tmp_path: Path) -> None:
    record = run_api("echo", {"s": _zero_d(Evil("abc")),
                              "a": _object_array(Evil("x"), {Evil("k"): [Evil("v")]})})
    assert record["status"] == "succeeded", record.get("error")
    echo = record["outputs"]["echo"]
    assert echo["s"] == "abc" and echo["a"] == ["x", {"k": ["v"]}]
    assert record["parameters"]["s"] == "abc"
    assert record["parameters"]["a"] == echo["a"]
    assert not (tmp_path / "PWNED").exists() and CALLED == []


# --- issue 22, class 9: limits escape through other spellings -----------------------------

BIG_SPELLINGS = {
    "hex": "0x" + "f" * 4000,
    "binary": "0b" + "1" * 15_000,
    "octal-0": "0" + "7" * 5000,
    "base-60": ":".join(["59"] * 3000),
    "decimal-underscores": "1_" * 4400 + "1",
}


@pytest.mark.parametrize("text", BIG_SPELLINGS.values(), ids=BIG_SPELLINGS.keys())
def test_big_integers_in_any_spelling_are_refused_from_a_file(text: str,
                                                              tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"i: {text}\na: [{text}]\n")
    with pytest.raises(InputTooLarge, match="4300"):
        resolve(ECHO, file=params)


@pytest.mark.parametrize("text", BIG_SPELLINGS.values(), ids=BIG_SPELLINGS.keys())
def test_big_integers_in_any_spelling_are_refused_from_p(text: str) -> None:
    for name in ("i", "a", "l"):
        value = f"[{text}]" if name == "l" else text
        with pytest.raises(InputTooLarge, match="4300"):
            resolve(ECHO, cli=[(name, value)])


@pytest.mark.parametrize("text, expected", [("0x1F", 31), ("0b101", 5), ("1:30", 90),
                                            ("017", 15), ("-0x10", -16)])
def test_small_integers_in_other_spellings_still_read_in_a_file(text: str, expected: int,
                                                               tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"a: {text}\n")
    resolved, _ = resolve(ECHO, file=params)
    assert resolved["a"] == expected


def test_file_values_get_the_same_value_checks_as_the_api(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    deep = "[" * 70 + "]" * 70
    params.write_text(f"a: {deep}\n")
    with pytest.raises(InputTooLarge, match="nested"):
        resolve(ECHO, file=params)


def test_big_base60_integer_is_refused_by_the_cli_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys
    params = tmp_path / "params.yaml"
    params.write_text("i: " + ":".join(["59"] * 300_000) + "\n")
    done = subprocess.run([sys.executable, "-m", "nbops", "run", str(NOTEBOOKS / "echo.ipynb"),
                           "-f", str(params), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "4300" in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/run.json"))
