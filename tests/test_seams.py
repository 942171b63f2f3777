"""The extension points: stage tasks as data, schedulers, plugins by entry point, the
tracker protocol, pipeline records validated on read, the model registry library."""
from __future__ import annotations

import json
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import NOTEBOOKS, cli
from nbops.errors import RecordError, RegistryError, UnknownNameError
from nbops.pipeline.scheduler import get_scheduler
from nbops.pipeline.task import StageTask, run_task
from nbops.util.registry import Registry


def produce_task(tmp_path: Path) -> StageTask:
    return StageTask(stage="produce", template_path=NOTEBOOKS / "produce.ipynb",
                     parameters={"n": 3}, cwd=tmp_path, runs_dir=tmp_path / "runs",
                     pipeline={"run_id": "p-1", "stage": "produce", "cache_key": "k"},
                     tracking_uri="none")


def test_stage_task_is_plain_data(tmp_path: Path) -> None:
    task = produce_task(tmp_path)
    assert pickle.loads(pickle.dumps(task)) == task


@pytest.mark.slow
def test_stage_task_runs_in_another_process(tmp_path: Path) -> None:
    """What a remote worker does: receive the pickled task, run it, send the record back."""
    task = produce_task(tmp_path)
    context = multiprocessing.get_context("spawn")  # nothing inherited from this process
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        record = pool.submit(run_task, task).result(timeout=240)
    assert record["status"] == "succeeded", record["error"]
    assert record["pipeline"] == task.pipeline and record["outputs"]["total"] == 3
    assert record["runner"]["pid"] != __import__("os").getpid()


def test_unknown_scheduler_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="Known schedulers: dask, threads"):
        get_scheduler("ray", 2)


