"""The registry's answers are remembered while the embedded store is unchanged: an
unchanged pipeline is decided without MLflow, and any write to the store asks again.
Real MLflow SQLite store; a subprocess shows MLflow is not even imported on the fast path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbops.pipeline.state import ANSWERS_FILE, read_state, store_fingerprint

READS = [{"kind": "registry", "model": "m"}, {"kind": "registry", "model": "m",
                                               "alias": "champion"}]


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Path, Any]:
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    runs.mkdir()
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(2):
        model = tmp_path / "model"
        model.mkdir(exist_ok=True)
        client.create_model_version("m", str(model))
    client.set_registered_model_alias("m", "champion", "1")
    return uri, runs, client


def _in_a_fresh_process(uri: str, runs: Path) -> tuple[list[Any], bool]:
    code = ("import json, sys; from pathlib import Path; "
            "from nbops.pipeline.state import read_state; "
            f"state = read_state({READS!r}, {uri!r}, Path({str(runs)!r})); "
            "print(json.dumps([state, 'mlflow' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    state, imported = json.loads(done.stdout)
    return state, imported


def test_an_unchanged_store_is_answered_without_mlflow(store: tuple[str, Path, Any]) -> None:
    uri, runs, _ = store
    first, imported = _in_a_fresh_process(uri, runs)
    assert imported and (runs / ANSWERS_FILE).is_file()
    assert first[0]["aliases"] == {"champion": 1} and set(first[0]["versions"]) == {"1", "2"}
    assert first[1]["version"] == 1
    again, imported = _in_a_fresh_process(uri, runs)
    assert again == first and not imported


def test_any_write_to_the_store_asks_the_registry_again(store: tuple[str, Path, Any]) -> None:
    uri, runs, client = store
    before = read_state(READS, uri, runs)
    fingerprint = store_fingerprint(uri)
    client.set_registered_model_alias("m", "champion", "2")  # a move outside nbops
    assert store_fingerprint(uri) != fingerprint
    after, imported = _in_a_fresh_process(uri, runs)
    assert imported and after[1]["version"] == 2 and after[0]["aliases"] == {"champion": 2}
    assert before[1]["version"] == 1
    client.set_model_version_tag("m", "2", "note", "x")  # a tag is a write too
    tagged, imported = _in_a_fresh_process(uri, runs)
    assert imported and tagged[0]["versions"]["2"]["tags"] == {"note": "x"}


def test_answers_of_another_store_or_an_edited_file_are_not_used(
        store: tuple[str, Path, Any], tmp_path: Path) -> None:
    uri, runs, _ = store
    read_state(READS, uri, runs)
    saved = json.loads((runs / ANSWERS_FILE).read_text())
    saved["answers"] = {k: None for k in saved["answers"]}  # forged: everything absent
    saved["uri"] = "sqlite:////elsewhere/mlflow.db"
    (runs / ANSWERS_FILE).write_text(json.dumps(saved))
    state, imported = _in_a_fresh_process(uri, runs)
    assert imported and state[1]["version"] == 1


@pytest.mark.timeout(60)  # guards against a hang on the FIFO
def test_a_fifo_in_place_of_the_answers_is_never_opened(store: tuple[str, Path, Any]) -> None:
    uri, runs, _ = store
    os.mkfifo(runs / ANSWERS_FILE)
    state = read_state(READS, uri, runs)
    assert state[1]["version"] == 1


def test_only_an_existing_embedded_store_has_a_fingerprint(tmp_path: Path) -> None:
    assert store_fingerprint("http://127.0.0.1:5000") is None
    assert store_fingerprint(f"sqlite:///{tmp_path / 'none.db'}") is None
    (tmp_path / "folder.db").mkdir()
    assert store_fingerprint(f"sqlite:///{tmp_path / 'folder.db'}") is None
