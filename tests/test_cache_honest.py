"""An honest pipeline cache: what a stage reads outside its inputs is part of its key,
files are keyed by content, and ``pipeline show`` predicts what ``pipeline run`` does."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import NOTEBOOKS, cli

pytestmark = pytest.mark.slow
CONSUME = str(NOTEBOOKS / "consume.ipynb")


def _write(tmp_path: Path, stages: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "honest", "stages": stages}))
    return path


def _registry_pipeline(tmp_path: Path) -> Path:
    """reg (reads the whole model m, registers into it) -> pick (reads m@champion and
    writes what that version holds) -> consume."""
    return _write(tmp_path, {
        "reg": {"template": str(NOTEBOOKS / "fake_register.ipynb")},
        "pick": {"template": str(NOTEBOOKS / "fake_pick.ipynb"), "after": ["reg"]},
        "consume": {"template": CONSUME, "parameters": {
            "path": "${pick.outputs.path}", "total": "${pick.outputs.total}"}}})


def _file_pipeline(tmp_path: Path) -> Path:
    """count (reads a local file, a Path parameter) -> tail; produce -> consume."""
    (tmp_path / "input.txt").write_text("1\n2\n3\n")
    return _write(tmp_path, {
        "count": {"template": str(NOTEBOOKS / "fake_count.ipynb"),
                  "parameters": {"source": "input.txt"}},
        "tail": {"template": CONSUME, "parameters": {
            "path": "${count.outputs.path}", "total": "${count.outputs.total}"}},
        "produce": {"template": str(NOTEBOOKS / "produce.ipynb"), "parameters": {"n": 3}},
        "consume": {"template": CONSUME, "parameters": {
            "path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}}})


def _show(file: Path, *args: str) -> dict[str, Any]:
    done = cli("pipeline", "show", str(file), "--json", "--runs-dir",
               str(file.parent / "runs"), *args, cwd=file.parent,
               env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 0, done.stderr
    stages: dict[str, Any] = json.loads(done.stdout)["stages"]
    return stages


def _run(file: Path, *args: str) -> dict[str, Any]:
    done = cli("pipeline", "run", str(file), "--json", "--runs-dir", str(file.parent / "runs"),
               *args, cwd=file.parent, env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def _scenario(file: Path, ran: set[str], *args: str) -> dict[str, Any]:
    """Predict, run, and check that the run did what ``show`` said and ran exactly
    ``ran``; a stage predicted "decide" must wait for upstream stages not predicted cached."""
    predicted = _show(file, *args)
    record = _run(file, *args)
    outcome = {n for n, s in record["stages"].items() if not s["cached"]}
    assert outcome == ran, (args, predicted)
    for name, guess in predicted.items():
        stage = record["stages"][name]
        if guess["will"] == "cache":
            assert stage["cached"] and stage["run_id"] == guess["run_id"], (name, guess)
        elif guess["will"] == "run":
            assert not stage["cached"], (name, guess)
        else:
            assert guess["will"] == "decide" and guess["waits_for"], (name, guess)
            assert all(predicted[w]["will"] != "cache" for w in guess["waits_for"])
    return predicted


def _registry(file: Path) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{file.parent / 'runs' / 'mlflow.db'}"
    return MlflowClient(uri), uri


def _register(file: Path, content: str) -> int:
    from nbops.tracking import registry

    client, uri = _registry(file)
    experiment = client.get_experiment_by_name("cache-test").experiment_id
    run_id = client.create_run(experiment).info.run_id
    return registry.register_version("m", run_id=run_id, artifact_path="models/model",
                                     tags={"content": content}, alias=None, tracking_uri=uri)


def _move(file: Path, alias: str, version: int) -> None:
    from nbops.tracking import registry

    registry.promote("m", version, alias, reason="test", tracking_uri=_registry(file)[1])


@pytest.mark.timeout(600)  # a dozen pipeline runs: 3-4 min on a loaded 2-core machine
def test_registry_reads_are_keyed_and_predicted(tmp_path: Path) -> None:
    file = _registry_pipeline(tmp_path)
    fresh = _scenario(file, {"reg", "pick", "consume"})
    # nothing ran here yet: every stage will run, and show knows it
    assert [(fresh[n]["will"], fresh[n]["reason"]) for n in ("reg", "pick")] == [
        ("run", "no earlier run with these inputs"), ("run", "no earlier run of its template")]
    # reg changed what it reads (it registered v1 and made it champion): it is cached under
    # the state its run left, which its record keeps
    first = _run(file, "--force")
    state = json.loads((tmp_path / "runs" / first["stages"]["reg"]["run_id"] / "run.json"
                        ).read_text())["pipeline"]["reads"]
    assert [s["read"] for s in state] == [{"kind": "registry", "model": "m"}]
    assert state[0]["aliases"] == {"champion": 1} and list(state[0]["versions"]) == ["1"]

    # unchanged: nothing runs, and the run says so
    assert {p["will"] for p in _show(file).values()} == {"cache"}
    done = cli("pipeline", "run", str(file), "--runs-dir", str(tmp_path / "runs"),
               cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 0, done.stderr
    assert "everything up to date: all 3 stages from the cache, none ran" in done.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in done.stdout  # where to look
    assert "running" not in done.stderr and "reg: cached from run" in done.stderr

    # an alias only reg reads moves: reg runs (and finds its version again); pick reads
    # only the champion and stays cached
    _move(file, "challenger", 1)
    moved = _scenario(file, {"reg"})
    assert moved["reg"]["reason"].startswith("what it reads changed since run ")
    assert "challenger=v1" in moved["reg"]["reason"]

    # the champion moves to another version with the same content: pick runs and writes
    # the same bytes to a new file; consume is not run again
    _move(file, "champion", _register(file, "5"))
    moved = _scenario(file, {"reg", "pick"})
    assert moved["pick"]["will"] == "decide" and moved["pick"]["waits_for"] == ["reg"]
    # ... and to one with other content: consume runs too
    _move(file, "champion", _register(file, "7"))
    record = _run(file)
    assert {n for n, s in record["stages"].items() if not s["cached"]} == {
        "reg", "pick", "consume"}
    assert record["stages"]["consume"]["reason"] == "no earlier run with these inputs"


@pytest.mark.timeout(600)  # a dozen pipeline runs: 3-4 min on a loaded 2-core machine
def test_files_by_content_parameters_and_force_are_predicted(tmp_path: Path) -> None:
    file = _file_pipeline(tmp_path)
    everything = {"count", "tail", "produce", "consume"}
    _scenario(file, everything)
    assert {p["will"] for p in _show(file).values()} == {"cache"}

    changed = _scenario(file, {"consume"}, "-p", "consume.factor", "5")  # a parameter
    assert changed["consume"]["reason"] == "no earlier run with these inputs"

    (tmp_path / "input.txt").write_text("1\n2\n4\n")  # an input file changed in place
    text = cli("pipeline", "show", str(file), "--runs-dir", str(tmp_path / "runs"),
               cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""}).stdout
    assert "count [fake_count]: will run (no earlier run with these inputs)" in text
    assert ("tail [consume] <- count: decided once count ran: runs if what it receives "
            "changes") in text
    assert "produce [produce]: cached (run " in text
    _scenario(file, {"count", "tail"})

    forced = _scenario(file, everything, "--force")
    assert {(p["will"], p["reason"]) for p in forced.values()} == {("run", "--force")}
    assert {p["will"] for p in _show(file).values()} == {"cache"}


@pytest.mark.parametrize("reads, needle", [
    ({"kind": "registry", "model": "name"}, "must be a list"),
    ([{"kind": "files", "model": "model_name"}], "kind one of registry"),
    ([{"kind": "registry"}], "needs 'model'"),
    ([{"kind": "registry", "model": "model_nam"}],
     "'model' must name a parameter of the template, got 'model_nam' (parameters: alias, "
     "model_name). Did you mean 'model_name'?"),
    ([{"kind": "registry", "model": "model_name", "stage": "x"}], "unknown fields ['stage']"),
])
def test_a_bad_reads_declaration_is_refused_naming_it(tmp_path: Path, reads: Any,
                                                      needle: str) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["nbops"] = {"stage": "infer", "outputs": [], "reads": reads}
    notebook.cells = [nbformat.v4.new_code_cell(
        'model_name: str = "m"  # model\nalias: str = "champion"  # alias',
        metadata={"tags": ["parameters"]})]
    path = tmp_path / "bad.ipynb"
    nbformat.write(notebook, path)
    done = cli("run", str(path), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nbops.reads" in done.stderr and needle in done.stderr, done.stderr


def test_a_store_that_cannot_be_read_makes_the_stage_run(tmp_path: Path) -> None:
    """Never served from the cache on an unverified registry: the reason says why."""
    from nbops.pipeline.cache import Lookup
    from nbops.pipeline.predict import predict
    from nbops.pipeline.spec import load
    from nbops.records.store import RunStore

    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    file = _write(tmp_path, {"pick": {"template": str(NOTEBOOKS / "fake_pick.ipynb")}})
    lookup = Lookup(RunStore(tmp_path / "runs"), f"sqlite:///{tmp_path / 'mlflow.db'}",
                    tmp_path)
    found = predict(load(file), lookup)["pick"]
    assert found.will == "run" and found.reason.startswith("what it reads cannot be read now")
