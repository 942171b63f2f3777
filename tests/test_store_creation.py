"""The first registry commands on a new runs folder create its MLflow store once, under
the lock every nbops writer takes: six at once all succeed (five failed with alembic
tracebacks before, and the store could be left broken)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import NBOPS, cli

pytestmark = pytest.mark.slow


def test_six_first_registry_commands_at_once_all_succeed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    procs = [subprocess.Popen([*NBOPS, "models", "ls", "--runs-dir", str(runs)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    results = [(p.wait(240), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err[-2000:]
        assert "no registered models" in out
    again = cli("models", "ls", "--runs-dir", str(runs))  # the store is whole afterwards
    assert again.returncode == 0 and "no registered models" in again.stdout, again.stderr
