"""One home: nbops init, the project root rule, and the overrides that still come first."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import cli

ENV = {"NBOPS_RUNS_DIR": "", "MLFLOW_TRACKING_URI": ""}


def test_init_scaffolds_a_project_and_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    done = cli("init", str(root), env=ENV)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in root.iterdir()} == {"nbops.yaml", ".gitignore", "pipeline.yaml",
                                                "templates"}
    assert "runs/" in (root / ".gitignore").read_text()
    example = json.loads((root / "templates" / "example.ipynb").read_text())
    assert example["metadata"]["nbops"]["stage"] == "example"
    (root / "pipeline.yaml").write_text("mine")
    again = cli("init", str(root), env=ENV)
    assert again.returncode == 2 and "already exist" in again.stderr
    assert "nothing was written" in again.stderr and "Traceback" not in again.stderr
    assert (root / "pipeline.yaml").read_text() == "mine"
    show = cli("pipeline", "show", env=ENV, cwd=root)
    assert show.returncode == 2  # "mine" is not a pipeline: refused, not run


@pytest.mark.slow
def test_runs_and_templates_have_one_home_wherever_commands_run(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    assert cli("init", str(root), env=ENV).returncode == 0
    deep = root / "analysis" / "week1"
    deep.mkdir(parents=True)
    listed = cli("templates", "--json", env=ENV, cwd=deep)
    assert json.loads(listed.stdout)[0]["name"] == "example"  # the project's come first
    ran = cli("run", "example", "--json", "--tracking-uri", "none", env=ENV, cwd=deep)
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert (root / "runs" / record["id"] / "run.json").is_file()
    assert not (deep / "runs").exists()
    # the overrides still come first
    elsewhere = tmp_path / "elsewhere"
    again = cli("run", "example", "--json", "--tracking-uri", "none",
                env={**ENV, "NBOPS_RUNS_DIR": str(elsewhere)}, cwd=deep)
    assert again.returncode == 0 and (elsewhere / json.loads(again.stdout)["id"]).is_dir()


def test_a_pyproject_tool_table_marks_the_root_too(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nbops.util.envvars import resolve_runs_dir
    from nbops.util.project import find_root

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.nbops]\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert find_root(tmp_path / "src" / "deep") == tmp_path.resolve()
    monkeypatch.chdir(tmp_path / "src" / "deep")
    monkeypatch.delenv("NBOPS_RUNS_DIR", raising=False)
    assert resolve_runs_dir() == tmp_path.resolve() / "runs"
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.ruff]\n")
    assert find_root(tmp_path / "src" / "deep") is None


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_copied_project_uses_its_own_records_and_never_writes_into_the_original(
        tmp_path: Path) -> None:
    import shutil

    import yaml

    from conftest import NOTEBOOKS

    original = tmp_path / "original"
    original.mkdir()
    (original / "nbops.yaml").write_text("name: moved\n")
    (original / "pipeline.yaml").write_text(yaml.safe_dump({"stages": {
        "produce": {"template": str(NOTEBOOKS / "produce.ipynb"), "parameters": {"n": 3}},
        "consume": {"template": str(NOTEBOOKS / "consume.ipynb"), "parameters": {
            "path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}}}}))
    first = cli("pipeline", "run", "--json", env=ENV, cwd=original)
    assert first.returncode == 0, first.stderr
    before = _snapshot(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)

    cached = cli("pipeline", "run", "--json", env=ENV, cwd=copy)
    assert cached.returncode == 0, cached.stderr
    assert all(s["cached"] for s in json.loads(cached.stdout)["stages"].values())
    assert cli("runs", "verify", env=ENV, cwd=copy).returncode == 0
    forced = cli("pipeline", "run", "--json", "--force", env=ENV, cwd=copy)
    assert forced.returncode == 0, forced.stderr
    consume = json.loads(forced.stdout)["stages"]["consume"]["run_id"]
    record = json.loads((copy / "runs" / consume / "run.json").read_text())
    assert record["parameters"]["path"].startswith(str(copy / "runs"))  # its own copy
    assert _snapshot(original) == before  # nothing written into the original

    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(f"sqlite:///{copy / 'runs' / 'mlflow.db'}"
                              ).get_experiment_by_name("nbops")
    assert experiment.artifact_location == (copy / "runs" / "mlartifacts").as_uri()


def test_the_repository_root_is_the_project_nbops_init_makes(tmp_path: Path) -> None:
    from conftest import ROOT

    made = tmp_path / "made"
    assert cli("init", str(made), "--name", "nbops", env=ENV).returncode == 0
    assert (ROOT / "nbops.yaml").read_text() == (made / "nbops.yaml").read_text()
    ignored = set((ROOT / ".gitignore").read_text().splitlines())
    wanted = [line for line in (made / ".gitignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert set(wanted) <= ignored and "runs/" in wanted


_WHERE = ("from nbops.util.envvars import current_runs_dir\n"
          "from nbops.kernel_api import tracking_uri\n"
          "print(current_runs_dir(), tracking_uri(), sep='\\n')\n")


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["templates", "notebooks"])
def test_shipped_notebooks_opened_by_hand_record_into_the_root_runs(folder: str) -> None:
    """A kernel as JupyterLab starts it for a notebook of the repository (working directory
    = the notebook's folder, no NBOPS_RUNS_DIR) records into <repo>/runs and its MLflow
    store, like the pipeline run from the root. Nothing is written: resolution only."""
    import os
    import subprocess
    import sys

    from jupyter_client.manager import start_new_kernel

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items()
           if k not in ("NBOPS_RUNS_DIR", "NBOPS_RUN_DIR", "MLFLOW_TRACKING_URI")}
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT / folder),
                                       env=env)
    printed: list[str] = []
    try:
        reply = client.execute_interactive(
            _WHERE, timeout=60,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    runs = (ROOT / "runs").resolve()
    assert "".join(printed).split() == [str(runs), f"sqlite:///{runs / 'mlflow.db'}"]
    root = subprocess.run([sys.executable, "-c", _WHERE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert root.stdout.split() == [str(runs), f"sqlite:///{runs / 'mlflow.db'}"], root.stderr


def test_init_refuses_clearly_where_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    for target, said in ((tmp_path / "a-file" / "proj", "Not a directory"),
                         (Path("/proc/nbops-cannot-be-here"), "cannot initialise")):
        done = cli("init", str(target), env=ENV)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "pick a folder you can write" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("target", ["/nowhere/nbops.yaml", "nbops.yaml.old"])
def test_init_counts_a_dangling_symlink_as_an_existing_file(tmp_path: Path,
                                                            target: str) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "nbops.yaml").symlink_to(target)
    done = cli("init", str(root), env=ENV)
    assert done.returncode == 2 and "already exist" in done.stderr, done.stderr
    assert f"{root / 'nbops.yaml'}" in done.stderr
    assert (root / "nbops.yaml").is_symlink() and os.readlink(root / "nbops.yaml") == target
    assert sorted(p.name for p in root.iterdir()) == ["nbops.yaml"]  # nothing written
