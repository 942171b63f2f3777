"""Secret values: how a kernel learns them, how they are scrubbed, how they are fingerprinted.

A template declares secrets by name (``API_TOKEN: Secret`` in its parameters cell); the
runner resolves their values (``contract.secrets``) and hands them to the kernel only
through its environment, naming them in ``NBOPS_SECRETS``. Invariants:

- every text nbops writes from a run with secrets (each save of the notebook, the kernel
  log, the recording events, the run record) passes through a :class:`Scrubber` first,
  which replaces the value and its common encodings with ``[secret NAME]``;
- a cache key or a record holds :func:`fingerprint`, an HMAC under a key kept in the runs
  folder (``.secret-key``, mode 0600), never the value or a plain hash of it (a plain hash
  of a short password is reversed by guessing);
- a :class:`Scrubber` never shows its values: ``repr`` names the secrets only.

Standard library only (the in-kernel API uses it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import secrets as _random
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus

SECRETS_VAR = "NBOPS_SECRETS"  # in a kernel's environment: the names of its run's secrets
KEY_FILE = ".secret-key"  # in the runs folder: the fingerprint key
MIN_LENGTH = 6  # shorter values would scrub ordinary words out of every output
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# outputs whose data is text (scrubbed); binary data (images as base64) is left alone, its
# bytes are not the secret's and a chance match would corrupt the picture
_TEXT_MIMES = ("text/", "application/json", "application/javascript", "image/svg+xml",
               "application/vnd.jupyter")


def mark(name: str) -> str:
    """What replaces a secret's value: visible, and saying which secret it was."""
    return f"[secret {name}]"


def encodings(value: str) -> list[str]:
    """The value as it commonly appears in printed text: raw, escaped as in a Python or JSON
    string, URL-encoded, base64 (standard and URL-safe, with and without padding) and hex."""
    raw = value.encode("utf-8")
    forms = [
        value,
        value.encode("unicode_escape").decode("ascii"),
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        base64.b64encode(raw).decode("ascii"),
        base64.urlsafe_b64encode(raw).decode("ascii"),
        raw.hex(),
        raw.hex().upper(),
    ]
    forms += [f.rstrip("=") for f in forms[7:9]]
    return sorted({f for f in forms if len(f) >= MIN_LENGTH}, key=len, reverse=True)


class Scrubber:
    """Replaces known secret values (and their encodings) in text and JSON-like values."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._names: dict[str, str] = {}  # encoded form -> secret name
        self._pattern: re.Pattern[str] | None = None
        for name, value in (secrets or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Scrub ``value`` from now on (as ``[secret name]``)."""
        for form in encodings(value):
            self._names.setdefault(form, name)
        self._compile()

    def merge(self, other: Scrubber) -> None:
        """Scrub what ``other`` scrubs too."""
        for form, name in other._names.items():
            self._names.setdefault(form, name)
        self._compile()

    def _compile(self) -> None:
        forms = sorted(self._names, key=len, reverse=True)  # longest first
        self._pattern = re.compile("|".join(re.escape(f) for f in forms)) if forms else None

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:  # never the values
        return f"Scrubber(names={self.names})"

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: mark(self._names[m.group(0)]), text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def notebook(self, nb: Any) -> None:
        """Scrub a notebook in place: cell sources, stream text, error names, values and
        tracebacks, text-like output data, and the cells' and notebook's metadata.

        Adjacent stream outputs of the same stream are merged first (a value printed in
        two pieces, ``print(t[:8], end='')`` then ``print(t[8:])``, arrives as two
        outputs that only together spell it)."""
        if self._pattern is None:
            return
        self._in_place(nb.metadata)
        for cell in nb.cells:
            if isinstance(cell.get("source"), str):
                cell["source"] = self.text(cell["source"])
            else:
                self._in_place(cell.get("source"))
            self._in_place(cell.get("metadata", {}))
            if isinstance(cell.get("outputs"), list):
                merge_streams(cell["outputs"])
            for output in cell.get("outputs", []):
                self._output(output)

    def _in_place(self, container: Any) -> None:
        """Scrub the strings inside dicts and lists in place (their types kept); a key that
        would change is renamed."""
        if isinstance(container, dict):
            for key in list(container):
                value = container[key]
                if isinstance(value, str):
                    value = self.text(value)
                else:
                    self._in_place(value)
                clean = self.text(key) if isinstance(key, str) else key
                if clean != key:
                    del container[key]
                container[clean] = value
        elif isinstance(container, list):
            for i, value in enumerate(container):
                if isinstance(value, str):
                    container[i] = self.text(value)
                else:
                    self._in_place(value)

    def _output(self, output: Any) -> None:
        for key in ("text", "ename", "evalue"):
            if isinstance(output.get(key), str):
                output[key] = self.text(output[key])
            else:
                self._in_place(output.get(key))
        self._in_place(output.get("traceback", []))
        self._in_place(output.get("metadata", {}))
        data = output.get("data", {})
        for mime in list(data):
            if mime.startswith(_TEXT_MIMES) or mime.endswith(("+json", "+xml")):
                if isinstance(data[mime], str):
                    data[mime] = self.text(data[mime])
                else:
                    self._in_place(data[mime])


