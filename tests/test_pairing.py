"""Templates and example notebooks stay in step with their jupytext percent-format twins."""
from __future__ import annotations

import importlib.util
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

from conftest import ROOT, jupyter_server


def _load_pairing() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pairing", ROOT / "scripts" / "pairing.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pairing = _load_pairing()
PAIRED = pairing.paired_notebooks()
EDIT = 'print("edited in JupyterLab")'


def _copy_pair(name: str, folder: Path) -> Path:
    for suffix in (".ipynb", ".py"):  # twin last, as a checkout would leave them
        shutil.copy(ROOT / "templates" / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.ipynb"


def test_templates_and_examples_are_all_paired() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAIRED}
    assert {"templates/train.ipynb", "templates/register.ipynb",
            "notebooks/quickstart.ipynb", "notebooks/run_explorer.ipynb"} <= names


@pytest.mark.parametrize("notebook", PAIRED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pair_is_in_step(notebook: Path) -> None:
    assert pairing.problems(notebook) == []


@pytest.mark.parametrize("notebook", PAIRED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_checked_cells_are_tagged_not_commented(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    assert not [c.id for c in nb.cells if "NBVAL_CHECK_OUTPUT" in c.source]
    for cell in nb.cells:
        if pairing.CHECK_TAG in cell.metadata.get("tags", []):
            assert cell.cell_type == "code" and cell.outputs, cell.id


def test_a_twin_edited_alone_is_reported_and_synced(tmp_path: Path) -> None:
    notebook = _copy_pair("train", tmp_path)
    twin = pairing.twin_of(notebook)
    before = nbformat.read(notebook, as_version=4)
    assert pairing.pair_problems(notebook) == []

    twin.write_text(twin.read_text().replace("seed: int = 0  # random seed",
                                             "seed: int = 7  # random seed"))
    assert pairing.pair_problems(notebook) == [
        f"{twin}: cell 1 differs from train.ipynb (source)"]
    assert pairing.main(["--check", str(notebook)]) == 1

    assert pairing.sync(notebook)
    after = nbformat.read(notebook, as_version=4)
    assert "seed: int = 7" in after.cells[1].source
    assert [c.id for c in after.cells] == [c.id for c in before.cells]
    assert [c.get("outputs") for c in after.cells] == [c.get("outputs") for c in before.cells]
    assert pairing.main(["--check", str(notebook)]) == 0

    twin.unlink()
    assert pairing.pair_problems(notebook) == [f"{twin}: missing"]
    assert pairing.sync(notebook) and twin.is_file()
    assert pairing.problems(notebook) == []


def test_outputs_of_unchecked_cells_are_reported(tmp_path: Path) -> None:
    notebook = _copy_pair("train", tmp_path)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="left over\n")]
    nbformat.write(nb, notebook)
    assert pairing.pair_problems(notebook) == []
    [problem] = pairing.output_problems(notebook)
    assert "cell 2 stores outputs" in problem


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``jupyter server`` from this environment, serving a copy of the train pair."""
    served = tmp_path / "served"
    served.mkdir()
    _copy_pair("train", served)
    with jupyter_server("jupyter_server", tmp_path, served) as server:
        yield {**server, "dir": served}


def _contents(jupyter: dict[str, Any], name: str, body: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{jupyter['base']}/api/contents/{name}", method="PUT" if body else "GET",
        data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"token {jupyter['token']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.mark.slow
def test_an_edit_saved_through_jupyter_reaches_the_twin(jupyter: dict[str, Any]) -> None:
    notebook = jupyter["dir"] / "train.ipynb"
    before = nbformat.read(notebook, as_version=4)
    model = _contents(jupyter, "train.ipynb")
    cells = model["content"]["cells"]
    cells[4]["source"] = f"{EDIT}\n{cells[4]['source']}"
    _contents(jupyter, "train.ipynb", {"type": "notebook", "format": "json",
                                       "content": model["content"]})

    assert EDIT in pairing.twin_of(notebook).read_text()
    after = nbformat.read(notebook, as_version=4)
    assert after.cells[4].source.startswith(EDIT)
    assert pairing.problems(notebook) == []
    assert [(c.id, c.metadata) for c in after.cells] == [(c.id, c.metadata) for c in before.cells]
    assert after.cells[3].outputs == before.cells[3].outputs  # the checked output stays
    assert after.metadata == before.metadata
