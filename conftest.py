"""Session set-up shared by the tests and the nbval runs of templates/ and notebooks/."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Notebooks run by nbval record into a throw-away run store, never ./runs.
    if "NBOPS_RUNS_DIR" not in os.environ:
        os.environ["NBOPS_RUNS_DIR"] = str(Path(tempfile.mkdtemp(prefix="nbops-nbval-")) / "runs")
