"""Every console example of the README runs here and shows what the text says.

Each ```` ```console ```` block (see ``readme_examples`` for how one is read and run) runs,
command by command, in a project of its own: by default a copy of a project where the
demo pipeline (``nbops pipeline run notebooks/pipeline.yaml``, the README's first command)
ran once, shared by the session. ``CASES`` gives a block another start (an empty folder,
the end state of an earlier block) or extra set-up that its surrounding text describes;
``NOT_RUN`` lists the few blocks that are not run, with the reason. A new block is run as
the default case, so it fails here until it works as written.

The commands run with ``nbops`` (and ``mlflow``) of this interpreter first on ``PATH``,
without the test session's ``NBOPS_RUNS_DIR`` (they record into their project, as a
reader's would), and with ``NBOPS_USER=alice``, the user the README's outputs show.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from readme_examples import Block, Command, Shell, collect, matches, parse, with_free_ports

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = collect(ROOT)
DEMO = "nbops pipeline run notebooks/pipeline.yaml"
#: environment variables of the test session that would point a reader's command elsewhere
CLEARED = ("NBOPS_RUNS_DIR", "MLFLOW_TRACKING_URI", "NBOPS_EXPERIMENT", "NBOPS_CREDENTIALS",
           "NBOPS_TRIGGER", "NBOPS_CYCLE", "NBOPS_USER", "NBOPS_RUN_DIR")


def _loop_policy(project: Path) -> None:
    """The Closed loop section: a ``loop:`` policy in nbops.yaml (keys but model and
    retrain left at their defaults)."""
    with open(project / "nbops.yaml", "a") as out:
        out.write("\nloop:\n  model: nbops-demo\n  retrain: notebooks/pipeline.yaml\n")


def _approvals_policy(project: Path) -> None:
    """The Registry section's ``promotion:`` policy in nbops.yaml, as shown there."""
    with open(project / "nbops.yaml", "a") as out:
        out.write("\npromotion:\n  champion:\n    evidence: [evaluate_pass, ab_win]\n"
                  "    approvals: 1\n")


def _call_service(project: Path) -> None:
    """The Secrets section's template: ``SERVICE_TOKEN`` declared in the parameters cell,
    read with ``nbops.secret`` (as the section's two snippets show)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3",
                                             "language": "python"},
                              "nbops": {"stage": "call_service", "outputs": ["token_chars"]}})
    notebook.cells = [
        nbformat.v4.new_code_cell("from nbops import Secret\n"
                                  "SERVICE_TOKEN: Secret  # the scoring service's token",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('import nbops\ntoken = nbops.secret("SERVICE_TOKEN")\n'
                                  'nbops.output("token_chars", len(token))'),
    ]
    nbformat.write(notebook, project / "templates" / "call_service.ipynb")


@dataclass(frozen=True)
class Case:
    """How a block starts: ``demo`` (a copy of the demo project), ``empty`` (an empty
    folder) or ``after:KEY`` (a copy of the folder block KEY ended in); ``prepare`` adds
    what the surrounding text describes; ``xfail`` names a known, reported bug."""

    start: str = "demo"
    prepare: Callable[[Path], None] | None = None
    xfail: str | None = None


PIPELINES = "nbops pipeline run notebooks/pipeline.yaml"  # ends with v2 registered
MODELS = "nbops models ls"
RUNNING = "nbops run sample -p C 0.5 -p dataset wine"  # ends with two runs of sample
CASES: dict[str, Case] = {
    "nbops init my-project": Case(start="empty"),
    MODELS: Case(start=f"after:{PIPELINES}"),
    'nbops models promote nbops-demo 1 --reason "the forest, for now"':
        Case(start=f"after:{MODELS}", prepare=_approvals_policy),
    "nbops loop tick":
        Case(prepare=_loop_policy),
    "SERVICE_TOKEN=tok-2f9c41e7 nbops run call_service": Case(prepare=_call_service),
    "nbops runs ls --stage sample --where 'metrics.accuracy>0.9'": Case(start=f"after:{RUNNING}"),
}
NOT_RUN: dict[str, str] = {
    "nbops serve nbops-demo@champion --shadow nbops-demo@challenger":
        "needs labels that arrive after live traffic; the whole A/B path runs in "
        "tests/test_abtest.py and `nbops demo loop` (tests/test_demo.py)",
}


def test_every_console_block_is_run_or_deliberately_not() -> None:
    """Every block has commands and a unique key; the tables name only existing blocks."""
    assert BLOCKS, "no console block found in README.md"
    empty = [b.where for b in BLOCKS if not b.commands]
    assert not empty, f"console blocks without a '$ ' command (use ```text): {empty}"
    keys = [b.key for b in BLOCKS]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    assert not twice, f"blocks must start with different commands: {twice}"
    stale = sorted((set(CASES) | set(NOT_RUN)) - set(keys))
    assert not stale, f"CASES / NOT_RUN name blocks the README no longer has: {stale}"
    assert not set(CASES) & set(NOT_RUN)
    for case in CASES.values():
        if case.start.startswith("after:"):
            assert keys.index(case.start[6:]) < keys.index(
                next(k for k, c in CASES.items() if c is case)), "start after a later block"


def test_the_conventions_the_development_section_states(tmp_path: Path) -> None:
    """How a block is read: commands, continuation lines, comments, ``(exit N)``, ``&``,
    and ``...`` in shown output (in a line, and as a line of its own)."""
    page = tmp_path / "page.md"
    page.write_text("- in a list:\n\n  ```console\n  $ echo a \\\n      b   # note (exit 2)\n"
                    "  a b\n  $ nbops serve m --port 8080 &   # ready when "
                    "http://127.0.0.1:8080/ready answers\n  ```\n")
    (block,) = parse(page)
    first, second = block.commands
    assert block.key == "echo a" and first.expected == ["a b"] and first.status == 2
    assert second.background and not first.background and second.status == 0
    (_, moved) = with_free_ports(block.commands)
    assert "8080" not in moved.text and moved.text.count(moved.text.split()[4]) == 2
    assert matches(["run ...  succeeded", "...", "end"], "run 1a2b  succeeded\nx\ny\nend\n")
    assert matches(["a ..."], "a\n") is False  # "..." stands for text, never for the space
    assert not matches(["a", "end"], "a\nx\nend\n")  # lines are left out only with "..."
    assert matches(["a", "..."], "a\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NBOPS_USER"] = "alice"
    return env


def _copy(source: Path, target: Path) -> Path:
    """Copy a folder; from the repository, without what a clone would not have (runs a
    notebook opened there recorded, checkpoints, caches)."""
    from_repo = ROOT in source.parents
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(
        "runs", ".ipynb_checkpoints", "__pycache__") if from_repo else None)
    return target


@pytest.fixture(scope="session")
def project_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project: the repository's project files (nbops.yaml, templates/, notebooks/)
    and nothing run."""
    project = tmp_path_factory.mktemp("readme") / "project"
    project.mkdir()
    for name in ("templates", "notebooks"):
        _copy(ROOT / name, project / name)
    shutil.copy(ROOT / ".gitignore", project / ".gitignore")
    if (ROOT / "nbops.yaml").exists():
        shutil.copy(ROOT / "nbops.yaml", project / "nbops.yaml")
    else:
        (project / "nbops.yaml").write_text("name: nbops\n")
    # a clone is a git work tree: records carry its commit, as the README's outputs show
    git = ["git", "-c", "user.name=alice", "-c", "user.email=alice@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the project"]):
        subprocess.run([*git, *args], cwd=project, check=True, capture_output=True)
    return project


