"""nbops serve: a real uvicorn server on a loopback port, real models in a real registry.

One shared server (module fixture) takes every bad request the tests can think of and must
keep its pid; a second one runs a challenger split and a shadow. Models come from a tiny
training notebook run through the real runner and registered in the runs folder's MLflow
store.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import NOTEBOOKS, cli, free_port, stop_process, wait_for_http

pytestmark = pytest.mark.slow
NAME = "tiny"
ROWS = {"a": [0.5, -1.2, 2.0], "b": [1.0, 0.3, -2.5], "colour": ["red", "blue", "red"]}


def _train(runs: Path, tmp: Path, **params: Any) -> Path:
    from nbops.runner import RunOptions, run

    record = run(NOTEBOOKS / "serve_model.ipynb", params,
                 options=RunOptions(runs_dir=runs, cwd=tmp, tracking_uri="none"))
    assert record["status"] == "succeeded", record["error"]
    return Path(record["outputs"]["model_path"])


def _register(uri: str, path: Path) -> int:
    from mlflow.tracking import MlflowClient

    from nbops.tracking import registry

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("serving-tests") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "serving-tests")
    run_id = client.create_run(experiment_id).info.run_id
    return registry.register_version(NAME, run_id=run_id, artifact_path="models/model",
                                     tags={"nbops.model_path": str(path)}, alias=None,
                                     tracking_uri=uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    root = tmp_path_factory.mktemp("serving")
    runs = root / "runs"
    uri = default_uri(runs)
    paths = [_train(runs, root, C=1.0, slow_below=-1000.0),
             _train(runs, root, C=0.001, slow_below=-1000.0),
             _train(runs, root, C=1.0, slow_below=-1000.0),
             _train(runs, root, C=1.0, invert_blue=True)]
    versions = [_register(uri, p) for p in paths]
    registry.promote(NAME, versions[0], "champion", reason="first", tracking_uri=uri)
    return {"root": root, "runs": runs, "uri": uri, "paths": paths, "versions": versions}


def _serve(store: dict[str, Any], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (store["root"] / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "serve", *args, "--port", str(port),
         "--runs-dir", str(store["runs"])], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=store["root"])
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/ready", proc, "nbops serve", timeout=120)
    return proc, base


@pytest.fixture(scope="module")
def server(store: dict[str, Any]) -> Iterator[dict[str, Any]]:
    proc, base = _serve(store, f"{NAME}@champion", "--timeout", "1", "--max-concurrency", "64",
                        "--max-body-bytes", "20000", "--poll-seconds", "0.2")
    yield {"proc": proc, "base": base, **store}
    stop_process(proc)


def split_body(rows: dict[str, list[Any]] = ROWS) -> dict[str, Any]:
    columns = list(rows)
    return {"dataframe_split": {"columns": columns,
                                "data": [list(r) for r in zip(*rows.values(), strict=True)]}}


def post(base: str, body: Any = None, *, content: bytes | None = None,
         content_type: str = "application/json", **headers: str) -> httpx.Response:
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(f"{base}/invocations", content=data, timeout=30,
                      headers={"content-type": content_type, **headers})


def test_every_request_format_mlflow_clients_send_gives_the_same_answer(
        server: dict[str, Any]) -> None:
    base = server["base"]
    records = [dict(zip(ROWS, r, strict=True)) for r in zip(*ROWS.values(), strict=True)]
    answers = [post(base, split_body()), post(base, {"dataframe_records": records}),
               post(base, {"instances": records}), post(base, {"inputs": ROWS}),
               post(base, content=b"a,b,colour\n0.5,1.0,red\n-1.2,0.3,blue\n2.0,-2.5,red\n",
                    content_type="text/csv")]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == str(server["versions"][0])
    assert len({json.dumps(a.json()["predictions"]) for a in answers}) == 1
    assert answers[0].json()["predictions"] == [1, 0, 0]


@pytest.mark.parametrize(("body", "status", "field"), [
    (split_body({"a": [1.0], "b": [2.0]}), 422, "colour"),  # missing column
    (split_body({"a": [1.0], "b": ["x"], "colour": ["red"]}), 422, "b"),  # wrong type
    (split_body({"a": [True], "b": [1.0], "colour": ["red"]}), 422, "a"),  # bool is no number
    (split_body({"a": [None], "b": [1.0], "colour": ["red"]}), 422, "a"),  # null
    (split_body({"a": [1.0], "b": [1.0], "colour": [{"x": 1}]}), 422, "colour"),  # nested
    (split_body({"a": [10**400], "b": [1.0], "colour": ["red"]}), 422, "a"),  # no float
    (split_body({"a": [1.0], "b": [1.0], "colour": [5]}), 422, "colour"),  # not a string
    (split_body({"a": [], "b": [], "colour": []}), 422, None),  # zero rows
    (split_body({**{k: v[:1] for k, v in ROWS.items()}, "extra": [1]}), 422, "extra"),
    ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, 400, "dataframe_split"),
    ({"something": []}, 400, None),
    ([1, 2, 3], 400, None),
])
def test_bad_input_gets_a_4xx_naming_the_field(server: dict[str, Any], body: Any, status: int,
                                               field: str | None) -> None:
    answer = post(server["base"], body)
    assert answer.status_code == status, answer.text
    assert "error" in answer.json() and answer.json().get("field") == field
    assert "x-model-version" in answer.headers


def test_protocol_errors_and_limits(server: dict[str, Any]) -> None:
    base = server["base"]
    assert post(base, content=b"{not json").status_code == 400
    assert post(base, content=b"").status_code == 400
    assert post(base, content=b"NaN").status_code == 400
    assert post(base, content=b"a=1", content_type="text/plain").status_code == 415
    nan = b'{"dataframe_split": {"columns": ["a","b","colour"], "data": [[NaN, 1, "red"]]}}'
    assert post(base, content=nan).json()["field"] == "a"
    assert httpx.get(f"{base}/invocations").status_code == 405
    assert httpx.get(f"{base}/nope").status_code == 404
    big = post(base, content=b"x" * 20_001)
    assert big.status_code == 413 and "over the limit" in big.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(30):
            yield b"x" * 1000

    streamed = httpx.post(f"{base}/invocations", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=30)
    assert streamed.status_code == 413
    slow = post(base, split_body({"a": [-5000.0], "b": [0.0], "colour": ["red"]}))
    assert slow.status_code == 504 and "longer than 1 s" in slow.json()["error"]


def test_overload_gets_503_with_retry_after_and_the_server_stays_up(
        server: dict[str, Any]) -> None:
    base = server["base"]
    pid = server["proc"].pid
    slow = split_body({"a": [-5000.0], "b": [0.0], "colour": ["red"]})
    with ThreadPoolExecutor(90) as pool:
        answers = list(pool.map(lambda _: post(base, slow), range(90)))
    codes = Counter(a.status_code for a in answers)
    # 64 slow predictions fill every slot (each answered 504 after 1 s, computing for 2 s);
    # what arrives meanwhile is refused at once (how many depends on how fast the client's
    # threads start on a loaded machine, so only "some" is asserted)
    assert codes[504] >= 64 and codes[503] >= 1 and set(codes) <= {503, 504}, codes
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "(limit 64)" in busy.json()["error"]
    metrics = httpx.get(f"{base}/metrics").text  # busy is the server's fault, not the model's
    assert 'nbops_errors_total{cause="server",code="503",variant="champion"}' in metrics
    assert 'nbops_errors_total{cause="model",code="504",variant="champion"}' in metrics
    assert wait_idle(base) == 0  # the slow predictions finish; capacity comes back
    assert post(base, split_body()).status_code == 200
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert server["proc"].poll() is None and server["proc"].pid == pid


def wait_idle(base: str, timeout: float = 60) -> float:
    """The server's in-flight gauge once it reads 0 (or after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        value = next(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith("nbops_requests_in_flight"))
        if value == 0 or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_500_requests_64_at_a_time_get_identical_answers(server: dict[str, Any]) -> None:
    base = server["base"]
    assert wait_idle(base) == 0  # nothing left over from the overload test
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64)) as client, \
            ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(
            lambda i: client.post(f"{base}/invocations", json=split_body()), range(500)))
    assert all(a.status_code == 200 for a in answers), Counter(a.status_code for a in answers)
    assert len({a.text for a in answers}) == 1
    metrics = httpx.get(f"{base}/metrics").text
    assert 'nbops_requests_total{code="200"' in metrics
    assert "nbops_request_latency_seconds_bucket" in metrics
    line = next(m for m in metrics.splitlines() if m.startswith("nbops_errors_total")
                and 'code="413"' in m)
    assert float(line.split()[-1]) >= 1


