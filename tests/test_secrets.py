"""Secrets: declared by name in a template, valued from the environment or a git-ignored
credentials file, handed to the kernel only through its environment, and never written to
the runs folder or MLflow (scrubbed from the notebook, the kernel log, events and records);
cache keys hold a keyed fingerprint."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest
import yaml

from conftest import NOTEBOOKS, cli
from nbops.contract.secrets import credentials_file, fingerprints, lookup, resolve
from nbops.contract.template import load_template, parse_secrets
from nbops.errors import ConfigError, ParameterError, TemplateError
from nbops.execution.pool import close_pools
from nbops.pipeline.cache import run_key
from nbops.runner import RunOptions, run
from nbops.util.secrets import (
    KEY_FILE,
    Scrubber,
    ScrubbingPipe,
    encodings,
    fingerprint,
    fingerprint_key,
)

TOKEN = "s3cr3t-T0ken/with+odd chars&more"
TEMPLATE = NOTEBOOKS / "secret.ipynb"


def forms_of(value: str) -> list[bytes]:
    """What a grep for the value would look for: raw, base64, hex, URL-encoded."""
    raw = value.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode(), quote(value, safe="").encode()]


def grep(folder: Path, value: str) -> list[str]:
    """Every file under ``folder`` holding the value in one of its common forms."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} ({form!r})" for form in forms_of(value) if form in data]
    return found


# --- declaring ---------------------------------------------------------------------------

def test_a_parameters_cell_declares_secrets_by_name_only() -> None:
    cell = ("from nbops import Secret\nfrom typing import Literal\n\n"
            "API_TOKEN: Secret  # the service's token\nDB_PASSWORD: Secret\n"
            "mode: Literal['a', 'b'] = 'a'\n")
    assert parse_secrets(cell) == {"API_TOKEN": "the service's token", "DB_PASSWORD": ""}
    template = load_template(TEMPLATE)
    assert template.secrets == {"SERVICE_TOKEN": "the token of a service"}
    assert list(template.parameters) == ["fail"]  # a secret is not a parameter
    assert template.to_dict()["secrets"] == [{"name": "SERVICE_TOKEN",
                                              "help": "the token of a service"}]


@pytest.mark.parametrize(("cell", "message"), [
    ("from nbops import Secret\nAPI_TOKEN: Secret = 'abc123456'", "never appears in a template"),
    ("API_TOKEN: Secret", "from nbops import Secret"),
    ("from nbops import Secret\nPATH: Secret", "environment variable that nbops"),
    ("from nbops import Secret\nNBOPS_RUN_DIR: Secret", "environment variable that nbops"),
    ("from nbops import Secret\nLD_PRELOAD: Secret", "environment variable that nbops"),
    ("from nbops import Secret, log_metric\nX_TOKEN: Secret", "only imports"),
    ("import nbops\nX_TOKEN: nbops.Secret", "only imports"),
])
def test_bad_secret_declarations_are_template_errors(cell: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_secrets(cell)


def test_a_name_cannot_be_both_a_parameter_and_a_secret(tmp_path: Path) -> None:
    nb = nbformat.read(TEMPLATE, 4)
    nb.cells[1].source += "\nSERVICE_TOKEN = 'x'"
    nbformat.write(nb, tmp_path / "both.ipynb")
    with pytest.raises(TemplateError, match="both as a parameter and as a secret"):
        load_template(tmp_path / "both.ipynb")


# --- values ------------------------------------------------------------------------------

def project(tmp_path: Path, credentials: dict[str, Any] | str | None = None,
            ignore: bool = True) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "nbops.yaml").write_text("name: p\nsecrets:\n  file: .credentials.yaml\n")
    if credentials is not None:
        text = credentials if isinstance(credentials, str) else yaml.safe_dump(credentials)
        (root / ".credentials.yaml").write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if ignore:
        (root / ".gitignore").write_text(".credentials.yaml\n")
    return root


def test_values_come_from_the_environment_then_the_credentials_file(tmp_path: Path) -> None:
    root = project(tmp_path, {"SERVICE_TOKEN": "from-the-file-123"})
    template = load_template(TEMPLATE)
    assert credentials_file(root, env={}) == (root / ".credentials.yaml").resolve()
    assert resolve(template, env={}, start=root) == {"SERVICE_TOKEN": "from-the-file-123"}
    assert resolve(template, env={"SERVICE_TOKEN": "from-the-env-456"}, start=root) == {
        "SERVICE_TOKEN": "from-the-env-456"}
    assert lookup("SERVICE_TOKEN", env={}, start=root) == "from-the-file-123"
    assert lookup("OTHER", env={}, start=root) is None
    # NBOPS_CREDENTIALS names another file (outside any git work tree: accepted)
    other = tmp_path / "elsewhere.yaml"
    other.write_text("SERVICE_TOKEN: other-file-789\n")
    assert resolve(template, env={"NBOPS_CREDENTIALS": str(other)}, start=root) == {
        "SERVICE_TOKEN": "other-file-789"}