@pytest.fixture(scope="session")
def demo_project(project_files: Path) -> Path:
    """The fresh project after the README's first command: the demo pipeline ran once."""
    project = _copy(project_files, project_files.parent / "demo")
    shell = Shell(project, _env())

    result = shell.run(Command(DEMO))
    assert result.returncode == 0, result.stderr[-3000:]
    _wait_final(project / "runs")
    return project


def _wait_final(runs: Path, timeout: float = 60) -> None:
    """Until every record under ``runs`` is finished and mirrored (a copy taken earlier
    could catch a background writer mid-way)."""
    deadline = time.monotonic() + timeout
    for path in runs.glob("*/run.json"):
        while True:
            record = json.loads(path.read_text())
            if record["status"] != "running" and (record.get("mlflow") or {}).get("synced"):
                break
            assert time.monotonic() < deadline, f"{path.parent.name} not final: {record}"
            time.sleep(0.2)


ENDED: dict[str, Path] = {}  # the folder each block ended in, for a later "after:" start


@pytest.fixture
def start(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[Case], Path]]:
    def make(case: Case) -> Path:
        if case.start == "empty":
            folder = tmp_path / "work"
            folder.mkdir()
        elif case.start.startswith("after:"):
            if case.start[6:] not in ENDED:
                pytest.skip(f"starts where block {case.start[6:]!r} ended; run that one too")
            folder = _copy(ENDED[case.start[6:]], tmp_path / "project")
        else:
            folder = _copy(request.getfixturevalue("demo_project"), tmp_path / "project")
        if case.prepare:
            case.prepare(folder)
        return folder

    yield make


RUN = [b for b in BLOCKS if b.commands and b.key not in NOT_RUN]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=[b.key[:70] for b in RUN])
def test_console_example(block: Block, start: Callable[[Case], Path],
                         request: pytest.FixtureRequest) -> None:
    case = CASES.get(block.key, Case())
    if case.xfail:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.xfail))
    folder = start(case)
    shell = Shell(folder, _env())
    try:
        for command in with_free_ports(block.commands):
            problem = shell.run(command).problem()
            assert problem is None, f"{block.where}: {problem}"
    finally:
        shell.close()
    ENDED[block.key] = folder