def test_ready_and_version_describe_what_is_served(server: dict[str, Any]) -> None:
    ready = httpx.get(f"{server['base']}/ready").json()
    champion = ready["variants"]["champion"]
    assert ready["ready"] and champion["warmed_with_example"]
    version = httpx.get(f"{server['base']}/version").json()["champion"]
    assert version["name"] == NAME and version["alias"] == "champion"
    assert version["model_path"] == str(server["paths"][0])


def test_hot_swap_under_load_and_a_bad_version_is_not_swapped_in(
        server: dict[str, Any]) -> None:
    from nbops.tracking import registry

    base, uri, (v1, v2, v3, _) = server["base"], server["uri"], server["versions"]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                answer = client.post(f"{base}/invocations", json=split_body())
                seen.append((answer.status_code, answer.headers["x-model-version"]))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    registry.promote(NAME, v2, "champion", reason="test swap", tracking_uri=uri)
    deadline = time.time() + 20
    while time.time() < deadline and not any(v == str(v2) for _, v in seen[-5:]):
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert {code for code, _ in seen} == {200}, Counter(code for code, _ in seen)
    versions = [v for _, v in seen]
    assert versions[0] == str(v1) and versions[-1] == str(v2)
    assert httpx.get(f"{base}/version").json()["champion"]["version"] == v2

    # a version whose files no longer match their record must never be served
    pickled = server["paths"][2] / "model.pkl"
    pickled.write_bytes(pickled.read_bytes() + b"tampered")
    registry.promote(NAME, v3, "champion", reason="bad", tracking_uri=uri)
    deadline = time.time() + 20
    ready: dict[str, Any] = {}
    while time.time() < deadline:
        ready = httpx.get(f"{base}/ready").json()
        if ready["variants"]["champion"]["last_swap_error"]:
            break
        time.sleep(0.1)
    error = ready["variants"]["champion"]["last_swap_error"]
    assert error and error["version"] == v3 and "sha256" in error["error"]
    answer = post(base, split_body())
    assert answer.status_code == 200 and answer.headers["x-model-version"] == str(v2)
    registry.rollback(NAME, "champion", tracking_uri=uri)  # back to v2 for later tests


