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
from collections.abc import Callable
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


def _map_paths(value: Any, fn: Callable[[str, tuple[str, ...], int], str]) -> Any:
    """``value`` with ``fn(path, parts, i)`` applied to every absolute path into a run (at
    any depth of lists and dicts); everything else unchanged."""
    if isinstance(value, list):
        return [_map_paths(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_paths(v, fn) for k, v in value.items()}
    found = _split(value) if isinstance(value, str) else None
    return value if found is None else fn(value, *found)


def rebase(value: Any, runs_dir: Path) -> Any:
    """``value`` with every absolute path into a run of ``runs_dir`` pointing into
    ``runs_dir``."""
    def onto(path: str, parts: tuple[str, ...], i: int) -> str:
        return str(runs_dir.joinpath(*parts[i:])) if (runs_dir / parts[i]).is_dir() else path

    return _map_paths(value, onto)


def portable(value: Any) -> Any:
    """``value`` with absolute paths into any run written as ``<runs>/<id>/...``."""
    return _map_paths(value, lambda path, parts, i: "<runs>/" + "/".join(parts[i:]))