def merge_streams(outputs: list[Any]) -> None:
    """Merge, in place, each run of adjacent stream outputs of the same stream (stdout,
    stderr) into its first output, as a reader sees them."""
    merged: list[Any] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (last is not None and output.get("output_type") == "stream"
                and last.get("output_type") == "stream"
                and output.get("name") == last.get("name")):
            last["text"] = _joined(last.get("text", "")) + _joined(output.get("text", ""))
        else:
            merged.append(output)
    outputs[:] = merged


def _joined(text: Any) -> str:
    return "".join(text) if isinstance(text, list) else str(text)


def scrub_file(path: Path, scrubber: Scrubber) -> None:
    """Rewrite the text file ``path`` scrubbed (replaced atomically; nothing when it is
    missing or has nothing to scrub)."""
    if not scrubber:
        return
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    text = data.decode("utf-8", "surrogateescape")
    clean = scrubber.text(text)
    if clean == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
    tmp.write_bytes(clean.encode("utf-8", "surrogateescape"))
    os.replace(tmp, path)


def without(env: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """``env`` without the variables ``names``."""
    drop = set(names)
    return {k: v for k, v in env.items() if k not in drop}


def from_environment(env: Mapping[str, str] | None = None) -> Scrubber:
    """The scrubber of the secrets a kernel was given (named in ``NBOPS_SECRETS``)."""
    env = os.environ if env is None else env
    found = {n: env[n] for n in names_in(env) if env.get(n)}
    return Scrubber(found)


def secret_env(values: Mapping[str, str]) -> dict[str, str]:
    """What a kernel's environment gets for its run's secrets: each as the variable of its
    name, and their names in ``NBOPS_SECRETS``."""
    if not values:
        return {}
    return {**values, SECRETS_VAR: ",".join(sorted(values))}


def names_in(env: Mapping[str, str]) -> list[str]:
    """The secret names listed in ``env`` (``NBOPS_SECRETS``, comma-separated)."""
    return [n for n in env.get(SECRETS_VAR, "").split(",") if NAME.fullmatch(n)]


def fingerprint(key: bytes, name: str, value: str) -> str:
    """A keyed fingerprint of a secret: equal for equal values under one runs folder's key,
    useless for guessing the value without the key."""
    digest = hmac.new(key, f"{name}\0{value}".encode(), "sha256").hexdigest()
    return f"hmac-sha256:{digest[:32]}"


def fingerprint_key(runs_dir: Path) -> bytes:
    """The runs folder's fingerprint key, made on first use (32 random bytes, mode 0600;
    two processes making it at once agree on one key)."""
    path = runs_dir / KEY_FILE
    for _ in range(50):
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            runs_dir.mkdir(parents=True, exist_ok=True)
            _create_key(path)
            continue
        try:
            key = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) >= 32:
            return key
        raise OSError(f"{path} is not an nbops key (delete it: cached runs with secrets "
                      "then run again)")
    raise OSError(f"could not read {path}")


def _create_key(path: Path) -> None:
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(_random.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic: the first one made wins, the others read it
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


class ScrubbingPipe:
    """A pipe whose write end a kernel gets as stdout/stderr; a thread reads it and appends
    what arrives to ``target``, whole lines at a time, scrubbed by the current scrubber, so
    what a kernel prints to its file descriptors never reaches the disk unscrubbed."""

    CHUNK = 1 << 16
    MAX_LINE = 1 << 20  # a longer line without a newline is written in pieces

    def __init__(self, target: Path, scrubber: Scrubber | Callable[[], Scrubber]) -> None:
        self.target = target
        self._scrubber = scrubber
        self._read_fd, write_fd = os.pipe()
        self.writer: IO[bytes] = os.fdopen(write_fd, "wb", buffering=0)
        self._waiting = False  # the thread waits for data: all that came is written
        self._thread = threading.Thread(target=self._pump, name="nbops-log", daemon=True)
        self._thread.start()

    def _scrub(self, data: bytes) -> bytes:
        scrubber = self._scrubber() if callable(self._scrubber) else self._scrubber
        text = data.decode("utf-8", "surrogateescape")
        return scrubber.text(text).encode("utf-8", "surrogateescape")

    def _pump(self) -> None:
        pending = b""
        with self.target.open("ab") as out:
            try:
                while True:
                    self._waiting = True
                    chunk = os.read(self._read_fd, self.CHUNK)
                    self._waiting = False
                    if not chunk:
                        break
                    pending += chunk
                    cut = pending.rfind(b"\n") + 1
                    if cut == 0 and len(pending) >= self.MAX_LINE:
                        cut = len(pending)
                    if cut:
                        out.write(self._scrub(pending[:cut]))
                        out.flush()
                        pending = pending[cut:]
            finally:
                if pending:
                    out.write(self._scrub(pending))
                os.close(self._read_fd)
                self._waiting = False

    def drain(self, timeout: float = 1.0) -> None:
        """Wait (a while) until every complete line written so far is in the file."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self._waiting and not _readable(self._read_fd):
                return
            time.sleep(0.005)

    def close(self, timeout: float = 5.0) -> None:
        """Close our write end and wait (a while) for the kernel's to close too."""
        self.writer.close()
        self._thread.join(timeout)


def _readable(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False
