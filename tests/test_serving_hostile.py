"""nbops serve against hostile bodies (issue 22, classes 2, 4 and 12): a real uvicorn server
on a loopback port, one real model trained by a real kernel and registered in a real store.

- wide bodies (a CSV header, an ``inputs`` object, ``dataframe_split`` columns,
  ``dataframe_records`` keys) are refused by shape before a frame is built, with a short
  error text, and the server's memory does not grow with them;
- deep JSON and strings that are not Unicode are the client's errors (400/422): never a
  500, never a failed prediction in the log or the A/B guardrail, even for the variant a
  client picks with ``X-Request-Key``; a model's own failures still count;
- a prediction answered 504 is not logged as answered;
- rows the prediction log cannot write are counted in ``/metrics`` and ``/ready`` and logged.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from conftest import NOTEBOOKS, cli, free_port, stop_process, wait_for_http
from nbops.errors import RequestRejected

NAME = "hostile"
GOOD = {"a": [0.5, -1.2], "b": [1.0, 0.3], "colour": ["red", "blue"]}
SIGNATURE: list[Any] = [{"name": "a", "type": "double", "required": True},
                        {"name": "b", "type": "double", "required": True},
                        {"name": "colour", "type": "string", "required": True}]
WIDTH = 300_000
MIDDLE = 24  # nesting the parser reads (under inputs.MAX_DEPTH), then refuses by value


def _b36(number: int) -> str:
    digits, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def wide_bodies(width: int = WIDTH) -> dict[str, tuple[bytes, str]]:
    """The same ``width``-column request in each format that carries column names."""
    names = [_b36(i) for i in range(width)]
    return {
        "csv header": (",".join(names).encode() + b"\n" + b",".join([b"1"] * width) + b"\n",
                       "text/csv"),
        "inputs object": (_json({"inputs": dict.fromkeys(names, 1)}), "application/json"),
        "dataframe_split columns": (_json({"dataframe_split": {"columns": names,
                                                               "data": [[1] * width]}}),
                                    "application/json"),
        "dataframe_records keys": (_json({"dataframe_records": [dict.fromkeys(names, 1)]}),
                                   "application/json"),
    }


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def deep_bodies(depth: int) -> dict[str, bytes]:
    """A ``depth``-deep array where a value belongs, in every JSON format."""
    inner = _nested(depth)
    return {
        "inputs object": b'{"inputs": {"a": ' + inner + b', "b": 1, "colour": "red"}}',
        "inputs list": b'{"inputs": [{"a": ' + inner + b', "b": 1, "colour": "red"}]}',
        "dataframe_split": (b'{"dataframe_split": {"columns": ["a", "b", "colour"], "data": '
                            b'[[' + inner + b', 1, "red"]]}}'),
        "dataframe_records": b'{"dataframe_records": [{"a": ' + inner + b', "b": 1, '
                             b'"colour": "red"}]}',
        "instances": b'{"instances": [{"a": 1, "b": 1, "colour": ' + inner + b'}]}',
        "whole body": _nested(depth),
    }


SURROGATES = {  # strings that are not Unicode, in every place a string can be
    "split value": (b'{"dataframe_split": {"columns": ["a", "b", "colour"], '
                    b'"data": [[1.0, 2.0, "\\ud800"]]}}', "application/json"),
    "records value": (b'{"dataframe_records": [{"a": 1.0, "b": 2.0, "colour": "x\\udfff"}]}',
                      "application/json"),
    "inputs value": (b'{"inputs": {"a": 1.0, "b": 2.0, "colour": "\\uDBFF"}}',
                     "application/json"),
    "key": (b'{"dataframe_records": [{"a": 1.0, "b": 2.0, "colour": "red", "\\ud800": 1}]}',
            "application/json"),
    "raw bytes in JSON": (b'{"inputs": {"a": 1.0, "b": 2.0, "colour": "\xed\xa0\x80"}}',
                          "application/json"),
    "raw bytes in CSV": (b"a,b,colour\n1.0,2.0,\xed\xa0\x80\n", "text/csv"),
    "stray byte in CSV header": (b"a,b,col\xffour\n1.0,2.0,red\n", "text/csv"),
}


# --- the parser alone (no server) -------------------------------------------------------

def test_json_shape_counts_depth_and_keys_outside_strings_only() -> None:
    from nbops.serving.inputs import MAX_DEPTH, json_shape

    assert MIDDLE + 4 < MAX_DEPTH
    body = _json({"inputs": {"a[{": '"]}:,', "b": "\\\"[[", "c": [[1], {"x": 1, "y": 2}]}})
    assert json_shape(body) == (4, 3)
    assert json_shape(_nested(5000)) == (5000, 0)
    assert json_shape(b'{"x": "\\\\"}') == (1, 1)  # an escaped backslash ends the string


def test_csv_fields_are_counted_per_line_outside_quotes() -> None:
    from nbops.serving.inputs import csv_fields

    assert csv_fields(b"a,b,c\n1,2,3\n").tolist() == [3, 3]
    assert csv_fields(b'\n\n"x,y",b\n"1\n,2",3').tolist() == [2, 2]
    assert csv_fields(b'a,b\r\n"said ""hi, you""",2\r\n\r\n').tolist() == [2, 2, 1]


