"""The CLI as a user meets it: exit codes, messages without tracebacks, nothing half-written."""
from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NBOPS, NOTEBOOKS, ROOT, cli, kernel_alive, kernels_of, wait_mirrored

pytestmark = pytest.mark.slow
EVIL = "x'); import os; os.system('touch PWNED'); ('"


def assert_usage_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for needle in needles:
        assert needle in done.stderr


@pytest.mark.parametrize("args, needles", [
    (["-p", "xx", "1"], ["unknown parameter 'xx'", "Did you mean 'x'", "Valid parameters: x"]),
    (["-p", "x", "ten"], ["parameter 'x'", "expects int", "'ten'"]),
    (["-p", EVIL, "1"], ["unknown parameter"]),
    (["-f", "missing.yaml"], ["parameters file", "does not exist"]),
])
def test_bad_parameters_exit_2_and_write_nothing(tmp_path: Path, args: list[str],
                                                 needles: list[str]) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "ok.ipynb"), *args, "--runs-dir", str(runs), cwd=tmp_path)
    assert_usage_error(done, *needles)
    assert not runs.exists()  # no run record, no store, and so no kernel
    assert not (tmp_path / "PWNED").exists()


def test_unknown_template_exit_2(tmp_path: Path) -> None:
    done = cli("run", "sampl", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert_usage_error(done, "unknown template 'sampl'", "Did you mean 'sample'")
    assert not (tmp_path / "runs").exists()


def test_parameters_to_notebook_without_parameters_cell(tmp_path: Path) -> None:
    done = cli("run", str(NOTEBOOKS / "no_parameters.ipynb"), "-p", "x", "1",
               "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert_usage_error(done, "declares no parameters", "Tag a cell 'parameters'")


def test_hostile_value_runs_as_data(tmp_path: Path) -> None:
    done = cli("run", str(NOTEBOOKS / "echo.ipynb"), "-p", "s", EVIL, "--json",
               "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["outputs"]["echo"]["s"] == EVIL
    assert not (tmp_path / "PWNED").exists()


def test_run_text_output_and_failure_exit_1(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "raises.ipynb"), "--runs-dir", str(runs), cwd=tmp_path)
    assert done.returncode == 1
    assert "failed" in done.stdout and "ValueError: bad value 1" in done.stdout
    assert "failing cell marked" in done.stdout
    ok = cli("run", str(NOTEBOOKS / "ok.ipynb"), "-p", "x", "4", "--runs-dir", str(runs),
             cwd=tmp_path)
    assert ok.returncode == 0 and "succeeded" in ok.stdout and "y=8" in ok.stdout
    listing = cli("runs", "ls", "--status", "failed", "--runs-dir", str(runs))
    assert listing.returncode == 0 and "raises" in listing.stdout and "ok " not in listing.stdout
    as_json = json.loads(cli("runs", "ls", "--json", "--runs-dir", str(runs)).stdout)
    assert sorted(r["status"] for r in as_json) == ["failed", "succeeded"]
    run_id = [r["id"] for r in as_json if r["status"] == "succeeded"][0]
    show = cli("runs", "show", run_id, "--runs-dir", str(runs))
    assert show.returncode == 0 and "param x = 4" in show.stdout
    assert f"by:       {getpass.getuser()}@{socket.gethostname()} (cli)" in show.stdout
    missing = cli("runs", "show", run_id[:-1] + "z", "--runs-dir", str(runs))
    assert_usage_error(missing, "no run", "Did you mean")


def test_templates_listing() -> None:
    done = cli("templates", "--json")
    assert done.returncode == 0
    sample = [t for t in json.loads(done.stdout) if t["name"] == "sample"][0]
    assert sample["stage"] == "sample"
    assert {"name": "C", "type": "float", "default": 1.0,
            "help": "inverse regularisation strength"} in sample["parameters"]
    text = cli("templates").stdout
    assert "sample  (stage: sample)" in text and "max_iter: int = 200" in text


def _start(tmp_path: Path, runs: Path, *extra: str,
           api: bool = False) -> tuple[subprocess.Popen[str], Path]:
    """``nbops run`` of sleeps.ipynb (``api``: ``nbops.run`` in a script, no mirror child),
    once its sleeping cell runs."""
    command = [*NBOPS, "run", str(NOTEBOOKS / "sleeps.ipynb"), "--runs-dir", str(runs), *extra]
    if api:
        command = [sys.executable, "-c", "import sys, nbops; from nbops.runner import "
                   "RunOptions; nbops.run(sys.argv[1], options=RunOptions(runs_dir=sys.argv[2]))",
                   str(NOTEBOOKS / "sleeps.ipynb"), str(runs)]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the sleeping cell runs
        for run_json in runs.glob("*/run.json"):
            events = run_json.parent / "events.jsonl"
            if events.exists() and "before_sleep" in events.read_text():
                return proc, run_json.parent
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the notebook never reached its sleeping cell")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_kills_run_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    runs = tmp_path / "runs"
    proc, run_dir = _start(tmp_path, runs)
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "killed" in out and "Traceback" not in err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "killed" and "in cell" in record["error"]["message"]
    assert (run_dir / "notebook.ipynb").exists()
    assert not kernel_alive(record["runner"]["kernel_pid"]) and not kernels_of(run_dir)
    assert record["mlflow"]["synced"] is True  # mirrored before the runner returned
    mlflow = cli("runs", "show", record["id"], "--json", "--runs-dir", str(runs))
    assert json.loads(mlflow.stdout)["mlflow"]["synced"] is True


def test_sigkill_then_the_background_mirror_repairs_the_record(tmp_path: Path) -> None:
    """No reader needed: the mirror child sees its runner gone and reconciles the run."""
    runs = tmp_path / "runs"
    proc, run_dir = _start(tmp_path, runs)
    proc.kill()
    proc.wait(timeout=30)
    record = wait_mirrored(run_dir)
    assert record["status"] == "killed" and record["error"]["ename"] == "RunnerDied"
    from nbops.tracking.mlflow import MlflowTracker as Tracker

    tracker = Tracker(record["mlflow"]["tracking_uri"], runs)
    assert tracker.run_status(record["mlflow"]["run_id"]) == "KILLED"
    deadline = time.time() + 10
    while kernels_of(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not kernels_of(run_dir)


def test_sigkill_then_reconcile(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc, run_dir = _start(tmp_path, runs, api=True)  # no mirror child: a reader repairs
    proc.kill()
    proc.wait(timeout=30)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "running"
    listing = cli("runs", "ls", "--json", "--runs-dir", str(runs))
    assert [r["status"] for r in json.loads(listing.stdout)] == ["killed"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "killed" and record["error"]["ename"] == "RunnerDied"
    deadline = time.time() + 10
    while kernels_of(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not kernels_of(run_dir)
    from nbops.tracking.mlflow import MlflowTracker as Tracker

    tracker = Tracker(record["mlflow"]["tracking_uri"], runs)
    assert tracker.run_status(record["mlflow"]["run_id"]) == "KILLED"


def test_verify_after_tampering(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "record.ipynb"), "--json", "--runs-dir", str(runs),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["id"]
    assert cli("runs", "verify", "--runs-dir", str(runs)).returncode == 0
    run_dir = runs / run_id
    (run_dir / "artifacts" / "table.csv").write_text("a,b\n9,9\n")
    (run_dir / "artifacts" / "figures" / "curve.png").unlink()
    (run_dir / "artifacts" / "sneaky.txt").write_text("hi")
    done = cli("runs", "verify", run_id, "--runs-dir", str(runs))
    assert done.returncode == 1
    assert "changed artifacts/table.csv" in done.stdout
    assert "missing artifacts/figures/curve.png" in done.stdout
    assert "unlisted artifacts/sneaky.txt" in done.stdout


@pytest.mark.parametrize("args", [["--help"], ["templates"], ["runs", "ls"],
                                  ["drift", "--help"], ["pipeline", "show",
                                                        "notebooks/pipeline.yaml"]])
def test_light_commands_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    """Commands that need no kernel stay fast: no grammar build, no MLflow, no kernel stack
    (timings are in bench/startup.py; this guards the cause)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "nbops", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "NBOPS_RUNS_DIR": str(tmp_path / "runs")})
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    # lark: the parser rfc3987_syntax builds its grammar with (jsonschema's optional import)
    for heavy in ("lark", "mlflow", "papermill", "pandas", "nbclient", "torch"):
        assert heavy not in imported, f"'nbops {' '.join(args)}' imported {heavy}"


def _notebook(path: Path, *cells: str, params: str | None = None,
              kernel: str | None = "python3") -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel,
                                     "language": "python"}
    if params is not None:
        nb.cells.append(nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_a_missing_kernel_is_refused_not_replaced(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    template = _notebook(tmp_path / "r.ipynb", "1 + 1", kernel="ir")
    done = cli("run", str(template), "--runs-dir", str(runs), cwd=tmp_path)
    assert_usage_error(done, "asks for kernel 'ir'", "not installed", "python3")
    assert not runs.exists()


def test_an_invalid_notebook_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    bad = tmp_path / "bad.ipynb"
    data = json.loads((NOTEBOOKS / "ok.ipynb").read_text())
    data["cells"][1]["cell_type"] = "weird"
    bad.write_text(json.dumps(data))
    done = cli("run", str(bad), "--runs-dir", str(runs), cwd=tmp_path)
    assert_usage_error(done, "fails the notebook schema at cells/1")
    assert not runs.exists()


def test_any_parameter_with_its_import_runs(tmp_path: Path) -> None:
    template = _notebook(tmp_path / "any.ipynb", "import nbops\nnbops.output('x', x)",
                         params="from typing import Any\nx: Any = None  # anything\n")
    done = cli("run", str(template), "-p", "x", "[1, a]", "--json", "--runs-dir",
               str(tmp_path / "runs"), "--tracking-uri", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"]["x"] == [1, "a"]


def test_sigkill_then_reconcile_ends_the_kernels_whole_tree(tmp_path: Path) -> None:
    """A process the kernel started in a session of its own is ended too, and the kernel's
    pid is in the record while the run is still going."""
    runs = tmp_path / "runs"
    template = _notebook(
        tmp_path / "spawns.ipynb",
        "import pathlib, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
        "                         start_new_session=True)\n"
        "pathlib.Path('child.pid').write_text(str(child.pid))",
        "import time\ntime.sleep(600)")
    proc = subprocess.Popen([*NBOPS, "run", str(template), "--runs-dir", str(runs),
                             "--tracking-uri", "none"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    record: dict[str, object] = {}
    while time.time() < deadline and not (tmp_path / "child.pid").exists():
        time.sleep(0.2)
    assert (tmp_path / "child.pid").exists(), "the notebook never started its child"
    (run_json,) = runs.glob("*/run.json")
    record = json.loads(run_json.read_text())
    kernel = record["runner"]["kernel_pid"]  # type: ignore[index]
    assert record["status"] == "running" and kernel_alive(kernel)
    child = int((tmp_path / "child.pid").read_text())
    assert kernel_alive(child)
    proc.kill()
    proc.communicate(timeout=30)
    listing = cli("runs", "ls", "--json", "--runs-dir", str(runs))
    assert [r["status"] for r in json.loads(listing.stdout)] == ["killed"]
    deadline = time.time() + 10
    while (kernel_alive(kernel) or kernel_alive(child)) and time.time() < deadline:
        time.sleep(0.2)
    assert not kernel_alive(kernel) and not kernel_alive(child)


def test_runs_ls_show_compare_read_well_without_json(run_api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    first = run_api("record", {"n_epochs": 2}, runs_dir=runs)
    second = run_api("record", {"n_epochs": 4}, runs_dir=runs)
    other = run_api("ok", {"x": 3}, runs_dir=runs)
    listing = cli("runs", "ls", "--runs-dir", str(runs)).stdout.splitlines()
    assert listing[0].split()[:6] == ["ID", "STAGE", "STATUS", "STARTED", "TIME", "METRICS"]
    assert [line.split()[0] for line in listing[1:]] == [other["id"], second["id"], first["id"]]
    limited = cli("runs", "ls", "--limit", "1", "--runs-dir", str(runs)).stdout
    assert other["id"] in limited and "2 older runs not shown" in limited
    where = cli("runs", "ls", "--where", "params.n_epochs>=3", "--where", "stage=record",
                "--json", "--runs-dir", str(runs))
    assert [r["id"] for r in json.loads(where.stdout)] == [second["id"]]
    bad = cli("runs", "ls", "--where", "accuracy>>1", "--runs-dir", str(runs))
    assert_usage_error(bad, "cannot read --where", "metrics.accuracy>0.9")

    shown = cli("runs", "show", second["id"][:-3], "--runs-dir", str(runs))  # a unique prefix
    assert shown.returncode == 0 and "output:   n_epochs = 4" in shown.stdout
    assert "artifacts/table.csv" in shown.stdout and "models/clf/MLmodel" in shown.stdout
    latest = cli("runs", "show", "latest", "--runs-dir", str(runs))
    assert other["id"] in latest.stdout
    ambiguous = cli("runs", "show", first["id"][:4], "--runs-dir", str(runs))
    assert_usage_error(ambiguous, "matches 3 runs", "give more of the id")

    plot = tmp_path / "loss.png"
    compared = cli("runs", "compare", first["id"], second["id"], "--plot", str(plot),
                   "--runs-dir", str(runs))
    assert compared.returncode == 0, compared.stderr
    row = next(line for line in compared.stdout.splitlines() if line.startswith("param.n_epochs"))
    assert row.split()[1:] == ["2", "4", "*"]
    score = next(line for line in compared.stdout.splitlines() if line.startswith("metric.score"))
    assert not score.endswith("*")  # the same in both
    assert plot.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(cli("runs", "compare", first["id"], second["id"], "--json",
                          "--runs-dir", str(runs)).stdout)
    assert data["rows"]["metric.loss"] == [0.5, 0.25]


def test_a_failing_verdict_looks_like_a_failure(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "fake_evaluate.ipynb"), "-p", "verdict", "fail",
               "--runs-dir", str(runs), "--tracking-uri", "none", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines()[1].startswith("VERDICT:  FAIL")
    shown = cli("runs", "show", "latest", "--runs-dir", str(runs))
    assert "VERDICT:  FAIL" in shown.stdout and "output:   verdict = fail" in shown.stdout
