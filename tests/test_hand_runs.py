"""Hand runs: a notebook run by hand in a real kernel, its cells sent as JupyterLab sends
them (each with its cell id and metadata). Each Run All records a run of its own; a hand run
ends (finalized, mirrored) on ``nbops.end_run()`` or when the kernel stops; ``runs verify``
leaves a live run alone and ``runs sync`` says what it did."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager

from conftest import ROOT, cli, wait_mirrored


class Lab:
    """A kernel for one notebook, as JupyterLab starts it (``JPY_SESSION_NAME``)."""

    def __init__(self, notebook: Path, runs: Path) -> None:
        env = {**os.environ, "JPY_SESSION_NAME": str(notebook), "NBOPS_RUNS_DIR": str(runs),
               "PYTHONPATH": str(ROOT / "lib")}
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(notebook.parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def execute(self, cell: Any) -> tuple[str, str]:
        """Run one cell; its reply status and the text it printed."""
        msg = self.kc.session.msg("execute_request", {
            "code": cell.source, "silent": False, "store_history": True,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            metadata={**cell.metadata, "cellId": cell.id})  # as JupyterLab's CodeCell does
        self.kc.shell_channel.send(msg)
        msg_id, printed = msg["header"]["msg_id"], []
        while True:
            out = self.kc.get_iopub_msg(timeout=240)
            if out["parent_header"].get("msg_id") != msg_id:
                continue
            if out["msg_type"] == "stream":
                printed.append(out["content"]["text"])
            if out["msg_type"] == "status" and out["content"]["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=240)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]["status"], "".join(printed)

    def run_all(self, notebook: Any) -> list[str]:
        """Run All: every cell in order, stopping at the first error."""
        statuses = []
        for cell in notebook.cells:
            status, _ = self.execute(cell)
            statuses.append(status)
            if status != "ok":
                break
        return statuses

    def shutdown(self, now: bool = False) -> None:
        """As Jupyter stops a kernel: a shutdown request, SIGTERM at 2.5 s, SIGKILL at 5 s
        (``now``: SIGKILL at once)."""
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=now)


@pytest.fixture
def lab_factory() -> Iterator[Any]:
    labs: list[Lab] = []

    def make(notebook: Path, runs: Path) -> Lab:
        labs.append(Lab(notebook, runs))
        return labs[-1]

    yield make
    for lab in labs:
        if lab.km.has_kernel:
            lab.shutdown(now=True)


def notebook(tmp_path: Path, *cells: str, tagged: bool = True) -> tuple[Path, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["nbops"] = {"stage": "handtrain"}
    nb.cells = [nbformat.v4.new_code_cell(
        cells[0], metadata={"tags": ["parameters"]} if tagged else {})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells[1:]]
    path = tmp_path / "hand.ipynb"
    nbformat.write(nb, path)
    return path, nb


def records(runs: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in runs.glob("*/run.json")]
    return sorted(found, key=lambda r: r["started_at_epoch"])


def tracked(runs: Path, record: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(record["mlflow"]["tracking_uri"]).get_run(record["mlflow"]["run_id"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_run_all_is_a_run_of_its_own_mirrored_when_the_kernel_stops(
        tmp_path: Path, lab_factory: Any) -> None:
    runs = tmp_path / "runs"
    path, nb = notebook(tmp_path, "lr: float = 0.1",
                        "import nbops\nnbops.log_metric('train_accuracy', 0.5 + lr)")
    lab = lab_factory(path, runs)
    assert lab.km.shutdown_wait_time == 5.0  # Jupyter's: SIGTERM at half of it, then SIGKILL
    assert lab.run_all(nb) == ["ok", "ok"]
    nb.cells[0].source = "lr: float = 0.2"  # the person edits the parameters, then Run All
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('bad data')"))
    assert lab.run_all(nb) == ["ok", "ok", "error"]
    done, live = records(runs)
    assert (done["status"], live["status"]) == ("succeeded", "running")
    lab.shutdown()
    done, ended = records(runs)
    assert ended["id"] == live["id"] and ended["status"] == "failed"  # its last cell raised
    assert ended["error"]["ename"] == "ValueError" and "bad data" in ended["error"]["message"]
    for record, value in ((done, 0.6), (ended, 0.7)):
        assert [(p["step"], p["value"]) for p in record["metric_history"]["train_accuracy"]] \
            == [(0, pytest.approx(value))]
        mirrored = tracked(runs, wait_mirrored(runs / record["id"], timeout=300))
        assert mirrored.info.status == ("FINISHED" if record is done else "FAILED")
        assert mirrored.data.metrics["train_accuracy"] == pytest.approx(value)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_live_hand_run_is_running_not_checked_and_sync_says_what_it_did(
        tmp_path: Path, lab_factory: Any) -> None:
    runs = tmp_path / "runs"
    path, nb = notebook(tmp_path, "lr: float = 0.1",
                        "import nbops\nnbops.log_metric('train_accuracy', 0.5 + lr)")
    lab = lab_factory(path, runs)
    assert lab.run_all(nb) == ["ok", "ok"]
    [live] = records(runs)
    verified = cli("runs", "verify", "--runs-dir", str(runs))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.splitlines() == [f"{live['id']}: running, not checked",
                                            "all artifacts of finished runs match their records"]
    synced = cli("runs", "sync", "--runs-dir", str(runs))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert synced.stdout.splitlines() == [
        f"{live['id']}  running: skipped, mirrored when it ends", "1 running (skipped)"]
    status, printed = lab.execute(nb.cells[0])  # Run All again: the live run ends
    assert status == "ok" and printed.startswith(f"nbops: run {live['id']} ended (succeeded)")
    record = wait_mirrored(runs / live["id"], timeout=300)
    again = cli("runs", "sync", live["id"], "--runs-dir", str(runs))
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"{live['id']}  already synced, MLflow run {record['mlflow']['run_id']}",
        "1 already synced: every finished run named is mirrored"]
    assert cli("runs", "verify", "--runs-dir", str(runs)).stdout.splitlines() == [
        "all artifacts match their records"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_end_run_finalizes_and_mirrors_and_a_killed_kernel_leaves_a_killed_run(
        tmp_path: Path, lab_factory: Any) -> None:
    """No parameters cell: the first code cell starts the notebook over."""
    runs = tmp_path / "runs"
    path, nb = notebook(tmp_path, "import nbops", "nbops.log_metric('loss', 0.25)",
                        "nbops.end_run()", tagged=False)
    lab = lab_factory(path, runs)
    assert lab.run_all(nb) == ["ok", "ok", "ok"]
    [ended] = records(runs)  # end_run returned: the run is final and mirrored
    assert ended["status"] == "succeeded" and ended["mlflow"]["synced"] is True
    assert tracked(runs, ended).data.metrics == {"loss": 0.25}
    assert lab.execute(nb.cells[1])[0] == "ok"  # recording again opens a new run
    assert lab.execute(nb.cells[0])[1].startswith("nbops: run ")  # Run All: it ends
    assert lab.execute(nb.cells[1])[0] == "ok"
    lab.shutdown(now=True)  # SIGKILL: no exit handler runs
    first, second, killed = records(runs)
    assert (first["id"], second["status"]) == (ended["id"], "succeeded")
    record = wait_mirrored(runs / killed["id"], timeout=300)  # by the kernel's mirror process
    assert record["status"] == "killed"
    assert tracked(runs, record).info.status == "KILLED"


def test_the_first_cell_is_known_by_its_tags_its_id_or_its_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.records.interactive import starts_over

    path, nb = notebook(tmp_path, "a = 1", "b = 2")
    assert starts_over("anything", None, {"tags": ["parameters"]})  # the front end says
    assert not starts_over("a = 1", None, {})  # no notebook known, no tag sent
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    assert starts_over("a = 1 ", nb.cells[0].id, {})  # by id (JupyterLab, VS Code)
    assert not starts_over("a = 1", nb.cells[1].id, {})
    assert starts_over("a = 1\n", None, None)  # by source (a front end without ids)
    assert not starts_over("b = 2", None, None)
    path, nb = notebook(tmp_path, "x = 1", "y = 2", tagged=False)  # no parameters cell
    assert starts_over("x = 1", nb.cells[0].id, {}) and not starts_over("y = 2", None, {})


def test_end_run_chooses_the_status_and_the_next_call_opens_a_new_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import nbops\nnbops.log_metric('m', 1)\nnbops.end_run('failed')\n"
            "nbops.log_metric('m', 2)\n")  # the second run ends when the interpreter exits
    env = {**os.environ, "NBOPS_RUNS_DIR": str(tmp_path / "runs"),
           "MLFLOW_TRACKING_URI": "none", "PYTHONPATH": str(ROOT / "lib")}
    env.pop("JPY_SESSION_NAME", None)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    first, second = records(tmp_path / "runs")
    assert (first["status"], second["status"]) == ("failed", "succeeded")
    assert [first["metrics"], second["metrics"]] == [{"m": 1.0}, {"m": 2.0}]


@pytest.mark.slow
def test_sync_says_what_it_did_to_each_run(tmp_path: Path) -> None:
    from nbops.records.lifecycle import finalize, new_record
    from nbops.records.store import RunStore
    from nbops.tracking.uri import default_uri

    runs = tmp_path / "runs"
    store = RunStore(runs)

    def finished(uri: str) -> str:
        record = new_record("made", tmp_path, template=None, parameters={})
        record["mlflow"] = {"tracking_uri": uri, "experiment_id": None, "run_id": None,
                            "synced": False}
        store.create(record)
        finalize(store, record, "succeeded", None)
        return str(record["id"])

    mirrored, untracked = finished(default_uri(runs)), finished("none")
    first = cli("runs", "sync", "--runs-dir", str(runs))
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = json.loads((runs / mirrored / "run.json").read_text())["mlflow"]["run_id"]
    not_tracked = f"{untracked}  not tracked (recorded with --tracking-uri none)"
    assert first.stdout.splitlines() == [f"{mirrored}  synced now, MLflow run {run_id}",
                                         "1 synced now, 1 not tracked"]
    again = cli("runs", "sync", "--runs-dir", str(runs))  # all runs: these two are counted
    assert again.stdout.splitlines() == ["1 already synced, 1 not tracked"]
    named = cli("runs", "sync", untracked, mirrored, "--runs-dir", str(runs))
    assert named.stdout.splitlines() == [not_tracked,
                                         f"{mirrored}  already synced, MLflow run {run_id}",
                                         "1 already synced, 1 not tracked"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_all_twice_in_jupyterlab_records_two_runs(tmp_path: Path) -> None:
    """The same in JupyterLab in a real browser: Run All Cells twice, then the kernel is
    shut down from the server (as its Shut Down Kernel menu does)."""
    import shutil
    import time
    import urllib.request

    from playwright.sync_api import sync_playwright

    from conftest import jupyter_server

    folder = tmp_path / "notebooks"
    folder.mkdir()
    path, _ = notebook(folder, "lr: float = 0.1",
                       "import nbops\nnbops.log_metric('train_accuracy', 0.5 + lr)")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with jupyter_server("jupyterlab", tmp_path, folder) as server, sync_playwright() as pw:
        runs = Path(server["env"]["NBOPS_RUNS_DIR"])
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server['base']}/lab/tree/hand.ipynb?reset&token={server['token']}")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        idle = ("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                ".some(e => e.textContent.includes('| Idle'))")
        page.wait_for_function(idle, timeout=120_000)
        for count in (1, 2):
            page.click("text=Run", timeout=10_000)
            page.click("text=Run All Cells", timeout=10_000)
            deadline = time.time() + 120  # until this Run All's metric is recorded
            while time.time() < deadline and not (
                    len(records(runs)) >= count
                    and (runs / records(runs)[-1]["id"] / "events.jsonl").is_file()):
                time.sleep(0.3)
            page.wait_for_function(idle, timeout=120_000)
        first, second = records(runs)
        assert (first["status"], second["status"]) == ("succeeded", "running")
        assert page.locator(f"text=nbops: run {first['id']} ended (succeeded)").count() == 1
        api = f"{server['base']}/api/kernels?token={server['token']}"
        [kernel] = json.loads(urllib.request.urlopen(api, timeout=30).read())
        urllib.request.urlopen(urllib.request.Request(
            f"{server['base']}/api/kernels/{kernel['id']}?token={server['token']}",
            method="DELETE"), timeout=60)
        browser.close()
    for record in records(runs):
        record = wait_mirrored(runs / record["id"], timeout=300)
        assert record["status"] == "succeeded"
        assert [p["step"] for p in record["metric_history"]["train_accuracy"]] == [0]