def test_plugins_load_lazily_by_entry_point_and_a_broken_one_warns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "nbops_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nbops-plugin-demo\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[nbops.test_things]\ngood = nbops_plugin_demo:make\nbroken = no_such_module:make\n")
    (tmp_path / "nbops_plugin_demo.py").write_text("def make():\n    return 'made by plugin'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[str] = Registry("thing", "nbops.test_things")
    registry.register("builtin", lambda: "built in")
    with pytest.warns(UserWarning, match="cannot load thing plugin 'broken'"):
        assert registry.get("good")() == "made by plugin"
    assert registry.names() == ["builtin", "good"]
    assert "nbops_plugin_demo" in sys.modules


@pytest.mark.slow
def test_tracking_none_keeps_records_only(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--json", "--runs-dir", str(runs),
               "--tracking-uri", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["mlflow"]["tracking_uri"] == "none" and record["mlflow"]["run_id"] is None
    assert not (runs / "mlflow.db").exists()


@pytest.mark.slow
def test_pipeline_records_are_validated_on_read(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "one", "stages": {
        "produce": {"template": str(NOTEBOOKS / "produce.ipynb"), "parameters": {"n": 2}}}}))
    runs = tmp_path / "runs"
    done = cli("pipeline", "run", str(path), "--json", "--runs-dir", str(runs),
               "--tracking-uri", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pipeline_id = json.loads(done.stdout)["id"]
    listing = cli("pipeline", "ls", "--json", "--runs-dir", str(runs))
    assert [p["id"] for p in json.loads(listing.stdout)] == [pipeline_id]

    from nbops.records.pipelines import PipelineStore

    store = PipelineStore(runs)
    file = store.path(pipeline_id)
    record = json.loads(file.read_text())
    file.write_text(json.dumps({**record, "status": "exploded"}))
    with pytest.raises(RecordError, match="invalid at status"):
        store.read(pipeline_id)
    file.write_text(json.dumps({**record, "schema": "nbops.pipeline/9"}))
    with pytest.raises(RecordError, match="upgrade nbops"):
        store.read(pipeline_id)
    listing = cli("pipeline", "ls", "--runs-dir", str(runs))
    assert listing.returncode == 0 and "skipped" in listing.stderr


@pytest.mark.slow
def test_model_registry_register_promote_rollback(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    uri = default_uri(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run_ids = [client.create_run(experiment).info.run_id for _ in range(3)]
    versions = [registry.register_version("m", run_id=r, artifact_path="models/model",
                                          tags={"nbops.k": str(i)}, tracking_uri=uri)
                for i, r in enumerate(run_ids)]
    assert versions == [1, 2, 3]
    found = registry.version_by_alias("m", "challenger", tracking_uri=uri)
    assert found is not None and found["version"] == 3 and found["tags"]["nbops.k"] == "2"
    assert registry.version_by_alias("m", "champion", tracking_uri=uri) is None
    registry.promote("m", 1, reason="first", tracking_uri=uri)
    registry.promote("m", 3, tracking_uri=uri)
    assert registry.version_by_alias("m", "champion", tracking_uri=uri)["version"] == 3
    assert registry.rollback("m", tracking_uri=uri) == 1
    assert registry.version_by_alias("m", "champion", tracking_uri=uri)["version"] == 1
    moves = registry.alias_history("m", "champion", tracking_uri=uri)
    assert [(m["version"], m["previous"]) for m in moves] == [(1, None), (3, 1), (1, 3)]
    assert moves[0]["reason"] == "first" and moves[2]["reason"] == "rollback from v3"
    with pytest.raises(RegistryError, match="no version 9"):
        registry.promote("m", 9, tracking_uri=uri)
    registry.register_version("solo", run_id=run_ids[0], artifact_path="models/model",
                              tags={}, alias="champion", tracking_uri=uri)
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("solo", tracking_uri=uri)
    with pytest.raises(RegistryError, match="no registered model 'ghost'"):
        registry.rollback("ghost", tracking_uri=uri)


def test_thread_budget_divides_the_cores_and_the_users_choice_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.util.envvars import THREAD_VARS, thread_budget, thread_env

    assert [thread_budget(n, cores=2) for n in (1, 2, 3, 8)] == [2, 1, 1, 1]
    assert thread_budget(2, cores=16) == 8 and thread_budget(0, cores=4) == 4
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    assert thread_env(None) == {}
    assert thread_env(3) == {var: "3" for var in THREAD_VARS}
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert "OMP_NUM_THREADS" not in thread_env(3) and thread_env(3)["MKL_NUM_THREADS"] == "3"


@pytest.mark.slow
def test_parallel_stages_get_their_share_of_the_cores_and_driver_mirror_defers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stages at once on C cores: each kernel sees C // 2 threads; a task run with
    mirror="driver" leaves its record for the submitter to mirror."""
    import os

    from nbops.util.envvars import THREAD_VARS

    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    spec = {"name": "env", "stages": {
        "a": {"template": str(NOTEBOOKS / "env.ipynb"), "parameters": {"marker": "a"}},
        "b": {"template": str(NOTEBOOKS / "env.ipynb"), "parameters": {"marker": "b"}}}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    result = cli("pipeline", "run", "pipeline.yaml", "--jobs", "2", "--runs-dir", "runs",
                 "--tracking-uri", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    want = str(max(1, (os.cpu_count() or 1) // 2))
    for run_dir in (tmp_path / "runs").glob("env-*"):
        threads = json.loads((run_dir / "run.json").read_text())["outputs"]["threads"]
        assert set(threads.values()) == {want}, threads
    task = StageTask(stage="env", template_path=NOTEBOOKS / "env.ipynb", parameters={},
                     cwd=tmp_path, runs_dir=tmp_path / "runs2",
                     pipeline={"run_id": "p-2", "stage": "env", "cache_key": "k2"},
                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", mirror="driver")
    record = run_task(task)
    assert record["status"] == "succeeded"
    assert record["mlflow"] is not None and record["mlflow"]["run_id"] is None
    assert not record["mlflow"]["synced"] and not (tmp_path / "mlflow.db").exists()
