"""The project's ``nbops.yaml``: where it is and one section of it, read within the limits.

Sections are owned by their readers (``promotion``, ``secrets``, ``loop``); this module
only finds the file (see ``util.project``) and reads it once per call, so that every reader
fails the same way: a ConfigError naming the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..util.project import MARKER, find_root
from .limits import load_yaml


def config_file(start: Path | None = None) -> Path | None:
    """The project's ``nbops.yaml``, if the project has one."""
    root = find_root(start)
    return root / MARKER if root is not None and (root / MARKER).is_file() else None


def read_section(path: Path, name: str) -> object:
    """The ``name`` section of the config file ``path`` (None when it has none).

    Raises:
        ConfigError: the file cannot be read or is not valid YAML within the limits.
    """
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return data.get(name) if isinstance(data, dict) else None
