"""Small file utilities: crash-safe writes, hashing, strict JSON with non-finite floats.

Every file nbops writes goes through :func:`atomic_write_bytes`: a temp file in the same
folder, fsync, rename, fsync of the folder. A kill at any instant leaves the old or the
new file, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

_FLOAT_TAG = "$float"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def encode_json(value: Any) -> Any:
    """JSON-safe form: non-finite floats become ``{"$float": "nan" | "inf" | "-inf"}``."""
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {str(k): encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json(v) for v in value]
    return value


def decode_json(value: Any) -> Any:
    """Inverse of :func:`encode_json`."""
    if isinstance(value, dict):
        if len(value) == 1 and _FLOAT_TAG in value and isinstance(value[_FLOAT_TAG], str):
            return float(value[_FLOAT_TAG])
        return {k: decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_json(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (no NaN tokens) of ``value``."""
    return json.dumps(encode_json(value), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, dumps(value) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def walk_files(root: Path) -> list[tuple[str, str | None]]:
    """Every file below ``root`` at any depth as ``(relative POSIX path, link target)``,
    sorted; symlinks (to files or folders) are listed with their target, never followed."""
    found: list[tuple[str, str | None]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            target = os.readlink(path) if path.is_symlink() else None
            found.append((path.relative_to(root).as_posix(), target))
    return sorted(found)
