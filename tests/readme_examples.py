"""The console examples of the README (and of any ``docs/*.md``) as data, and a small shell
that runs them the way a reader would type them.

A ```` ```console ```` block is a sequence of commands. Conventions (the README's
Development section states them for readers):

- A command is a line starting with ``$ ``, continued on the next line after a trailing
  backslash. Any other line is output of the command before it.
- Each command runs in ``bash -c`` in the block's project folder; a ``cd`` carries over to
  the next command of the block, as in a terminal. A command's exit status must be 0,
  unless its comment says ``(exit N)``.
- The output shown is the command's standard output, compared line by line (trailing
  spaces ignored). In an expected line, ``...`` stands for any text (an id, a time, a hash,
  a path); a line holding only ``...`` stands for any number of lines. A command shown
  without output may print anything.
- A command ending in ``&`` runs in the background until the block ends (then its process
  group gets SIGTERM). When its comment names a URL (``# http://127.0.0.1:8080``), the next
  command starts once that URL answers.
- Every port a block names (``--port N``, ``localhost:N``, ``127.0.0.1:N``) is replaced by a
  free loopback port, the same one wherever the block names it.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

FENCE = re.compile(r"^([ \t]*)```console[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
PORT = re.compile(r"(--port[ =]|localhost:|127\.0\.0\.1:)(\d{2,5})\b")
EXIT = re.compile(r"\(exit (\d+)\)")
URL = re.compile(r"https?://[\w.]+:\d+\S*")


@dataclass
class Command:
    """One ``$`` command of a block and the output lines shown after it (none: unchecked)."""

    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def comment(self) -> str:
        """The trailing ``# ...`` comments of the command's lines, joined ('' when none)."""
        return " ".join(line[_comment_start(line):] for line in self.text.splitlines()
                        if _comment_start(line) < len(line))

    @property
    def status(self) -> int:
        """The exit status the text states: ``(exit N)`` in the comment, else 0."""
        found = EXIT.search(self.comment)
        return int(found.group(1)) if found else 0

    @property
    def background(self) -> bool:
        """Whether the command ends in ``&`` (before its comment)."""
        last = self.text.splitlines()[-1]
        body = last[: _comment_start(last)].rstrip()
        return body.endswith("&") and not body.endswith("&&")


def _comment_start(line: str) -> int:
    """Where the shell comment of ``line`` starts (``len(line)`` when it has none): the
    first ``#`` outside quotes at the start of a word."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return len(line)


@dataclass
class Block:
    """A ```` ```console ```` block: where it is, and its commands in order."""

    source: Path
    line: int
    commands: list[Command]

    @property
    def key(self) -> str:
        """The block's name in the test's tables: its first command's first line without
        its comment, spaces collapsed."""
        if not self.commands:
            return self.where
        line = self.commands[0].text.splitlines()[0]
        return " ".join(line[: _comment_start(line)].removesuffix("\\").split())

    @property
    def where(self) -> str:
        return f"{self.source.name}:{self.line}"


def parse(path: Path) -> list[Block]:
    """Every console block of the Markdown file ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for fence in FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        commands: list[Command] = []
        continued = False
        indent = fence.group(1)  # a block inside a list item: its lines are indented
        for raw in (line.removeprefix(indent) for line in fence.group(2).splitlines()):
            if continued:
                commands[-1].text += "\n" + raw
            elif raw.startswith("$ "):
                commands.append(Command(raw[2:]))
            elif commands:
                commands[-1].expected.append(raw)
            elif raw.strip():
                blocks.append(Block(path, line, []))  # text before any command: not runnable
                break
            continued = raw.endswith("\\") and bool(commands)
        else:
            blocks.append(Block(path, line, commands))
    return blocks


def collect(root: Path) -> list[Block]:
    """The console blocks of ``README.md`` and ``docs/**/*.md`` under ``root``."""
    files = [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]
    return [block for path in files if path.exists() for block in parse(path)]


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    """The regular expression the shown output stands for (see the module docstring)."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            text = line.rstrip()
            parts.append(".*?".join(re.escape(piece) for piece in text.split("...")) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], actual: str) -> bool:
    """Whether ``actual`` (a command's stdout) is what ``expected`` shows."""
    lines = [line.rstrip() for line in actual.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    normal = "".join(line + "\n" for line in lines)
    shown = list(expected)
    while shown and not shown[-1].strip():
        shown.pop()
    return output_pattern(shown).fullmatch(normal) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_free_ports(commands: list[Command]) -> list[Command]:
    """The commands with every port they name replaced by a free one (consistently)."""
    ports: dict[str, str] = {}

    def swap(found: re.Match[str]) -> str:
        port = ports.setdefault(found.group(2), str(free_port()))
        return found.group(1) + port

    return [Command(PORT.sub(swap, c.text), list(c.expected)) for c in commands]


@dataclass
class Result:
    command: Command
    returncode: int
    stdout: str
    stderr: str

    def problem(self) -> str | None:
        """What is wrong with this result against the text ('' or None when nothing)."""
        wrong = []
        if self.returncode != self.command.status:
            wrong.append(f"exit status {self.returncode}, the text says {self.command.status}")
        if self.command.expected and not matches(self.command.expected, self.stdout):
            wrong.append("output differs from the text:\n--- shown\n"
                         + "\n".join(self.command.expected) + "\n--- printed\n" + self.stdout)
        if not wrong:
            return None
        return (f"$ {self.command.text}\n" + "\n".join(wrong)
                + f"\n--- stderr (last 3000 characters)\n{self.stderr[-3000:]}")


class Shell:
    """Runs a block's commands in order in ``cwd``, as a terminal would."""

    def __init__(self, cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
        self.cwd, self.env, self.timeout = cwd, env, timeout
        self.background: list[subprocess.Popen[bytes]] = []
        self._logs = Path(tempfile.mkdtemp(prefix="nbops-readme-"))

    def run(self, command: Command) -> Result:
        if command.background:
            return self._start(command)
        state = self._logs / "cwd"
        script = f"{command.text}\n__rc=$?\npwd > {shlex.quote(str(state))}\nexit $__rc\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=self.timeout)
        if state.exists():
            self.cwd = Path(state.read_text().strip())
            state.unlink()
        return Result(command, done.returncode, done.stdout, done.stderr)

    def _start(self, command: Command) -> Result:
        """Start a background command; wait for the URL its comment names, if any."""
        log = self._logs / f"background-{len(self.background)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", f"{command.text}\nwait\n"], cwd=self.cwd,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.background.append(proc)
        url = URL.search(command.comment)
        deadline = time.monotonic() + self.timeout
        while url:
            try:
                urllib.request.urlopen(url.group(0), timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")
                    return Result(command, proc.returncode if proc.returncode is not None
                                  else -1, "", f"{url.group(0)} never answered:\n{text}")
                time.sleep(0.3)
        return Result(command, 0, "", "")

    def close(self) -> None:
        """Stop the background commands: SIGTERM to each one's process group, then wait
        until no process of the group is left (SIGKILL after 30 s)."""
        for proc in self.background:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.background:
            while _signal_group(proc.pid, 0) and time.monotonic() < deadline:
                proc.poll()  # reap the shell itself
                time.sleep(0.1)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.background.clear()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``; False when no live process of it is
    left (zombies, which only wait for their parent to reap them, do not count)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
