"""What a run ran on: interpreter, platform, installed packages, git commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..records.types import Environment, GitState


def capture(cwd: Path | None = None) -> Environment:
    """The environment block of a run record."""
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": installed_packages(),
        "git": git_state(cwd or Path.cwd()),
    }


def installed_packages() -> dict[str, str]:
    """Every installed distribution, name -> version (sorted by name)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = _from_folder_name(dist)
        if name is None:  # no standard folder name: parse METADATA (slower)
            name, version = dist.metadata["Name"], dist.version
        if name:
            found.setdefault(str(name).lower().replace("_", "-"), str(version))
    return dict(sorted(found.items()))


def _from_folder_name(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """``name-version.dist-info`` gives both without reading METADATA (fast)."""
    folder = getattr(dist, "_path", None)
    if folder is None or not str(folder).endswith(".dist-info"):
        return None, None
    stem = Path(str(folder)).name[: -len(".dist-info")]
    name, sep, version = stem.partition("-")
    return (name, version) if sep and version else (None, None)


def git_state(cwd: Path) -> GitState:
    """``{"commit": sha | None, "dirty": bool | None}`` for the repository around ``cwd``."""
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
