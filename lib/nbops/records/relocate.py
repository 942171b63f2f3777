"""Paths into a runs folder that still work after the project folder is copied or moved.

Run records keep what notebooks produced, and notebooks produce absolute paths (a model
folder, a split written under ``runs/<id>/artifacts``). A path whose segments include the
id of a run that exists in the current runs folder is *rebased* onto that folder when it is
used (:func:`rebase`), so a copied project reads its own files and never the original's;
for cache keys, such paths are written *portably* (:func:`portable`: ``<runs>/<id>/...``),
so a copy finds the same cached stages.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

RUN_ID = re.compile(r"^\d{8}T\d{6}-[\w.-]+-[0-9a-f]{6}$")


def _split(value: str) -> tuple[tuple[str, ...], int] | None:
    """The path's parts and the index of its run-id segment, for absolute paths."""
    if not value.startswith("/") or len(value) > 4096 or "\x00" in value:
        return None
    parts = PurePosixPath(value).parts
    for i in range(len(parts) - 1, 0, -1):
        if RUN_ID.match(parts[i]):
            return parts, i
    return None


def rebase(value: Any, runs_dir: Path) -> Any:
    """``value`` with every absolute path into a run of ``runs_dir`` pointing into
    ``runs_dir`` (lists and dicts walked; everything else unchanged)."""
    if isinstance(value, list):
        return [rebase(v, runs_dir) for v in value]
    if isinstance(value, dict):
        return {k: rebase(v, runs_dir) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    found = _split(value)
    if found is None:
        return value
    parts, i = found
    if not (runs_dir / parts[i]).is_dir():
        return value
    return str(runs_dir.joinpath(*parts[i:]))


def portable(value: Any) -> Any:
    """``value`` with absolute paths into any run written as ``<runs>/<id>/...``."""
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    found = _split(value)
    if found is None:
        return value
    parts, i = found
    return "<runs>/" + "/".join(parts[i:])