@pytest.mark.parametrize(("credentials", "ignore", "message"), [
    ({}, True, "needs the secret SERVICE_TOKEN, which has no value"),
    ({"SERVICE_TOKEN": "short"}, True, "shorter than 6 characters"),
    ({"SERVICE_TOKEN": 12345678}, True, "must be text"),
    ({"SERVICE_TOKEN": "long-enough-value"}, False, "not git-ignored"),
    ("SERVICE_TOKEN: [unclosed-secret-value", True, "not valid YAML"),
    ("- a list", True, "must map secret names"),
    (None, True, "does not exist"),
])
def test_unusable_values_are_usage_errors_that_never_quote_them(
        tmp_path: Path, credentials: Any, ignore: bool, message: str) -> None:
    root = project(tmp_path, credentials, ignore)
    with pytest.raises(ConfigError, match=message) as caught:
        resolve(load_template(TEMPLATE), env={}, start=root)
    assert "unclosed-secret-value" not in str(caught.value)
    assert "long-enough-value" not in str(caught.value)


def test_a_secret_is_never_a_parameter() -> None:
    with pytest.raises(ParameterError, match="is a secret of template 'secret', not a "
                                             "parameter"):
        run(TEMPLATE, {"SERVICE_TOKEN": TOKEN})


def test_a_missing_secret_stops_the_cli_before_any_record(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_TOKEN"}
    env["NBOPS_RUNS_DIR"] = str(tmp_path / "runs")
    result = subprocess.run([*cli_base(), "run", str(TEMPLATE)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "needs the secret SERVICE_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    given = cli("run", str(TEMPLATE), "-p", "SERVICE_TOKEN", TOKEN, cwd=tmp_path,
                env={"NBOPS_RUNS_DIR": str(tmp_path / "runs")})
    assert given.returncode == 2 and "is a secret" in given.stderr
    assert TOKEN not in given.stderr + given.stdout


def cli_base() -> list[str]:
    from conftest import NBOPS

    return NBOPS


# --- scrubbing and fingerprints ----------------------------------------------------------

def test_the_scrubber_replaces_the_value_and_its_encodings() -> None:
    scrub = Scrubber({"API": TOKEN})
    for form in encodings(TOKEN):
        assert scrub.text(f"<{form}>") == "<[secret API]>", form
    assert scrub.value({"k": [TOKEN, 1, {TOKEN: "x"}]}) == {
        "k": ["[secret API]", 1, {"[secret API]": "x"}]}
    assert TOKEN not in repr(scrub) and "API" in repr(scrub)
    assert scrub.text("nothing here") == "nothing here"
    assert not Scrubber() and Scrubber().text(TOKEN) == TOKEN
    nb = nbformat.v4.new_notebook()
    png = base64.b64encode(b"\x89PNG" + TOKEN.encode()).decode()
    nb.cells = [nbformat.v4.new_code_cell(f"print({TOKEN!r})", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=f"{TOKEN}\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": repr(TOKEN),
                                                        "image/png": png}),
        nbformat.v4.new_output("error", ename="ValueError", evalue=f"bad {TOKEN}",
                               traceback=[f"\x1b[31mValueError\x1b[0m: bad {TOKEN}"])])]
    nb.metadata["papermill"] = {"parameters": {"x": TOKEN}}
    scrub.notebook(nb)
    text = nbformat.writes(nb)
    assert TOKEN not in text and text.count("[secret API]") == 6
    assert nb.cells[0].outputs[1]["data"]["image/png"] == png  # binary data left alone


