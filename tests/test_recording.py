"""The in-notebook API: cheap to import, and the same notebook works without a runner."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HEAVY = ("mlflow", "papermill", "pandas", "sklearn", "nbformat", "jsonschema", "yaml", "numpy")


def test_import_is_cheap() -> None:
    code = ("import sys, time; t = time.perf_counter(); import nbops; "
            "dt = time.perf_counter() - t; "
            f"print([m for m in {HEAVY!r} if m in sys.modules]); print(dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]"  # nothing heavy comes with `import nbops`


@pytest.mark.slow
def test_interactive_mode_writes_its_own_record(tmp_path: Path) -> None:
    code = (
        "import nbops\n"
        "nbops.log_metric('m', 1.5)\n"
        "nbops.log_metric('m', 2.5)\n"
        "nbops.log_params(alpha=0.3)\n"
        "nbops.output('answer', {'k': [1, 2]})\n"
        "open('f.txt', 'w').write('x')\n"
        "nbops.log_artifact('f.txt')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "NBOPS_RUNS_DIR": str(tmp_path / "runs"), "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    [run_json] = (tmp_path / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["stage"] == "interactive" and record["status"] == "succeeded"
    assert record["metrics"] == {"m": 2.5}
    assert [p["step"] for p in record["metric_history"]["m"]] == [0, 1]
    assert record["outputs"] == {"answer": {"k": [1, 2]}}
    assert record["logged_params"] == {"alpha": 0.3}
    assert "artifacts/f.txt" in {a["path"] for a in record["artifacts"]}
    assert record["mlflow"]["synced"] is True


@pytest.mark.slow
def test_a_notebook_run_by_hand_is_recorded_under_its_stage(tmp_path: Path) -> None:
    """Jupyter tells the kernel which notebook it runs (JPY_SESSION_NAME): the record takes
    that notebook's stage and hash, is mirrored, and is listed with its stage."""
    import shutil

    from conftest import NOTEBOOKS, cli

    notebook = tmp_path / "train_by_hand.ipynb"
    shutil.copy(NOTEBOOKS / "record.ipynb", notebook)  # nbops.stage: record
    code = "import nbops\nnbops.log_metric('score', 0.75)\n"
    env = {"PATH": "/usr/bin:/bin", "NBOPS_RUNS_DIR": str(tmp_path / "runs"),
           "HOME": str(tmp_path), "JPY_SESSION_NAME": str(notebook)}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    [run_json] = (tmp_path / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["stage"] == "record" and "-record-" in record["id"]
    assert record["template"]["path"] == str(notebook)
    assert record["mlflow"]["synced"] is True
    listed = cli("runs", "ls", "--stage", "record", "--json", "--runs-dir",
                 str(tmp_path / "runs"))
    assert [r["id"] for r in json.loads(listed.stdout)] == [record["id"]]


@pytest.mark.slow
def test_logging_a_model_again_replaces_it(tmp_path: Path) -> None:
    """Run All twice in one kernel: the second log_model of a name wins, no traceback."""
    code = (
        "import nbops\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "for c in (0.01, 100.0):  # the same cells run twice\n"
        "    model = LogisticRegression(C=c).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
        "    nbops.log_model(model, 'clf')\n"
        "print(nbops.current_run_id())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "NBOPS_RUNS_DIR": str(tmp_path / "runs"),
           "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "none"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    import nbops

    run = nbops.load_run(done.stdout.split()[-1], runs_dir=tmp_path / "runs")
    assert list(run.record["models"]) == ["clf"]
    assert run.load_model("clf").C == 100.0
    assert not [p for p in (run.path / "models").iterdir() if p.name.startswith(".")]
    assert nbops.load_run(run.id, runs_dir=tmp_path / "runs").status == "succeeded"


def test_bad_calls_raise_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbops
    from nbops import kernel_api as recording

    monkeypatch.setitem(recording._state, "run_dir", tmp_path)
    with pytest.raises(ValueError, match="invalid metric name"):
        nbops.log_metric("../escape", 1)
    with pytest.raises(TypeError, match="must be a number"):
        nbops.log_metric("m", "high")
    with pytest.raises(TypeError, match="not a JSON-like value"):
        nbops.output("o", object())
    with pytest.raises(FileNotFoundError):
        nbops.log_artifact(tmp_path / "nope")
    monkeypatch.setitem(recording._state, "run_dir", None)


json_leaf = (st.none() | st.booleans() | st.integers()
             | st.floats(allow_nan=True, allow_infinity=True) | st.text())
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(json_values, min_size=5, max_size=10))
def test_values_round_trip_through_a_real_kernel(run_api, values: list[Any]) -> None:  # type: ignore[no-untyped-def]
    record = run_api("echo", {"a": values, "l": values})
    assert record["status"] == "succeeded", record["error"]
    echoed = record["outputs"]["echo"]
    assert same(echoed["a"], values) and same(echoed["l"], values)
