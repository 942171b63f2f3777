"""Run-folder integrity at any depth, symlinks, internal names, and bad records that must
not break listings (records built directly: no kernel)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import cli
from nbops.errors import ModelIntegrityError, RecordError
from nbops.models import verify_model_files
from nbops.records.integrity import hash_artifacts, verify
from nbops.records.lifecycle import finalize, new_record
from nbops.records.queries import list_records
from nbops.records.store import RunStore


def finished(store: RunStore, files: dict[str, str], stage: str = "train") -> str:
    """A succeeded record whose run folder holds ``files`` (relative path -> text)."""
    record = new_record(stage, store.root, template=None, parameters={})
    run_dir = store.create(record)
    for rel, text in files.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    finalize(store, record, "succeeded", None)
    return record["id"]


def test_names_nbops_uses_never_hide_user_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/config/run.json": "{}", "artifacts/deps.lock": "x",
                              "artifacts/a/b/c/d/deep.txt": "d", "artifacts/.x.tmp": "t"})
    listed = {a["path"] for a in store.read(run_id)["artifacts"]}
    assert {"artifacts/config/run.json", "artifacts/deps.lock", "artifacts/a/b/c/d/deep.txt",
            "artifacts/.x.tmp"} <= listed
    assert "run.json" not in listed
    (store.path(run_id) / "artifacts/config/run.json").write_text('{"tampered": 1}')
    (store.path(run_id) / "artifacts/deps.lock").unlink()
    problems = verify(store.path(run_id), store.read(run_id))
    assert any("changed artifacts/config/run.json" in p for p in problems)
    assert any("missing artifacts/deps.lock" in p for p in problems)


def test_symlinks_are_listed_as_such_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the run")
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/data.csv": "a,b\n"})
    run_dir = store.path(run_id)
    os.symlink(outside, run_dir / "artifacts" / "sneaky.txt")
    os.symlink(tmp_path, run_dir / "artifacts" / "folder-link")
    problems = verify(run_dir, store.read(run_id))
    assert f"{run_id}: unlisted artifacts/sneaky.txt (a symlink to {outside})" in problems
    assert f"{run_id}: unlisted artifacts/folder-link (a symlink to {tmp_path})" in problems
    assert not any("secret" in p and "sneaky" not in p for p in problems)  # not followed
    (run_dir / "artifacts" / "data.csv").unlink()
    os.symlink(outside, run_dir / "artifacts" / "data.csv")
    problems = verify(run_dir, store.read(run_id))
    changed = f"{run_id}: changed artifacts/data.csv (now a symlink"
    assert any(p.startswith(changed) for p in problems)
    links = {a["path"]: a.get("symlink") for a in hash_artifacts(run_dir)}
    assert links["artifacts/sneaky.txt"] == str(outside)


def test_load_model_refuses_a_symlink_out_of_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"models/m/MLmodel": "flavors: {}", "models/m/model.pkl": "x"})
    run_dir = store.path(run_id)
    artifacts = store.read(run_id)["artifacts"]
    verify_model_files(run_dir, "models/m", artifacts)  # intact: accepted
    evil = tmp_path / "evil.pkl"
    evil.write_text("x")
    (run_dir / "models/m/model.pkl").unlink()
    os.symlink(evil, run_dir / "models/m/model.pkl")
    with pytest.raises(ModelIntegrityError, match="is a symlink"):
        verify_model_files(run_dir, "models/m", artifacts)


def test_bad_records_are_skipped_by_path(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = RunStore(runs)
    good = finished(store, {})
    for name, content in (("wrong-shape", b'{"id": 1}'), ("a-list", b"[1, 2]"),
                          ("bad-utf8", b'{"id": "\xff\xfe"}')):
        (runs / name).mkdir()
        (runs / name / "run.json").write_bytes(content)
    (runs / "no-record").mkdir()
    problems: list[str] = []
    assert [r["id"] for r in list_records(runs, problems=problems)] == [good]
    assert len(problems) == 3 and any("bad-utf8" in p and "unreadable" in p for p in problems)
    listing = cli("runs", "ls", "--runs-dir", str(runs))
    assert listing.returncode == 0 and good in listing.stdout
    warnings = [line for line in listing.stderr.splitlines() if "warning: skipped" in line]
    assert len(warnings) == 3 and "Traceback" not in listing.stderr
    for name in ("wrong-shape", "a-list", "bad-utf8"):  # each named by its path
        assert any(str(runs / name / "run.json") in line for line in warnings), name
    shown = cli("runs", "show", "bad-utf8", "--runs-dir", str(runs))
    assert shown.returncode == 1 and "unreadable" in shown.stderr
    assert "Traceback" not in shown.stderr
    from nbops.pipeline.cache import find_cached

    assert find_cached(store, "no-such-key") is None  # the pipeline cache skips them too
    verified = cli("runs", "verify", "--runs-dir", str(runs))
    assert verified.returncode == 1 and "wrong-shape" in verified.stdout
    assert "Traceback" not in verified.stderr


def test_listing_reads_only_the_top_of_each_record(tmp_path: Path) -> None:
    """A listing checks the keys it shows; deep content is validated by show/verify."""
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {})
    file = store.path(run_id) / "run.json"
    record = json.loads(file.read_text())
    record["metric_history"] = {"loss": [{"value": 1.0}] * 50_000}  # deep, and invalid
    file.write_text(json.dumps(record))
    assert [r["id"] for r in list_records(store.root)] == [run_id]
    with pytest.raises(RecordError, match="metric_history"):
        store.read(run_id)
    record["status"] = "exploded"  # what a listing shows is still checked
    file.write_text(json.dumps(record))
    problems: list[str] = []
    assert list_records(store.root, problems=problems) == [] and "status" in problems[0]


def test_the_notebook_is_hashed_by_what_it_records(tmp_path: Path, monkeypatch: Any) -> None:
    """Saving in JupyterLab rewrites layout and metadata (harmless); a changed output is not."""
    from nbops.records.integrity import notebook_digest
    from nbops.util.envvars import resolve_runs_dir

    cell = {"cell_type": "code", "source": ["x = 1\n", "x"], "metadata": {"a": 1},
            "execution_count": 3, "outputs": [{"output_type": "execute_result",
                                               "data": {"text/plain": ["1"]}, "metadata": {},
                                               "execution_count": 3}]}
    original = {"cells": [cell], "metadata": {"kernelspec": {}}, "nbformat": 4,
                "nbformat_minor": 5}
    path = tmp_path / "notebook.ipynb"
    path.write_text(json.dumps(original))
    digest = notebook_digest(path)
    resaved = json.loads(json.dumps(original))
    resaved["metadata"]["widgets"] = {"state": {}}
    resaved["cells"][0].update(source="x = 1\nx", execution_count=None, metadata={})
    resaved["cells"][0]["outputs"][0]["data"]["text/plain"] = "1"
    resaved["cells"].append({"cell_type": "code", "source": "", "metadata": {},
                             "outputs": [], "execution_count": None})
    path.write_text(json.dumps(resaved, indent=4))
    assert notebook_digest(path) == digest
    resaved["cells"][0]["outputs"][0]["data"]["text/plain"] = "2"
    path.write_text(json.dumps(resaved))
    assert notebook_digest(path) != digest
    path.write_text("{not json")
    assert len(notebook_digest(path)) == 64  # hashed by its bytes

    # a notebook opened from a run's folder records beside that run, never into it
    run_dir = tmp_path / "runs" / "20260101T000000-x-abcdef"
    (run_dir / "artifacts").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    monkeypatch.delenv("NBOPS_RUNS_DIR", raising=False)
    monkeypatch.chdir(run_dir / "artifacts")
    assert resolve_runs_dir() == (tmp_path / "runs").resolve()