def test_every_answered_row_is_in_the_prediction_log(server: dict[str, Any]) -> None:
    from nbops.serving.predlog import read_log

    folder = server["runs"] / "predictions" / NAME
    answer = post(server["base"], split_body(), **{"X-Request-ID": "req-log-check"})
    deadline = time.time() + 10
    while time.time() < deadline:
        frame = read_log(folder)
        if (frame["_request_id"] == "req-log-check").sum() == 3:
            break
        time.sleep(0.1)
    mine = frame[frame["_request_id"] == "req-log-check"]
    assert list(mine["a"]) == ROWS["a"] and list(mine["colour"]) == ROWS["colour"]
    assert list(mine["prediction"]) == answer.json()["predictions"]
    assert set(mine["_variant"]) == {"champion"}
    assert set(mine["_version"]) == {int(answer.headers["x-model-version"])}
    assert read_log(folder, "1h")["_time"].min() >= frame["_time"].min()
    with pytest.raises(ValueError, match="no rows"):
        read_log(folder, "2000-01-01/2000-01-02")


def test_split_and_shadow_log_the_variants_they_were_given_and_ab_evaluate_decides(
        store: dict[str, Any]) -> None:
    import numpy as np
    import pandas as pd

    from nbops.runner import RunOptions, run
    from nbops.serving.predlog import read_log
    from nbops.tracking import ledger

    v1, v2, _, v4 = store["versions"]
    folder = store["runs"] / "predictions" / NAME
    shutil.rmtree(folder, ignore_errors=True)
    proc, base = _serve(store, f"{NAME}/{v1}", "--challenger", f"{NAME}/{v2}", "--split", "30",
                        "--shadow", f"{NAME}/{v4}")
    rng = np.random.default_rng(2)
    try:
        variants = {}
        for i in range(200):
            rows = {"a": list(rng.normal(0, 1, 3)), "b": list(rng.normal(0, 1, 3)),
                    "colour": list(rng.choice(["red", "blue"], 3))}
            answer = post(base, split_body(rows), **{"X-Request-Key": f"user-{i % 50}",
                                                     "X-Request-ID": f"r{i}"})
            assert answer.status_code == 200
            variant = answer.headers["x-model-variant"]
            assert variants.setdefault(i % 50, variant) == variant  # sticky by key
        share = Counter(variants.values())["challenger"] / 50
        assert 0.1 <= share <= 0.5, share  # about 30 %
        deadline = time.time() + 10
        while time.time() < deadline and (read_log(folder)["_variant"] == "shadow").sum() < 600:
            time.sleep(0.1)
    finally:
        stop_process(proc)
    frame = read_log(folder)
    counts = Counter(frame.drop_duplicates(["_request_id", "_variant"])["_variant"])
    assert counts["shadow"] == 200  # every request also went to the shadow
    assert counts["champion"] + counts["challenger"] == 200
    assert set(frame[frame["_variant"] == "challenger"]["_version"]) == {v2}
    assert set(frame[frame["_variant"] == "champion"]["_version"]) == {v1}
    assert set(frame[frame["_variant"] == "shadow"]["_version"]) == {v4}

    # labels arrive later: the truth is what the shadow said, so the shadow must win
    shadow = frame[frame["_variant"] == "shadow"]
    labels = pd.DataFrame({"request_id": shadow["_request_id"], "row": shadow["_row"],
                           "label": shadow["prediction"]})
    labels.to_csv(store["root"] / "labels.csv", index=False)
    # (the shadow shares this 2-core machine with the server; its latency is no guide here)
    record = run("ab_evaluate", {"log_path": str(folder), "latency_margin": 10.0,
                                 "labels_path": str(store["root"] / "labels.csv")},
                 options=RunOptions(runs_dir=store["runs"], cwd=store["root"]))
    assert record["status"] == "succeeded", record["error"]
    outputs = record["outputs"]
    assert outputs["decision"] == "win" and outputs["test"] == "McNemar exact (paired)"
    assert (outputs["champion_version"], outputs["challenger_version"]) == (v1, v4)
    assert outputs["proposal"] is True
    proposals = [e for e in ledger.read(store["runs"], NAME)["entries"]
                 if e["kind"] == "proposal"]
    assert proposals[-1]["version"] == v4 and proposals[-1]["evidence"] == [record["id"]]
    # the win is the evidence a policy asks for
    (store["root"] / "nbops.yaml").write_text("promotion:\n  champion:\n    evidence: [ab_win]\n")
    try:
        promoted = cli("models", "promote", NAME, str(v4), "--runs-dir", str(store["runs"]),
                       cwd=store["root"], env={"MLFLOW_TRACKING_URI": ""})
        assert promoted.returncode == 0, promoted.stderr
        assert f"ab_win ({record['id']})" in promoted.stdout
        assert cli("models", "rollback", NAME, "--runs-dir", str(store["runs"]),
                   env={"MLFLOW_TRACKING_URI": ""}).returncode == 0
    finally:
        (store["root"] / "nbops.yaml").unlink()


