"""Hostile parameter values: subclasses of built-ins and inputs that expand (no kernel for
most; one real kernel proves the record and the kernel agree)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import NOTEBOOKS, cli
from nbops.contract.limits import MAX_DEPTH, MAX_NODES, load_yaml
from nbops.contract.params import inject, render_cell_source, resolve
from nbops.contract.template import load_template
from nbops.errors import InputTooLarge, ParameterError

ECHO = load_template(NOTEBOOKS / "echo.ipynb")
PAYLOAD = "__import__('pathlib').Path('PWNED').touch()"


class EvilStr(str):
    def __repr__(self) -> str:
        return PAYLOAD

    def __str__(self) -> str:
        return PAYLOAD


class EvilInt(int):
    def __repr__(self) -> str:
        return PAYLOAD

    def __int__(self) -> int:
        return 666

    def __index__(self) -> int:
        return 666


class EvilFloat(float):
    def __repr__(self) -> str:
        return PAYLOAD

    def __float__(self) -> float:
        return 666.0


class EvilList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter([PAYLOAD])

    def __repr__(self) -> str:
        return PAYLOAD


class EvilDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [("k", PAYLOAD)]

    def __repr__(self) -> str:
        return PAYLOAD


def test_subclass_values_become_exact_builtins() -> None:
    resolved, given = resolve(ECHO, overrides={
        "s": EvilStr("plain"), "i": EvilInt(5), "f": EvilFloat(2.5),
        "l": EvilList([1, EvilStr("x")]), "d": EvilDict({EvilStr("k"): EvilInt(1)}),
        "a": EvilList(["y"])})
    assert resolved["s"] == "plain" and type(resolved["s"]) is str
    assert resolved["i"] == 5 and type(resolved["i"]) is int
    assert resolved["f"] == 2.5 and type(resolved["f"]) is float
    assert resolved["l"] == [1, "x"] and type(resolved["l"][1]) is str
    assert resolved["d"] == {"k": 1} and type(next(iter(resolved["d"]))) is str
    assert resolved["a"] == ["y"] and type(resolved["a"]) is list
    source = render_cell_source(given)
    assert "PWNED" not in source and "666" not in source
    assert "s = 'plain'" in source and "i = 5" in source and "d = {'k': 1}" in source


@pytest.mark.slow
def test_the_kernel_gets_what_the_record_says(run_api: Any, tmp_path: Path) -> None:
    record = run_api("echo", {"s": EvilStr("plain"), "i": EvilInt(5), "l": EvilList([1])})
    assert record["status"] == "succeeded", record["error"]
    echoed = record["outputs"]["echo"]
    assert echoed["s"] == record["parameters"]["s"] == "plain"
    assert echoed["i"] == record["parameters"]["i"] == 5
    assert echoed["l"] == record["parameters"]["l"] == [1]
    assert not (tmp_path / "PWNED").exists()


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    lines.append(f"i: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 700
    started = time.monotonic()
    with pytest.raises(InputTooLarge, match=f"more than {MAX_NODES:,} values"):
        load_yaml(text, "parameters file p.yaml")
    assert time.monotonic() - started < 5  # a guard against hanging, not a benchmark


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(InputTooLarge, match="refers to itself"):
        load_yaml("a: &a [1, *a]\n", "f")


def test_limits_on_depth_size_and_digits(tmp_path: Path) -> None:
    with pytest.raises(InputTooLarge, match=f"deeper than {MAX_DEPTH}"):
        load_yaml("l: " + "[" * 10_000 + "]" * 10_000 + "\n", "f")
    with pytest.raises(InputTooLarge, match="over the limit of 1,048,576 bytes"):
        load_yaml("s: " + "x" * (1 << 20) + "\n", "f")
    with pytest.raises(InputTooLarge, match="4300 digits"):
        load_yaml("i: " + "9" * 5000 + "\n", "f")
    nested: Any = []
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(InputTooLarge, match="nested deeper"):
        resolve(ECHO, overrides={"l": nested})
    with pytest.raises(InputTooLarge, match="4300 digits"):
        resolve(ECHO, overrides={"i": 10 ** 5000})
    with pytest.raises(ParameterError, match="out of range for a float"):
        resolve(ECHO, overrides={"f": 10 ** 400})
    inject(ECHO.notebook, {})  # nothing above left a half-built state behind


@pytest.mark.slow
def test_cli_answers_limits_with_exit_2(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs().replace("i: ", "l: "))
    deep = tmp_path / "deep.yaml"
    deep.write_text("l: " + "[" * 10_000 + "]" * 10_000 + "\n")
    runs = tmp_path / "runs"
    for args in (["-f", str(bomb)], ["-f", str(deep)], ["-p", "f", "1" + "0" * 400],
                 ["-p", "i", "9" * 5000]):
        done = cli("run", str(NOTEBOOKS / "echo.ipynb"), *args, "--runs-dir", str(runs),
                   cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (args[0], done.stderr[-500:])
        assert "Traceback" not in done.stderr and "nbops: error:" in done.stderr
        assert not runs.exists()


def test_import_of_limits_needs_no_kernel() -> None:
    done = subprocess.run([sys.executable, "-c", "import nbops.contract.limits"], check=True)
    assert done.returncode == 0