def test_a_model_without_signature_gets_the_column_cap_and_short_error_texts() -> None:
    from nbops.serving.inputs import parse_body

    csv = ",".join(f"c{i}" for i in range(5000)).encode() + b"\n" + b"1," * 4999 + b"1\n"
    with pytest.raises(RequestRejected) as caught:
        parse_body(csv, "text/csv", [], 1000)
    assert caught.value.status == 422 and len(str(caught.value)) < 200
    assert "5,000 columns, over the limit of 1,000 columns (--max-columns)" in str(caught.value)
    assert parse_body(csv, "text/csv", [], 5000).shape == (1, 5000)
    records = _json({"dataframe_records": [{f"c{i}": 1} for i in range(1001)]})
    with pytest.raises(RequestRejected, match="1,001 columns, over the limit"):
        parse_body(records, "application/json", [], 1000)  # the union of keys counts
    with pytest.raises(RequestRejected, match="named more than once: 'a'") as caught:
        parse_body(_json({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}),
                   "application/json", [], 1000)
    assert caught.value.status == 422
    with pytest.raises(RequestRejected, match="expected a single value") as caught:
        parse_body(_json({"inputs": {"x": [[1, 2]]}}), "application/json", [], 1000)
    assert caught.value.field == "x"  # no signature: nested values are refused all the same


def test_the_column_limit_is_the_signature_unless_extra_columns_are_allowed() -> None:
    from nbops.serving.inputs import column_limit

    assert column_limit(SIGNATURE, False, 1000) == 3  # more would be unknown columns anyway
    assert column_limit(SIGNATURE, True, 1000) == 1000
    assert column_limit([], False, 10) == 10  # no signature: --max-columns
    assert column_limit(SIGNATURE * 400, True, 1000) == 1200
    shown = cli("serve", "--help").stdout
    assert "--max-columns" in shown and "[default: 1000;" in " ".join(shown.split())


def test_a_request_answered_504_while_parsing_never_reaches_the_model(tmp_path: Path) -> None:
    from nbops.serving.config import ServeConfig
    from nbops.serving.model import LoadedModel
    from nbops.serving.server import Job, Server

    class Counting:
        calls = 0

        def predict(self, frame: Any) -> list[int]:
            Counting.calls += 1
            return [0] * len(frame)

    server = Server(ServeConfig(model=f"{NAME}/1", runs_dir=str(tmp_path),
                                tracking_uri="none"))
    model = LoadedModel(Counting(), {"name": NAME, "version": 1, "alias": None, "run_id": "r",
                                     "model_path": "", "reference": ""}, SIGNATURE)
    body = _json({"inputs": GOOD})
    assert server.work(Job(body, "application/json", model, "champion", "r1"))[0] == [0, 0]
    late = Job(body, "application/json", model, "champion", "r2")
    late.abandoned.set()  # what invoke does when it answers 504
    with pytest.raises(Exception, match="queued"):
        server.work(late)
    assert Counting.calls == 1 and late.phase == "queued"
    server.stop()


