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
CONFIG = """\
# nbops project: this file marks the project root. From anywhere inside it, runs go to
# ./runs here and ./templates shadows the templates shipped with nbops.
name: {name}

# Promotion policy (nbops models promote): what a version needs before it takes an alias.
# promotion:
#   champion:
#     evidence: [evaluate_pass, ab_win]   # any one of these
#     approvals: 1                        # people other than the proposer
"""
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


def config_text(name: str) -> str:
    """The ``nbops.yaml`` that ``nbops init`` writes for a project called ``name`` (the
    repository's own root marker is this text for ``nbops``; a test compares them)."""
    return CONFIG.format(name=name)
