"""Keep each template and example notebook in step with its jupytext percent-format twin.

Every ``templates/*.ipynb`` and ``notebooks/*.ipynb`` is paired with ``X.py`` next to it
(``jupytext: formats: ipynb,py:percent`` in its metadata): JupyterLab with jupytext saves
both, and ruff lints the ``.py``. After editing one side outside JupyterLab:

    .venv/bin/python scripts/pairing.py --check   # name every pair out of step (exit 1)
    .venv/bin/python scripts/pairing.py --sync    # the newer side of each pair wins
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
PAIRED_DIRS = ("templates", "notebooks")
FORMATS = "ipynb,py:percent"
# the pairing each notebook carries; the filter keeps jupytext's version out of the twin
PAIRING = {"formats": FORMATS,
           "notebook_metadata_filter": "-jupytext.text_representation.jupytext_version"}
CHECK_TAG = "nbval-check-output"

Cell = tuple[str, str, tuple[str, ...]]


def paired_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks that must have a ``.py`` twin."""
    return sorted(p for folder in PAIRED_DIRS for p in (root / folder).glob("*.ipynb"))


def twin_of(notebook: Path) -> Path:
    return notebook.with_suffix(".py")


def cells(nb: Any) -> list[Cell]:
    """What the pair must agree on: each cell's type, source and tags."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in nb.cells]


def pair_problems(notebook: Path) -> list[str]:
    """Why ``notebook`` and its twin are out of step (empty when they agree)."""
    nb = nbformat.read(notebook, as_version=4)
    twin = twin_of(notebook)
    found = []
    formats = nb.metadata.get("jupytext", {}).get("formats")
    if formats != FORMATS:
        found.append(f"{notebook}: metadata jupytext.formats is {formats!r}, not {FORMATS!r}")
    if not twin.is_file():
        return [*found, f"{twin}: missing"]
    ours, theirs = cells(nb), cells(jupytext.read(twin))
    if len(ours) != len(theirs):
        found.append(f"{twin}: {len(theirs)} cells, {notebook.name} has {len(ours)}")
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            what = [name for name, x, y in zip(("type", "source", "tags"), a, b, strict=True)
                    if x != y]
            found.append(f"{twin}: cell {index} differs from {notebook.name} ({', '.join(what)})")
            break
    return found


def output_problems(notebook: Path) -> list[str]:
    """Code cells that store outputs nbval does not check (saved from a live session)."""
    nb = nbformat.read(notebook, as_version=4)
    return [f"{notebook}: cell {index} stores outputs but is not tagged {CHECK_TAG} "
            f"(clean them: .venv/bin/python scripts/checked_outputs.py {notebook})"
            for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.outputs
            and CHECK_TAG not in cell.metadata.get("tags", [])]


def problems(notebook: Path) -> list[str]:
    """Everything ``--check`` reports for one notebook."""
    return pair_problems(notebook) + output_problems(notebook)


def write_twin(notebook: Path) -> None:
    """Write ``notebook``'s ``.py`` twin from the notebook."""
    jupytext.write(nbformat.read(notebook, as_version=4), twin_of(notebook), fmt="py:percent")


def sync(notebook: Path) -> bool:
    """Bring the older side of a pair up to date (jupytext --sync); True when it did.

    A notebook not paired yet gets the pairing metadata and a fresh twin.
    """
    if not pair_problems(notebook):
        return False
    nb = nbformat.read(notebook, as_version=4)
    if nb.metadata.get("jupytext", {}).get("formats") != FORMATS:
        nb.metadata["jupytext"] = {**nb.metadata.get("jupytext", {}), **PAIRING}
        nbformat.write(nb, notebook)
    from jupytext.cli import jupytext as jupytext_cli

    jupytext_cli(["--sync", "--quiet", str(notebook)])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check or re-sync notebooks with their jupytext .py twins.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="report pairs out of step")
    action.add_argument("--sync", action="store_true", help="re-sync pairs out of step")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to look at (default: templates/ and notebooks/)")
    args = parser.parse_args(argv)
    notebooks = [p.with_suffix(".ipynb") for p in args.notebooks] or paired_notebooks()
    if args.sync:
        for notebook in notebooks:
            if sync(notebook):
                print(f"synced {notebook}")
    unpaired = [line for notebook in notebooks for line in pair_problems(notebook)]
    found = unpaired + [line for notebook in notebooks for line in output_problems(notebook)]
    for line in found:
        print(line, file=sys.stderr)
    if unpaired:
        print("Re-sync with: .venv/bin/python scripts/pairing.py --sync", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