def test_only_the_models_own_failures_are_logged_as_failed_predictions(tmp_path: Path) -> None:
    import asyncio

    from nbops.serving.config import ServeConfig
    from nbops.serving.model import LoadedModel
    from nbops.serving.predlog import PredictionLog, read_log
    from nbops.serving.server import Server

    class Failing:
        def predict(self, frame: Any) -> list[int]:
            raise ArithmeticError("the model broke")

    server = Server(ServeConfig(model=f"{NAME}/1", runs_dir=str(tmp_path),
                                tracking_uri="none"))
    server.slots["champion"].current = LoadedModel(
        Failing(), {"name": NAME, "version": 1, "alias": None, "run_id": "r",
                    "model_path": "", "reference": ""}, SIGNATURE)
    server.log = PredictionLog(tmp_path / "log")

    def ask(body: bytes, request_id: str) -> Any:
        async def read() -> bytes:
            return body

        return asyncio.run(server.invoke(read, "application/json", request_id, None))

    bad = ask(_json({"inputs": {"a": [1.0], "b": ["x"], "colour": ["red"]}}), "client-fault")
    broken = ask(_json({"inputs": GOOD}), "model-fault")
    server.stop()
    assert (bad.status, bad.payload["field"]) == (422, "b")
    assert broken.status == 500 and "ArithmeticError: the model broke" in broken.payload["error"]
    failures = read_log(tmp_path / "log", errors=True)
    assert list(failures["_request_id"]) == ["model-fault"]
    metrics = server.metrics.render()[0].decode()
    assert 'nbops_errors_total{cause="model",code="500",variant="champion"} 1.0' in metrics
    assert 'nbops_errors_total{cause="client",code="422",variant="champion"} 1.0' in metrics


# --- a real server ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from nbops.runner import RunOptions, run
    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    root = tmp_path_factory.mktemp("hostile")
    runs = root / "runs"
    record = run(NOTEBOOKS / "serve_model.ipynb", {"slow_below": -1000.0},
                 options=RunOptions(runs_dir=runs, cwd=root, tracking_uri="none"))
    assert record["status"] == "succeeded", record["error"]
    path = Path(record["outputs"]["model_path"])
    uri = default_uri(runs)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("hostile")).info.run_id
    version = registry.register_version(NAME, run_id=run_id, artifact_path="models/model",
                                        tags={"nbops.model_path": str(path)}, alias=None,
                                        tracking_uri=uri)
    return {"root": root, "runs": runs, "version": version, "run_id": record["id"]}


def _serve(store: dict[str, Any], *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = store["root"] / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "serve", *args, "--port", str(port),
         "--runs-dir", str(store["runs"])], stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""}, cwd=store["root"])
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/ready", proc, "nbops serve", timeout=180)
    return proc, base, log


