"""Refresh the outputs nbval checks: those of the cells tagged ``nbval-check-output``.

    .venv/bin/python scripts/checked_outputs.py templates/train.ipynb [NOTEBOOK ...]

Each notebook is first synced with its ``.py`` twin (the newer side wins), then executed
with its defaults in its own folder, recording into a throw-away runs folder. The tagged
cells keep their new outputs, every other cell is left clean, and the twin is rewritten.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from pairing import CHECK_TAG, sync, write_twin


def store_checked_outputs(path: Path, timeout: int = 600) -> int:
    """Execute ``path`` with its defaults and keep only the checked outputs.

    Returns:
        How many cells are tagged ``nbval-check-output``.
    """
    sync(path)
    nb = nbformat.read(path, as_version=4)
    executed = nbformat.from_dict(nb)
    with tempfile.TemporaryDirectory(prefix="nbops-outputs-") as tmp:
        env = {**os.environ, "NBOPS_RUNS_DIR": str(Path(tmp) / "runs")}
        client = NotebookClient(executed, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute(env=env)
    checked = 0
    for cell, done in zip(nb.cells, executed.cells, strict=True):
        if cell.cell_type != "code":
            continue
        if CHECK_TAG in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
            checked += 1
        else:
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
    write_twin(path)
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Refresh the outputs of cells tagged nbval-check-output.")
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to refresh")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        checked = store_checked_outputs(path.with_suffix(".ipynb"), args.timeout)
        print(f"{path}: {checked} checked cell(s) refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
