"""The template contract: parameters cell parsing, metadata, discovery."""
from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest

from nbops.contract.template import load_template, parse_parameters_cell, resolve
from nbops.errors import TemplateError


def test_parses_types_defaults_and_help() -> None:
    params = parse_parameters_cell(
        "n_rows: int = 10_000  # rows to generate\n"
        "rate: float = float('nan')  # a rate\n"
        "name: str | None = None\n"
        "tags: list[str] = ['a']  # labels\n"
        "opts: dict[str, float] = {'x': 1}\n"
        "flag = True  # inferred bool\n")
    assert params["n_rows"].default == 10_000 and str(params["n_rows"].type) == "int"
    assert params["n_rows"].help == "rows to generate"
    assert math.isnan(params["rate"].default)
    assert str(params["name"].type) == "str | None"
    assert str(params["tags"].type) == "list[str]" and params["tags"].help == "labels"
    assert params["opts"].default == {"x": 1.0} and isinstance(params["opts"].default["x"], float)
    assert str(params["flag"].type) == "bool" and params["flag"].help == "inferred bool"


@pytest.mark.parametrize("source, message", [
    ("x: int = 'a'", "does not match its type"),
    ("x: int = len('a')", "must be a literal"),
    ("x: set = 1", "unsupported annotation"),
    ("import os", "only 'name: type = literal"),
    ("x: int", "needs a default"),
    ("x: int = (", "not valid Python"),
])
def test_rejects_bad_parameters_cells(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_parameters_cell(source)


def test_two_parameters_cells_rejected(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    for _ in range(2):
        nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}))
    nbformat.write(nb, tmp_path / "two.ipynb")
    with pytest.raises(TemplateError, match="2 cells tagged 'parameters'"):
        load_template(tmp_path / "two.ipynb")


def test_metadata_and_hash(nb) -> None:  # type: ignore[no-untyped-def]
    tpl = load_template(nb("ok"))
    assert tpl.stage == "ok" and tpl.outputs == ["y"] and len(tpl.sha256) == 64


def test_unknown_template_suggests_closest(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as err:
        resolve("sampel", project_dir=tmp_path)
    assert "Did you mean 'sample'" in str(err.value) and "nbops templates" in str(err.value)


def test_project_templates_shadow_shipped(tmp_path: Path, nb) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "sample.ipynb").write_bytes(nb("ok").read_bytes())
    assert resolve("sample", project_dir=tmp_path).stage == "ok"