def test_bad_model_references_are_usage_errors(tmp_path: Path) -> None:
    for ref in ("nope", "a@", "runs:/x", "name/v1"):
        done = cli("serve", ref, "--runs-dir", str(tmp_path))
        assert done.returncode == 2 and "name@alias" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_the_monitor_stage_reads_a_window_of_the_prediction_log(server: dict[str, Any]) -> None:
    import numpy as np
    import pandas as pd

    from nbops.runner import RunOptions, run

    rng = np.random.default_rng(1)
    shifted = {"a": list(rng.normal(3, 1, 300)), "b": list(rng.normal(0, 1, 300)),
               "colour": list(rng.choice(["red", "blue"], 300))}
    since = datetime.now(timezone.utc).isoformat()
    assert post(server["base"], split_body(shifted)).status_code == 200
    time.sleep(0.5)  # the log is written off the response path
    reference = server["root"] / "reference.parquet"
    pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.normal(0, 1, 300),
                  "colour": rng.choice(["red", "blue"], 300),
                  "prediction": rng.integers(0, 2, 300)}).to_parquet(reference)
    record = run("monitor", {"reference_path": str(reference),
                             "current_path": str(server["runs"] / "predictions" / NAME),
                             "current_window": f"{since}/"},
                 options=RunOptions(runs_dir=server["root"] / "monitor-runs",
                                    cwd=server["root"], tracking_uri="none"))
    assert record["status"] == "succeeded", record["error"]
    assert "a" in record["outputs"]["drifted_columns"]


def test_several_worker_processes_share_one_metrics_view(store: dict[str, Any]) -> None:
    v1 = store["versions"][0]
    proc, base = _serve(store, f"{NAME}/{v1}", "--workers", "2", "--no-log")
    try:
        with httpx.Client(timeout=30) as client:
            answers = [client.post(f"{base}/invocations", json=split_body()) for _ in range(12)]
            metrics = client.get(f"{base}/metrics").text
    finally:
        stop_process(proc)
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["predictions"][0] for a in answers}) == 1
    served = sum(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("nbops_requests_total{") and 'code="200"' in line)
    assert served == 12  # counted across both workers, not per process
