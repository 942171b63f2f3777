"""The project an nbops command or notebook belongs to: one home for runs and templates.

The project root is the nearest folder, from the working directory upwards, holding
``nbops.yaml`` (what ``nbops init`` writes) or a ``pyproject.toml`` with a ``[tool.nbops]``
table. Inside a project, runs go to ``<root>/runs`` and ``<root>/templates`` shadows the
shipped templates wherever the command or notebook runs from; ``--runs-dir`` and
``NBOPS_RUNS_DIR`` still come first. Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "nbops.yaml"
_TOOL_TABLE = re.compile(r"^\s*\[tool\.nbops(\.[^\]]+)?\]\s*$", re.MULTILINE)


def find_root(start: Path | None = None) -> Path | None:
    """The project root above ``start`` (default: the working directory), or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if _TOOL_TABLE.search(pyproject.read_text(encoding="utf-8")):
                    return folder
            except (OSError, UnicodeDecodeError):
                continue
    return None