def test_fingerprints_are_keyed_per_runs_folder_and_enter_cache_keys(tmp_path: Path) -> None:
    key = fingerprint_key(tmp_path / "a")
    assert fingerprint_key(tmp_path / "a") == key  # made once, then read
    assert oct((tmp_path / "a" / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    other = fingerprint_key(tmp_path / "b")
    one = fingerprint(key, "API", TOKEN)
    assert one == fingerprint(key, "API", TOKEN) != fingerprint(key, "API", TOKEN + "x")
    assert one != fingerprint(other, "API", TOKEN)  # useless without the folder's key
    assert TOKEN not in one and len(one) == len("hmac-sha256:") + 32
    base = run_key("sha", {"a": 1}, {})
    assert run_key("sha", {"a": 1}, {}, {}) == base  # no secrets: the key is unchanged
    assert run_key("sha", {"a": 1}, {}, {"API": one}) != base
    assert run_key("sha", {"a": 1}, {}, {"API": fingerprint(key, "API", "another-one")}) != \
        run_key("sha", {"a": 1}, {}, {"API": one})
    prints = fingerprints(load_template(TEMPLATE), tmp_path / "a", {"SERVICE_TOKEN": TOKEN})
    assert prints == {"SERVICE_TOKEN": fingerprint(key, "SERVICE_TOKEN", TOKEN)}


def test_the_log_pipe_scrubs_whole_lines(tmp_path: Path) -> None:
    pipe = ScrubbingPipe(tmp_path / "log", Scrubber({"API": TOKEN}))
    half = len(TOKEN) // 2
    pipe.writer.write(f"first {TOKEN[:half]}".encode())  # a line split across writes
    pipe.writer.write(f"{TOKEN[half:]} end\nno newline at the end {TOKEN}".encode())
    pipe.close()
    assert (tmp_path / "log").read_text() == (
        "first [secret API] end\nno newline at the end [secret API]")


# --- end to end --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("executor", ["papermill", "pool"])
def test_a_secret_never_lands_in_the_runs_folder_or_mlflow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    try:
        record = run(TEMPLATE, options=RunOptions(runs_dir=runs, cwd=tmp_path,
                                                  executor=executor))
    finally:
        close_pools()
    assert record["status"] == "failed"
    assert record["mlflow"] is not None and record["mlflow"]["synced"], record["warnings"]
    assert (runs / "mlflow.db").exists()
    assert grep(runs, TOKEN) == []  # records, notebook, kernel log, events, MLflow store
    mark = "[secret SERVICE_TOKEN]"
    assert record["error"] is not None and mark in record["error"]["message"]
    assert record["logged_params"] == {"token": mark, "note": f"uses {mark}"}
    assert record["outputs"]["echo"] == {"token": mark}
    assert record["metrics"]["length"] == len(TOKEN)  # the notebook had the real value
    assert list(record["secrets"]) == ["SERVICE_TOKEN"]
    run_dir = runs / record["id"]
    log = (run_dir / "kernel.log").read_text()
    assert f"to the kernel log: {mark}" in log
    notebook = json.dumps(nbformat.read(run_dir / "notebook.ipynb", 4))
    assert notebook.count(mark) >= 5  # printed, encoded (twice), result, error
    # the executed notebook keeps the declaration, never a value
    assert "SERVICE_TOKEN: Secret" in notebook


@pytest.mark.slow
def test_a_pipeline_stage_is_cached_per_secret_fingerprint_and_checked_up_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.pipeline.run import PipelineOptions, run_pipeline

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "stages": {
        "call": {"template": str(TEMPLATE), "parameters": {"fail": False}}}}))
    opts = PipelineOptions(runs_dir=tmp_path / "runs", tracking_uri="none")
    monkeypatch.delenv("SERVICE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs the secret SERVICE_TOKEN"):
        run_pipeline(path, opts)
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    first = run_pipeline(path, opts)
    again = run_pipeline(path, opts)
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN + "-rotated")
    rotated = run_pipeline(path, opts)
    assert [r["status"] for r in (first, again, rotated)] == ["succeeded"] * 3
    states = [r["stages"]["call"] for r in (first, again, rotated)]
    assert [s["cached"] for s in states] == [False, True, False]
    assert states[1]["run_id"] == states[0]["run_id"] != states[2]["run_id"]
    assert grep(tmp_path / "runs", TOKEN) == []


def test_nbops_secret_by_hand_and_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    import nbops
    from nbops import kernel_api

    monkeypatch.delenv("NBOPS_RUN_DIR", raising=False)
    monkeypatch.setenv("X_TOKEN", TOKEN)
    monkeypatch.setattr(kernel_api, "_scrub", {})
    assert nbops.secret("X_TOKEN") == TOKEN  # by hand: read, and scrubbed from then on
    assert kernel_api._scrubber().text(TOKEN) == "[secret X_TOKEN]"
    with pytest.raises(ValueError, match="contains a secret"):
        kernel_api._check_name(f"a{TOKEN}", "artifact")
    with pytest.raises(LookupError, match="no value for the secret 'Y_TOKEN'"):
        nbops.secret("Y_TOKEN")
    monkeypatch.setenv("NBOPS_RUN_DIR", str(tmp_path))  # headless: declared ones only
    monkeypatch.setenv("NBOPS_SECRETS", "OTHER_TOKEN")
    with pytest.raises(LookupError, match="does not declare the secret 'X_TOKEN'"):
        nbops.secret("X_TOKEN")
    with pytest.raises(TypeError, match="only an annotation"):
        nbops.Secret()


def test_templates_lists_secrets_without_values(tmp_path: Path) -> None:
    (tmp_path / "nbops.yaml").write_text("name: p\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "call.ipynb").write_bytes(TEMPLATE.read_bytes())
    done = cli("templates", cwd=tmp_path, env={"SERVICE_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert "SERVICE_TOKEN: Secret" in done.stdout and TOKEN not in done.stdout
