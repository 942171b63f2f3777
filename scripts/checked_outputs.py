"""Keep the outputs of the cells nbval checks (first line ``# NBVAL_CHECK_OUTPUT``)."""
from __future__ import annotations

from pathlib import Path

import nbformat

CHECK = "# NBVAL_CHECK_OUTPUT"


def store_checked_outputs(path: Path) -> None:
    """Execute a notebook with its defaults and keep the outputs of the cells that nbval
    checks (first line ``# NBVAL_CHECK_OUTPUT``); every other cell stays clean."""
    import os
    import tempfile

    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NBOPS_RUNS_DIR"] = str(Path(tmp) / "runs")
        executed = nbformat.from_dict(nb)
        NotebookClient(executed, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell, done in zip(nb.cells, executed.cells, strict=True):
        if cell.cell_type == "code" and cell.source.startswith(CHECK):
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
    nbformat.write(nb, path)
