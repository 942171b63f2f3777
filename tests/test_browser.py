"""The drift report in a real browser: JupyterLab + headless Chromium driven by Playwright.

Chromium comes from Debian (/usr/bin/chromium; scripts/setup.sh installs it); Playwright
never downloads a browser of its own.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, cli, jupyter_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "build" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    from playwright.sync_api import sync_playwright

    with jupyter_server("jupyterlab", home, notebooks) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield {**server, "dir": notebooks, "browser": browser, "home": home}
        browser.close()

def _open(lab: dict[str, Any], name: str) -> Any:
    page = lab["browser"].new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['base']}/lab/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    return page


def _wait_idle(page: Any) -> None:
    """Until the status bar says the notebook's kernel is idle."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => e.textContent.includes('| Idle'))", timeout=60_000)


def _expected_rows(report: dict[str, Any]) -> int:
    return len(report["columns"])


def test_monitor_notebook_runs_and_renders_in_jupyterlab(lab: dict[str, Any]) -> None:
    shutil.copy(ROOT / "templates" / "monitor.ipynb", lab["dir"] / "monitor.ipynb")
    page = _open(lab, "monitor.ipynb")
    _wait_idle(page)
    page.click("text=Run", timeout=10_000)
    page.click("text=Run All Cells", timeout=10_000)
    page.wait_for_selector(".nbops-drift-report .nbops-drift-plot img", timeout=120_000)
    header = page.inner_text(".nbops-drift-report .nbops-drift-header")
    assert "Drift:" in header and "of features drifted" in header
    rows = page.locator(".nbops-drift-report tr.nbops-drift-row").count()
    assert rows == 32  # 30 features, target and segment of the bundled data
    # the verdict is drawn against the policy's tiers; each drifted row says why
    assert page.locator(".nbops-drift-report svg.nbops-drift-bands rect").count() >= 4
    assert "p (adjusted, BH)" in page.inner_text(".nbops-drift-report .nbops-drift-table")
    drifted = page.locator(".nbops-drift-report tr.drifted")
    assert drifted.count() >= 1  # by hand, the template shifts its first column
    for i in range(drifted.count()):
        assert drifted.nth(i).locator(".reason").count() >= 1
    # the screenshot is kept for people to look at (build/ is not tracked)
    page.set_viewport_size({"width": 1400, "height": 1300})
    page.evaluate("document.querySelector('.nbops-drift-report').scrollIntoView()")
    page.wait_for_timeout(500)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "drift-widget.png"))
    page.close()


def test_headless_run_renders_from_stored_widget_state(lab: dict[str, Any]) -> None:
    runs = lab["home"] / "runs"
    done = cli("run", "monitor", "--json", "--runs-dir", str(runs), cwd=lab["home"])
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    executed = runs / record["id"] / "notebook.ipynb"
    assert "application/vnd.jupyter.widget-state+json" in executed.read_text()
    shutil.copy(executed, lab["dir"] / "untrusted.ipynb")  # opened before anyone trusts it
    page = _open(lab, "untrusted.ipynb")
    page.wait_for_selector(".nbops-drift-static table tr.drifted, "
                           ".nbops-drift-report .nbops-drift-plot img", timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "drift-untrusted.png"))
    shown = {"static": page.locator(".nbops-drift-static tr.drifted").count(),
             "widget": page.locator(".nbops-drift-report tr.drifted").count()}
    assert max(shown.values()) >= 1, shown  # readable drifted rows either way
    page.close()
    shutil.copy(executed, lab["dir"] / "executed.ipynb")
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(lab["dir"] / "executed.ipynb")],
                   env=lab["env"], check=True, capture_output=True)
    page = _open(lab, "executed.ipynb")
    page.wait_for_selector(".nbops-drift-report .nbops-drift-plot img", timeout=60_000)
    report = json.loads((runs / record["id"] / "artifacts" / "drift.json").read_text())
    rows = page.locator(".nbops-drift-report tr.nbops-drift-row").count()
    assert rows == _expected_rows(report)
    assert report["action"] in page.inner_text(".nbops-drift-report .nbops-drift-header")
    page.close()

    html = lab["browser"].new_page()
    html.goto((runs / record["id"] / "artifacts" / "drift.html").as_uri())
    assert html.locator("table tr").count() == _expected_rows(report) + 1
    assert "Drift report: action" in html.inner_text("h1")
    assert html.locator("tr.drifted").count() == len(
        [c for c in report["columns"].values() if c["drift"]])
    assert html.locator("figure img").count() >= 1  # per-column plots, drifted first
    html.close()


def test_opening_running_and_saving_a_recorded_notebook_is_harmless(
        lab: dict[str, Any]) -> None:
    """The pipeline invites people to open runs/<id>/notebook.ipynb: opening it in
    JupyterLab, running its cells and saving it must leave the record verifiable, the cache
    intact and the run's folder unwritten; the cells' run is recorded as a new run."""
    import os
    import time

    import yaml

    from conftest import NOTEBOOKS

    runs = lab["dir"] / "recorded"
    pipeline = lab["dir"] / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"stages": {
        "produce": {"template": str(NOTEBOOKS / "produce.ipynb"), "parameters": {"n": 3}},
        "consume": {"template": str(NOTEBOOKS / "consume.ipynb"), "parameters": {
            "path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}}}}))
    done = cli("pipeline", "run", str(pipeline), "--json", "--runs-dir", str(runs),
               "--tracking-uri", "none", cwd=lab["dir"])
    assert done.returncode == 0, done.stderr
    stages = json.loads(done.stdout)["stages"]
    run_id = stages["produce"]["run_id"]
    folder = runs / run_id
    notebook = folder / "notebook.ipynb"
    assert json.loads(notebook.read_text())["metadata"]["nbops"]["record"] == run_id
    kept = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}
    before = os.stat(notebook).st_mtime_ns
    page = _open(lab, f"recorded/{run_id}/notebook.ipynb")
    _wait_idle(page)
    page.click("text=Run", timeout=10_000)
    page.click("text=Run All Cells", timeout=10_000)
    page.wait_for_selector("text=records a new run", timeout=60_000)
    _wait_idle(page)
    page.click(".jp-Notebook")  # (a click below the last cell adds an empty cell: harmless)
    page.keyboard.press("Control+s")
    deadline = time.time() + 30
    while time.time() < deadline and os.stat(notebook).st_mtime_ns == before:
        time.sleep(0.2)
    page.close()
    assert os.stat(notebook).st_mtime_ns != before  # JupyterLab did rewrite the copy
    now = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}
    assert {str(p) for p in now - kept} <= {".ipynb_checkpoints/notebook-checkpoint.ipynb"}
    verified = cli("runs", "verify", run_id, stages["consume"]["run_id"], "--runs-dir",
                   str(runs))
    assert verified.returncode == 0, verified.stdout
    show = cli("pipeline", "show", str(pipeline), "--runs-dir", str(runs), cwd=lab["dir"])
    assert show.returncode == 0 and show.stdout.count("cached (run") == 2, show.stdout
    # the cells' run is a new record, in the runs folder in force (here the server's
    # NBOPS_RUNS_DIR; without it, beside the recorded run)
    configured = Path(lab["env"]["NBOPS_RUNS_DIR"])
    assert [p.name for p in configured.glob("*-produce-*")], list(configured.iterdir())
