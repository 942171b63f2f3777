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
    ("import os", "only imports from typing"),
    ("x = 1\nos.system('x')", "only 'name: type = literal"),
    ("x: Any = None", "add 'from typing import Any'"),
    ("x: Optional[int] = None", "add 'from typing import Optional'"),
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


def test_typing_imports_are_allowed_in_the_parameters_cell() -> None:
    params = parse_parameters_cell("from typing import Any, Optional\n"
                                   "x: Any = None  # anything\n"
                                   "y: Optional[int] = None\n")
    assert str(params["x"].type) == "Any" and params["x"].help == "anything"
    assert str(params["y"].type) == "int | None"
    future = parse_parameters_cell("from __future__ import annotations\nx: Any = None\n")
    assert str(future["x"].type) == "Any"


def _mutated(tmp_path: Path, nb, change) -> Path:  # type: ignore[no-untyped-def]
    import json

    data = json.loads(nb("ok").read_text())
    data = change(data) or data
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d["cells"][1].update(cell_type="weird"), "fails the notebook schema at cells/1"),
    (lambda d: d["cells"][1].update(source=5), "fails the notebook schema at cells/1/source"),
    (lambda d: d["metadata"].update(nbops=["train"]), "'nbops' must be a mapping"),
    (lambda d: d["metadata"].update(nbops={"stage": 3}), "nbops.stage must be a string"),
    (lambda d: [1, 2], "is not a notebook"),
    (lambda d: d.pop("cells"), "is not a notebook"),
])
def test_invalid_notebooks_are_rejected(tmp_path: Path, nb, change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TemplateError, match=message):
        load_template(_mutated(tmp_path, nb, change))


def test_kernel_name_comes_from_the_kernelspec(tmp_path: Path, nb) -> None:  # type: ignore[no-untyped-def]
    assert load_template(nb("ok")).kernel_name == "python3"
    other = _mutated(tmp_path, nb, lambda d: d["metadata"].update(
        kernelspec={"name": "julia-1.9", "display_name": "Julia", "language": "julia"}))
    assert load_template(other).kernel_name == "julia-1.9"
    bare = _mutated(tmp_path, nb, lambda d: d["metadata"].pop("kernelspec") and None)
    assert load_template(bare).kernel_name == "python3"


@pytest.mark.parametrize("nbops_meta, message", [
    ({"preload": 5}, "nbops.preload must be a list of module names"),
    ({"preload": "pandas"}, "nbops.preload must be a list of module names"),
    ({"preload": ["pandas", 3]}, "nbops.preload must be a list of module names"),
    ({"preload": ["os; rm -rf /"]}, "nbops.preload must be a list of module names"),
    ({"preload": [""]}, "nbops.preload must be a list of module names"),
    ({"outputs": ["../x"]}, "nbops.outputs has '../x', not an output name"),
    ({"outputs": ["a b"]}, "nbops.outputs has 'a b', not an output name"),
    ({"outputs": [""]}, "nbops.outputs has '', not an output name"),
    ({"outputs": ["ok", "x/y"]}, "nbops.outputs has 'x/y'"),
    ({"stage": "\x1b[31mtrain"}, r"nbops.stage '\\x1b\[31mtrain' holds control or format "
                                 r"characters \(U\+001B\)"),
    ({"stage": "train\u202egnp.exe"}, r"holds control or format characters \(U\+202E\)"),
    ({"stage": "tr\rain"}, r"holds control or format characters \(U\+000D\)"),
    ({"stage": "a\u200bb"}, r"\(U\+200B\)"),
    ({"stage": "  "}, "nbops.stage '  ' is empty"),
])
def test_template_metadata_is_checked_before_any_kernel(tmp_path: Path, nb, nbops_meta,  # type: ignore[no-untyped-def]
                                                        message: str) -> None:
    bad = _mutated(tmp_path, nb, lambda d: d["metadata"]["nbops"].update(nbops_meta))
    with pytest.raises(TemplateError, match=message):
        load_template(bad)


def test_plain_metadata_still_loads(tmp_path: Path, nb) -> None:  # type: ignore[no-untyped-def]
    good = _mutated(tmp_path, nb, lambda d: d["metadata"]["nbops"].update(
        stage="évaluer-2", outputs=["model_path", "_x.y-z"], preload=["sklearn.linear_model"]))
    tpl = load_template(good)
    assert tpl.stage == "évaluer-2" and tpl.outputs == ["model_path", "_x.y-z"]


@pytest.mark.parametrize("source, message", [
    ("from __future__ import braces\nx: int = 1", "not a chance"),
    ("x: int = 1\nfrom __future__ import annotations", "must occur at the beginning"),
    ("from __future__ import no_such_feature\nx: int = 1", "not defined"),
])
def test_a_parameters_cell_must_compile(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=f"not valid Python: .*{message}"):
        parse_parameters_cell(source)


def test_the_cli_refuses_bad_metadata_with_exit_2_and_no_run(tmp_path: Path, nb) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli

    for i, meta in enumerate([{"preload": 5}, {"stage": "x\u202ey"}]):
        bad = _mutated(tmp_path, nb, lambda d, m=meta: d["metadata"]["nbops"].update(m))
        runs = tmp_path / f"runs{i}"
        done = cli("run", str(bad), "--runs-dir", str(runs), "--tracking-uri", "none",
                   timeout=120)
        assert done.returncode == 2, done.stderr
        assert "nbops." in done.stderr and "Traceback" not in done.stderr
        assert "\u202e" not in done.stderr
        assert not runs.exists() or not any(runs.iterdir())  # no run, no kernel