@pytest.fixture(scope="module")
def server(store: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Champion and challenger (the same model), half the traffic each, 1 s timeout."""
    version = store["version"]
    proc, base, log = _serve(store, f"{NAME}/{version}", "--challenger", f"{NAME}/{version}",
                             "--split", "50", "--timeout", "1")
    yield {"proc": proc, "base": base, "log": log, **store}
    stop_process(proc)


def post(base: str, content: bytes, content_type: str = "application/json",
         **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/invocations", content=content, timeout=120,
                      headers={"content-type": content_type, **headers})


def challenger_key() -> str:
    """An ``X-Request-Key`` the 50 % split sends to the challenger (the server's hash)."""
    for i in range(1000):
        key = f"client-{i}"
        if int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 10_000 < 5000:
            return key
    raise AssertionError("no key found")


def errors_by_cause(base: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("nbops_errors_total{"):
            cause = line.split('cause="')[1].split('"')[0] if 'cause="' in line else "?"
            found[cause] = found.get(cause, 0.0) + float(line.split()[-1])
    return found


def wait_idle(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        if next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("nbops_requests_in_flight")) == 0:
            return
        time.sleep(0.1)


@pytest.mark.slow
def test_wide_requests_are_refused_by_shape_with_short_errors_and_no_memory_kept(
        server: dict[str, Any]) -> None:
    process = psutil.Process(server["proc"].pid)
    before = process.memory_info().rss
    for what, (body, content_type) in wide_bodies().items():
        answer = post(server["base"], body, content_type)
        assert answer.status_code == 422, (what, answer.status_code, answer.text[:300])
        error = answer.json()["error"]
        assert f"{WIDTH:,}" in error and "the model takes 3 columns: 'a', 'b', 'colour'" in error
        assert len(answer.content) < 1000, (what, len(answer.content))  # not every name
    # a data line wider than its header: pandas would take the first values as an index
    for line in (b"9,9,0.5,1.0,red", b",".join([b"1"] * WIDTH)):
        answer = post(server["base"], b"a,b,colour\n" + line + b"\n", "text/csv")
        assert answer.status_code == 400, (answer.status_code, answer.text[:300])
        assert "line 2 has" in answer.json()["error"] and len(answer.content) < 1000
    grown = process.memory_info().rss - before
    assert grown < 300 * 2**20, f"the server kept {grown / 2**20:.0f} MiB"
    assert server["proc"].poll() is None
    ok = post(server["base"], _json({"inputs": GOOD}))
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


@pytest.mark.slow
def test_deep_json_and_non_unicode_strings_are_client_errors_never_model_failures(
        server: dict[str, Any]) -> None:
    from nbops.serving.predlog import read_log

    base, key = server["base"], challenger_key()
    answers: dict[str, httpx.Response] = {}
    for what, body in deep_bodies(2_000_000).items():
        answers[f"2M deep, {what}"] = post(base, body, **{"X-Request-Key": key})
    for what, body in deep_bodies(MIDDLE).items():  # parsed, then refused by value
        answers[f"{MIDDLE} deep, {what}"] = post(base, body, **{"X-Request-Key": key})
    for what, (body, content_type) in SURROGATES.items():
        answers[what] = post(base, body, content_type, **{"X-Request-Key": key})
    for what, answer in answers.items():
        assert answer.headers["x-model-variant"] == "challenger", what
        assert answer.status_code in (400, 422), (what, answer.status_code, answer.text[:300])
        assert len(answer.content) < 1000, what
    assert answers["2M deep, whole body"].status_code == 400
    assert "nested 2,000,000 levels deep" in answers["2M deep, whole body"].json()["error"]
    assert answers[f"{MIDDLE} deep, dataframe_split"].json()["field"] == "a"
    assert "lone surrogate" in answers["split value"].json()["error"]
    assert "not UTF-8" in answers["raw bytes in CSV"].json()["error"]
    causes = errors_by_cause(base)
    assert causes.get("client", 0) >= len(answers) and "model" not in causes, causes
    # a failure of the model itself still counts against it (a prediction past the timeout)
    slow = post(base, _json({"inputs": {"a": [-5000.0], "b": [0.0], "colour": ["red"]}}),
                **{"X-Request-Key": key, "X-Request-ID": "slow-one"})
    assert slow.status_code == 504 and slow.headers["x-model-variant"] == "challenger"
    assert errors_by_cause(base).get("model") == 1
    wait_idle(base)  # the slow prediction ends after its 504 ...
    deadline = time.monotonic() + 10
    logged = read_log(server["runs"] / "predictions" / NAME, errors=True)
    while time.monotonic() < deadline and "slow-one" not in set(logged["_request_id"]):
        time.sleep(0.2)
        logged = read_log(server["runs"] / "predictions" / NAME, errors=True)
    failures = logged[logged["_error"].notna()]
    assert list(failures["_request_id"]) == ["slow-one"]  # the one failure the model caused
    assert list(failures["_variant"]) == ["challenger"]
    # ... and is not logged as answered: its client got a 504, not these predictions
    assert (logged[logged["_request_id"] == "slow-one"]["_row"] == -1).all()


@pytest.mark.slow
def test_prediction_log_rows_that_cannot_be_written_are_counted_and_logged(
        store: dict[str, Any]) -> None:
    folder = store["runs"] / "predictions" / "model"  # runs:/ID/model logs under "model"
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the log's folder should be\n")  # unwritable, even by root
    proc, base, log = _serve(store, f"runs:/{store['run_id']}/model")
    try:
        for _ in range(5):
            assert post(base, _json({"inputs": GOOD})).status_code == 200
        deadline = time.monotonic() + 20
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            ready = httpx.get(f"{base}/ready", timeout=10).json()
            if (ready.get("prediction_log") or {}).get("dropped_rows", 0) >= 10:
                break
            time.sleep(0.2)
        assert ready["ready"] is True  # the server still answers
        assert ready["prediction_log"]["dropped_rows"] == 10, ready
        assert ready["prediction_log"]["folder"] == str(folder)
        assert "Error" in ready["prediction_log"]["last_error"]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert "nbops_prediction_log_dropped_rows_total 10.0" in metrics
    finally:
        stop_process(proc)
        folder.unlink()
    text = log.read_text()
    assert "prediction log" in text and "dropped 2 row(s)" in text, text[-2000:]
    assert text.count("prediction log") == 1  # the first loss; then at most once a minute
