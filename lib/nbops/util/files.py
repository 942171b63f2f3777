"""Small file utilities: crash-safe writes, hashing, strict JSON with non-finite floats.

Every file nbops writes goes through :func:`atomic_write_bytes`: a temp file in the same
folder, fsync, rename, fsync of the folder. A kill at any instant leaves the old or the
new file, never a truncated one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import NotRegularFileError

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


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words: ``"a regular file"``, ``"a FIFO"``, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((words for test, words in _KINDS if test(mode)), "a special file")


def open_regular(path: Path, follow: bool = True) -> BinaryIO:
    """``path`` opened for reading, only if it is a regular file (``follow``: a symlink to
    one is accepted too).

    It is opened non-blocking (a FIFO or device swapped in after a check never blocks the
    open) and without following a last symlink unless ``follow``, and ``fstat`` of the open
    file decides: nothing but a regular file is ever read.

    Raises:
        NotRegularFileError: a FIFO, socket, device, folder or (unless ``follow``) symlink.
        OSError: it cannot be opened (``FileNotFoundError`` when it is not there).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise NotRegularFileError(str(path), "a symlink") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket; a folder
            mode = (os.stat(path) if follow else os.lstat(path)).st_mode
            raise NotRegularFileError(str(path), file_kind(mode)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(str(path), file_kind(mode))
    return os.fdopen(fd, "rb")


def read_regular(path: Path, follow: bool = True) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path, follow) as handle:
        return handle.read()


def sha256_file(path: Path, follow: bool = True) -> str:
    """sha256 of a regular file's bytes (see :func:`open_regular`: a FIFO, socket or
    device raises ``NotRegularFileError``, never blocks)."""
    digest = hashlib.sha256()
    with open_regular(path, follow) as handle:
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
