"""Run store details: crash-safe writes, schema checks on read, listing, progress on a TTY."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import numpy as np
import pytest

from conftest import NBOPS, NOTEBOOKS, cli
from nbops.util.files import atomic_write_text


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    atomic_write_text(target, "old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left


@pytest.mark.slow
def test_newer_and_corrupt_records_are_reported(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--json", "--runs-dir", str(runs),
               cwd=tmp_path)
    record = json.loads(done.stdout)
    newer = dict(record, id="newer-run", schema="nbops.run/2")
    (runs / "newer-run").mkdir()
    (runs / "newer-run" / "run.json").write_text(json.dumps(newer))
    (runs / "broken-run").mkdir()
    (runs / "broken-run" / "run.json").write_text('{"schema": "nbops.run/1", "id": ')
    shown = cli("runs", "show", "newer-run", "--runs-dir", str(runs))
    assert shown.returncode == 1 and "upgrade nbops" in shown.stderr
    assert "Traceback" not in shown.stderr
    listing = cli("runs", "ls", "--runs-dir", str(runs))
    assert listing.returncode == 0 and record["id"] in listing.stdout
    assert "skipped" in listing.stderr and "broken-run" in listing.stderr
    verify = cli("runs", "verify", "--runs-dir", str(runs))
    assert verify.returncode == 1 and "broken-run" in verify.stdout


@pytest.mark.slow
def test_numpy_and_tuples_reach_the_kernel_as_python_values(run_api) -> None:  # type: ignore[no-untyped-def]
    record = run_api("echo", {"b": np.False_, "i": np.int64(5), "f": np.float32(0.5),
                              "l": (1, 2), "a": np.bool_(True)})
    echo, types = record["outputs"]["echo"], record["outputs"]["types"]
    assert echo["b"] is False and types["b"] == "bool"  # never the truthy string "False"
    assert echo["i"] == 5 and types["i"] == "int" and echo["f"] == 0.5
    assert echo["l"] == [1, 2] and types["l"] == "list" and echo["a"] is True


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    plain = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--runs-dir", runs, cwd=tmp_path)
    assert "Executing" not in plain.stderr and "cell/s" not in plain.stderr
    leader, follower = pty.openpty()
    # a real terminal has a width; a bare pty has 0 columns, where tqdm draws nothing
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([*NBOPS, "run", str(NOTEBOOKS / "ok.ipynb"), "--runs-dir", runs],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "Executing" in terminal and "cell/s" in terminal


def test_origin_says_who_and_why_with_explicit_then_environment_then_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass
    import socket

    from nbops.records.lifecycle import make_origin

    monkeypatch.delenv("NBOPS_TRIGGER", raising=False)
    monkeypatch.delenv("NBOPS_CYCLE", raising=False)
    assert make_origin("cli") == {"user": getpass.getuser(), "host": socket.gethostname(),
                                  "trigger": "cli", "cycle": None}
    monkeypatch.setenv("NBOPS_TRIGGER", "schedule")  # a cron line
    assert make_origin("cli")["trigger"] == "schedule"
    assert make_origin("cli", trigger="loop", cycle="c1")["trigger"] == "loop"
    monkeypatch.setenv("NBOPS_TRIGGER", "cron; rm -rf /")  # not a trigger: the default
    assert make_origin("api")["trigger"] == "api"
    monkeypatch.setenv("NBOPS_CYCLE", "c9")
    assert make_origin()["cycle"] == "c9"
