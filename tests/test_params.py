"""Parameter parsing, validation, precedence and rendering (no kernel)."""
from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbops.contract.params import inject, parse_cli_value, render_value, resolve
from nbops.contract.template import load_template
from nbops.contract.types import TypeSpec
from nbops.errors import ConfigError, ParameterError

NOTEBOOKS = Path(__file__).parent / "notebooks"
ECHO = load_template(NOTEBOOKS / "echo.ipynb")


def test_cli_values_are_parsed_then_converted() -> None:
    resolved, given = resolve(ECHO, cli=[("i", "010"), ("f", "nan"), ("b", "true"),
                                         ("s", "007"), ("n", "null"), ("l", "[1, two]"),
                                         ("d", "{k: 1.5}")])
    assert resolved["i"] == 10 and type(resolved["i"]) is int
    assert math.isnan(resolved["f"])
    assert resolved["b"] is True
    assert resolved["s"] == "007"
    assert resolved["n"] is None
    assert resolved["l"] == [1, "two"] and resolved["d"] == {"k": 1.5}
    assert set(given) == {"i", "f", "b", "s", "n", "l", "d"}


def test_precedence_defaults_file_cli_api(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("i: 5\ns: from-file\nf: 2.5\n")
    resolved, _ = resolve(ECHO, file=file, cli=[("s", "from-cli"), ("i", "6")],
                          overrides={"i": 7})
    assert resolved["f"] == 2.5 and resolved["s"] == "from-cli" and resolved["i"] == 7
    assert resolved["b"] is False  # untouched default


def test_unknown_name_lists_valid_and_closest() -> None:
    with pytest.raises(ParameterError) as err:
        resolve(ECHO, cli=[("ii", "1")])
    text = str(err.value)
    assert "unknown parameter 'ii'" in text and "Did you mean 'i'" in text
    assert "Valid parameters: i, f, b, s, n, l, d, a" in text


def test_bad_value_names_parameter_type_and_value() -> None:
    with pytest.raises(ParameterError) as err:
        resolve(ECHO, cli=[("i", "ten")])
    assert "'i'" in str(err.value) and "expects int" in str(err.value) and "'ten'" in str(err.value)


def test_hostile_name_is_rejected_before_anything() -> None:
    evil = "x'); import os; os.system('touch PWNED'); ('"
    with pytest.raises(ParameterError, match="unknown parameter"):
        resolve(ECHO, cli=[(evil, "1")])


@pytest.mark.parametrize("value, expected", [
    (np.False_, False), (np.int64(3), 3), (np.float32(0.5), 0.5), ((1, 2), [1, 2]),
    (np.array([1, 2]), [1, 2]),
])
def test_numpy_scalars_and_tuples_are_converted(value: Any, expected: Any) -> None:
    resolved, _ = resolve(ECHO, overrides={"a": value})
    assert resolved["a"] == expected and type(resolved["a"]) is type(expected)


def test_numpy_false_stays_false_for_bool() -> None:
    resolved, _ = resolve(ECHO, overrides={"b": np.False_})
    assert resolved["b"] is False


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", 1 + 2j])
def test_other_objects_are_rejected(value: Any) -> None:
    with pytest.raises(ParameterError, match="'a'"):
        resolve(ECHO, overrides={"a": value})


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ParameterError):
        resolve(ECHO, overrides={"i": True})


def test_params_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(ECHO, file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(ECHO, file=bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("a: !!python/object/apply:os.system ['touch PWNED']\n")
    with pytest.raises(ConfigError):
        resolve(ECHO, file=unsafe)


def test_injected_cell_replaced_not_duplicated() -> None:
    once = inject(ECHO.notebook, {"i": 1})
    twice = inject(once, {"i": 2})
    injected = [c for c in twice.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "i = 2" in injected[0].source
    position = [i for i, c in enumerate(twice.cells)
                if "parameters" in c.metadata.get("tags", [])][0]
    assert twice.cells[position + 1] is injected[0]


def test_cli_value_for_optional_str() -> None:
    spec = TypeSpec("union", (TypeSpec("str"), TypeSpec("none")))
    assert parse_cli_value("null", spec) is None
    assert parse_cli_value("true", spec) == "true"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_render_round_trips_exactly(value: Any) -> None:
    source = render_value(value)
    ast.parse(source, mode="eval")  # a single expression: nothing else can run
    assert same(eval(source, {"__builtins__": {"float": float}}), value)


def _template(tmp_path: Path, cell: str) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["nbops"] = {"stage": "t"}
    nb.cells = [nbformat.v4.new_code_cell(cell, metadata={"tags": ["parameters"]})]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    return load_template(path)


CHOICES = ('from pathlib import Path\nfrom typing import Literal\n\n'
           'model: Literal["logreg", "random_forest"] = "logreg"  # which model\n'
           'level: Literal[1, 2, 3] = 1  # a numbered choice\n'
           'data: Path = ""  # an input file ("" : none)\n'
           'version: int | None = None  # optional\n'
           'thresholds: dict[str, float] = {}  # bounds\n')


def test_a_wrong_choice_names_the_valid_ones(tmp_path: Path) -> None:
    template = _template(tmp_path, CHOICES)
    assert str(template.parameters["model"].type) == "Literal['logreg', 'random_forest']"
    resolved, _ = resolve(template, cli=[("model", "random_forest"), ("level", "2")])
    assert resolved["model"] == "random_forest" and resolved["level"] == 2
    with pytest.raises(ParameterError) as info:
        resolve(template, cli=[("model", "random_forrest")])
    message = str(info.value)
    assert "expected one of 'logreg', 'random_forest'" in message
    assert "Did you mean 'random_forest'" in message
    assert "-p model logreg or -p model random_forest" in message
    with pytest.raises(ParameterError, match="one of 1, 2, 3"):
        resolve(template, overrides={"level": True})  # a bool is not the choice 1


def test_a_missing_input_file_is_named_before_a_kernel_starts(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    template = _template(tmp_path, CHOICES)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("a\n1\n")
    assert resolve(template, cli=[("data", "train.csv")])[0]["data"] == "train.csv"
    assert resolve(template)[0]["data"] == ""  # "" means none
    with pytest.raises(ParameterError) as info:
        resolve(template, cli=[("data", "trian.csv")])
    assert "'trian.csv', which does not exist" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_none_is_written_as_none_and_type_errors_show_working_syntax(tmp_path: Path) -> None:
    template = _template(tmp_path, CHOICES)
    for word in ("None", "null", "~"):
        assert resolve(template, cli=[("version", word)])[0]["version"] is None
    with pytest.raises(ParameterError) as info:
        resolve(template, cli=[("thresholds", "accuracy=0.9")])
    assert '-p thresholds "{accuracy: 0.9}"' in str(info.value)
    with pytest.raises(ParameterError) as info:
        resolve(template, cli=[("version", "latest")])
    assert "-p version 5 or -p version None" in str(info.value)


def test_literal_and_path_need_their_imports_in_the_cell(tmp_path: Path) -> None:
    from nbops.errors import TemplateError

    with pytest.raises(TemplateError, match="from typing import Literal"):
        _template(tmp_path, 'model: Literal["a", "b"] = "a"  # x\n')
    with pytest.raises(TemplateError, match="from pathlib import Path"):
        _template(tmp_path, 'data: Path = ""  # x\n')
    with pytest.raises(TemplateError, match="Literal takes str, int, bool or None"):
        _template(tmp_path, 'from typing import Literal\nx: Literal[1.5] = 1.5  # x\n')
