"""Cache keys by content: a path a stage reads is keyed by what it holds, not where it is.

Two runs of a stage that write the same bytes to new files are the same input to the
stages downstream: a parameter that names a file or folder enters the cache key as the
sha256 of its content (a folder: of every file's relative path and content), with the
file's name, never its full path. That applies to

- any value, at any depth, that is an absolute path into a run (an upstream output such
  as ``runs/<id>/artifacts/predictions.parquet``), and
- a parameter declared ``Path`` that names an existing file or folder (relative paths
  are taken from the pipeline's folder, the kernel's working folder): a data file edited
  in place changes the key.

Anything else (a path that does not exist, any other value) enters the key as it is, with
paths into runs written portably (``records.relocate.portable``). Digests are remembered
per process by path, size, modification time and inode, so a file is read once per
``pipeline run``.

A FIFO, socket or device (named, or inside a folder) is never opened: its content cannot
be known, so it enters the key as a value drawn at random (the key matches no other) and,
where the caller passes a ``special`` list, its path and kind are added to it (the cache
says why the stage runs).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotRegularFileError
from ..records.relocate import portable, rebase
from ..util.files import sha256_file, walk_files

if TYPE_CHECKING:
    from ..contract.template import Template
    from ..contract.types import TypeSpec

_SKIP = "/.ipynb_checkpoints/"
_memo: dict[tuple[str, int, int, int], str] = {}
_memo_lock = threading.Lock()


def key_parameters(template: Template, resolved: dict[str, Any], base: Path | None,
                   runs_dir: Path | None, special: list[str] | None = None
                   ) -> dict[str, Any]:
    """``resolved`` as the cache key sees it (see the module doc; ``special`` collects the
    files that are not regular files)."""
    keyed: dict[str, Any] = {}
    for name, value in resolved.items():
        spec = template.parameters[name].type if name in template.parameters else None
        if spec is not None and _is_path(spec) and isinstance(value, str) and value:
            found = _local(value, base, runs_dir)
            if found is not None:
                keyed[name] = content_of(found, special)
                continue
        keyed[name] = by_content(value, runs_dir, special)
    return keyed


def content_of(path: Path, special: list[str] | None = None) -> dict[str, str]:
    """``{"name", "sha256"}`` of a file, or of a folder (every file below it, by relative
    path and content)."""
    return {"name": path.name, "sha256": digest(path, special)}


def digest(path: Path, special: list[str] | None = None) -> str:
    """sha256 of a file's bytes, or of a folder's sorted ``path NUL sha256`` lines (a file
    that is not a regular file: see the module doc)."""
    if not path.is_dir():
        return _file_digest(path, special)
    lines = []
    for rel, target in walk_files(path):
        if _SKIP in f"/{rel}":
            continue
        sha = (hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()
               if target is not None else _file_digest(path / rel, special))
        lines.append(f"{rel}\0{sha}\n")
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _file_digest(path: Path, special: list[str] | None) -> str:
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _memo_lock:
        known = _memo.get(memo_key)
    if known is None:
        try:
            known = sha256_file(path)
        except NotRegularFileError as exc:
            if special is not None:
                special.append(str(exc))
            return f"{exc.kind} {secrets.token_hex(16)}"  # never remembered, never matched
        with _memo_lock:
            _memo[memo_key] = known
    return known


def _is_path(spec: TypeSpec) -> bool:
    return spec.kind == "path" or (spec.kind == "union" and any(_is_path(a)
                                                               for a in spec.args))


def _local(value: str, base: Path | None, runs_dir: Path | None) -> Path | None:
    """The existing file or folder ``value`` names (a path into a run is looked up in
    ``runs_dir``, as the stage will read it), or None."""
    if runs_dir is not None:
        value = rebase(value, runs_dir)
    path = Path(value)
    if not path.is_absolute():
        if base is None:
            return None
        path = base / path
    try:
        return path if path.exists() else None
    except OSError:
        return None


def by_content(value: Any, runs_dir: Path | None, special: list[str] | None = None) -> Any:
    """``value`` with every existing absolute path into a run replaced by its content, and
    other paths into runs written portably."""
    if isinstance(value, list):
        return [by_content(v, runs_dir, special) for v in value]
    if isinstance(value, dict):
        return {k: by_content(v, runs_dir, special) for k, v in value.items()}
    if isinstance(value, str) and os.path.isabs(value) and portable(value) != value:
        found = _local(value, None, runs_dir)
        return content_of(found, special) if found is not None else portable(value)
    return value
