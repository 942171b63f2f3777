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
from nbops.records.store import RunStore
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


# --- confined to the stages that declare them (issue 22, class 3) ------------------------

USES = NOTEBOOKS / "secret_split.ipynb"  # declares SERVICE_TOKEN, prints it in two halves
SNOOP = NOTEBOOKS / "snoop.ipynb"  # declares nothing, looks for SERVICE_TOKEN anyway
NOTHING = {"env": None, "launch": [], "kept": None}


def write_pipeline(folder: Path, stages: list[tuple[str, Path]]) -> Path:
    """A pipeline running ``stages`` in this order (each ``after`` the one before)."""
    spec: dict[str, Any] = {}
    for i, (name, template) in enumerate(stages):
        spec[name] = {"template": str(template), "parameters": {"marker": name}}
        if i:
            spec[name]["after"] = [stages[i - 1][0]]
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "confined", "stages": spec}))
    return path


def stream_text(notebook: Path) -> str:
    """Every cell's stream outputs, joined as a reader sees them."""
    nb = nbformat.read(notebook, 4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["pool", "papermill"])
def test_a_stage_that_does_not_declare_a_secret_never_gets_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    """Given through the environment, SERVICE_TOKEN reaches the stage that declares it
    only: the other stage's environment, launch environment (/proc/self/environ: a forked
    pool kernel's is its zygote's) and module state hold nothing; nothing under the runs
    folder (records, notebooks, record copies, kernel logs, mlflow.db and its artifacts)
    holds the value, not even split over two printed outputs."""
    from nbops.execution.pool import _forking_allowed
    from nbops.pipeline.run import PipelineOptions, run_pipeline

    if executor == "pool":
        assert _forking_allowed("python3")  # the forked path is the one exercised
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    path = write_pipeline(tmp_path, [("use", USES), ("snoop", SNOOP)])
    try:
        record = run_pipeline(path, PipelineOptions(runs_dir=runs, executor=executor))
    finally:
        close_pools()
    assert record["status"] == "succeeded", record["error"]
    store = RunStore(runs)
    use = store.read(str(record["stages"]["use"]["run_id"]))
    snoop = store.read(str(record["stages"]["snoop"]["run_id"]))
    assert use["outputs"]["length"] == len(TOKEN)  # the declaring stage had the value
    assert snoop["outputs"]["seen"] == NOTHING
    assert snoop["logged_params"] == {"env": "None"}
    assert "secrets" not in snoop
    assert (runs / "mlflow.db").exists() and use["mlflow"] and use["mlflow"]["synced"]
    assert grep(runs, TOKEN) == []
    for name in ("notebook.ipynb", ".record/notebook.ipynb"):  # the split print, merged
        text = stream_text(runs / use["id"] / name)
        assert TOKEN not in text and "[secret SERVICE_TOKEN]" in text, text
        assert TOKEN[:8] not in text


@pytest.mark.slow
def test_reuse_kernel_gives_a_stage_with_other_secrets_a_fresh_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--reuse-kernel: stages with the same secrets share a kernel; a stage whose secrets
    differ gets a fresh one, so module state cannot carry a secret to it."""
    from nbops.pipeline.run import PipelineOptions, run_pipeline

    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    path = write_pipeline(tmp_path, [("use", USES), ("again", USES), ("snoop", SNOOP),
                                     ("snoop2", SNOOP)])
    try:
        record = run_pipeline(path, PipelineOptions(runs_dir=runs, tracking_uri="none",
                                                    executor="reuse"))
    finally:
        close_pools()
    assert record["status"] == "succeeded", record["error"]
    store = RunStore(runs)
    runs_of = {n: store.read(str(s["run_id"])) for n, s in record["stages"].items()}
    pids = {n: r["runner"]["kernel_pid"] for n, r in runs_of.items()}
    assert pids["use"] == pids["again"] != pids["snoop"] == pids["snoop2"]
    assert runs_of["snoop"]["outputs"]["seen"] == NOTHING
    assert runs_of["snoop2"]["outputs"]["seen"] == NOTHING
    assert grep(runs, TOKEN) == []


@pytest.mark.slow
def test_a_run_never_gets_the_credentials_files_other_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name the credentials file holds is a secret: withheld from a template that does
    not declare it, even when the environment sets it too."""
    credentials = tmp_path / "credentials.yaml"  # outside any git work tree
    credentials.write_text(yaml.safe_dump({"SERVICE_TOKEN": TOKEN}))
    monkeypatch.setenv("NBOPS_CREDENTIALS", str(credentials))
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    record = run(SNOOP, options=RunOptions(runs_dir=runs, cwd=tmp_path, tracking_uri="none",
                                           executor="papermill"))
    assert record["status"] == "succeeded", record["error"]
    assert record["outputs"]["seen"] == NOTHING
    assert grep(runs, TOKEN) == []


def test_split_stream_outputs_are_merged_before_they_are_scrubbed() -> None:
    nb = nbformat.v4.new_notebook()
    half = 8
    nb.cells = [nbformat.v4.new_code_cell("print(t[:8], end=''); print(t[8:])", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=TOKEN[:half]),
        nbformat.v4.new_output("stream", name="stdout", text=[TOKEN[half:-3], TOKEN[-3:]]),
        nbformat.v4.new_output("stream", name="stderr", text="other stream\n"),
        nbformat.v4.new_output("stream", name="stdout", text="after\n")])]
    Scrubber({"API": TOKEN}).notebook(nb)
    outputs = nb.cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [
        ("stdout", "[secret API]"), ("stderr", "other stream\n"), ("stdout", "after\n")]


def test_a_run_withholds_every_secret_its_driver_knows(tmp_path: Path) -> None:
    """The kernel of a run gets its own template's secrets only: the names its driver's
    templates declare, the credentials file's names and those NBOPS_SECRETS lists are
    taken out of the environment it inherits, and their values are scrubbed."""
    from nbops.contract.secrets import for_run, withheld_names

    credentials = tmp_path / "credentials.yaml"
    credentials.write_text(yaml.safe_dump({"FILE_TOKEN": "from-the-file-1", "PATH": "x",
                                           "SHORT": "abc"}))
    env = {"NBOPS_CREDENTIALS": str(credentials), "SERVICE_TOKEN": TOKEN, "PATH": "/bin",
           "OTHER_TOKEN": "other-value-22", "OUTER_TOKEN": "outer-value-33",
           "NBOPS_SECRETS": "OUTER_TOKEN", "PLAIN": "kept"}
    assert withheld_names(["OTHER_TOKEN"], env=env) == {
        "OTHER_TOKEN", "OUTER_TOKEN", "FILE_TOKEN", "SHORT"}  # never PATH
    mine = for_run(load_template(TEMPLATE), ["OTHER_TOKEN"], env=env)
    assert mine.values == {"SERVICE_TOKEN": TOKEN}
    kernel = mine.kernel_env(env)
    assert kernel == {"NBOPS_CREDENTIALS": str(credentials), "SERVICE_TOKEN": TOKEN,
                      "PATH": "/bin", "PLAIN": "kept", "NBOPS_SECRETS": "SERVICE_TOKEN"}
    assert mine.scrubber.text(f"{TOKEN} other-value-22 outer-value-33 from-the-file-1") == (
        "[secret SERVICE_TOKEN] [secret OTHER_TOKEN] [secret OUTER_TOKEN] "
        "[secret FILE_TOKEN]")
    theirs = for_run(load_template(SNOOP), ["SERVICE_TOKEN"], env=env)
    assert theirs.values == {} and theirs.kernel_env(env) == {  # OTHER_TOKEN: not known
        "NBOPS_CREDENTIALS": str(credentials), "PATH": "/bin", "PLAIN": "kept",
        "OTHER_TOKEN": "other-value-22"}
    assert theirs.scrubber.text(TOKEN) == "[secret SERVICE_TOKEN]"


def test_a_pool_started_with_a_variable_a_run_withholds_is_not_used_for_it() -> None:
    from nbops.execution.pool import pool_for, secrets_key

    base = {"PATH": "/bin", "OMP_NUM_THREADS": "7"}
    try:
        leaky = pool_for("python3", {**base, "SERVICE_TOKEN": TOKEN}, False)
        clean = pool_for("python3", base, False)
        assert clean is not leaky and "SERVICE_TOKEN" not in clean.env
        assert pool_for("python3", {**base, "NBOPS_RUN_DIR": "/r"}, False) is clean
        run_env = {**base, "SERVICE_TOKEN": TOKEN, "NBOPS_SECRETS": "SERVICE_TOKEN"}
        assert pool_for("python3", run_env, False) is clean  # its own: never in a pool
    finally:
        close_pools()
    assert secrets_key(base) == "" != secrets_key(run_env)
    assert secrets_key(run_env) != secrets_key({**run_env, "SERVICE_TOKEN": TOKEN + "x"})
    assert TOKEN not in secrets_key(run_env)


@pytest.mark.slow
def test_every_stage_is_scrubbed_of_every_secret_of_its_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that finds another stage's secret by itself (here: in a file) and prints it,
    writes it to file descriptor 2, logs it as a param and an output and raises with it
    leaves it nowhere: notebook, record copy, kernel log, events, run.json, the pipeline
    record's error, mlflow.db."""
    from nbops.pipeline.run import PipelineOptions, run_pipeline

    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    found = tmp_path / "found.txt"
    found.write_text(TOKEN)
    runs = tmp_path / "runs"
    path = write_pipeline(tmp_path, [("use", USES), ("snoop", SNOOP)])
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["snoop"]["parameters"]["read"] = str(found)
    path.write_text(yaml.safe_dump(spec))
    try:
        record = run_pipeline(path, PipelineOptions(runs_dir=runs, executor="pool"))
    finally:
        close_pools()
    assert record["status"] == "failed"
    mark = "[secret SERVICE_TOKEN]"
    assert record["error"] is not None and f"found {mark}" in record["error"]
    snoop = RunStore(runs).read(str(record["stages"]["snoop"]["run_id"]))
    assert snoop["outputs"]["found"] == mark and snoop["logged_params"]["found"] == mark
    assert f"found on fd 2: {mark}" in (runs / snoop["id"] / "kernel.log").read_text()
    assert snoop["mlflow"] is not None and snoop["mlflow"]["synced"]
    assert grep(runs, TOKEN) == []


def test_a_loop_knows_the_secrets_of_all_its_templates(tmp_path: Path) -> None:
    """The loop passes its runs (monitor, A/B test) and its retrain pipeline the secrets
    of every template it may run, so each withholds those it does not declare."""
    from nbops.loop.config import LoopConfig
    from nbops.loop.trial import secret_names

    retrain = write_pipeline(tmp_path, [("use", USES), ("snoop", SNOOP)])
    cfg = LoopConfig(model="m", retrain=retrain, experiment=tmp_path / "missing.yaml",
                     monitor_template=str(SNOOP), root=tmp_path)
    assert secret_names(cfg) == ("SERVICE_TOKEN",)  # a missing pipeline adds none
    cfg.retrain = tmp_path / "missing.yaml"
    assert secret_names(cfg) == ()
    from nbops.pipeline.run import PipelineOptions, PipelineRun
    from nbops.pipeline.spec import load

    pipe = load(retrain)
    assert PipelineRun(pipe, PipelineOptions(runs_dir=tmp_path / "runs")).secret_names == (
        "SERVICE_TOKEN",)
    around = PipelineOptions(runs_dir=tmp_path / "runs", secret_names=("LOOP_TOKEN",))
    assert PipelineRun(pipe, around).secret_names == ("LOOP_TOKEN", "SERVICE_TOKEN")


def test_a_run_ended_by_a_bug_of_ours_is_scrubbed_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.execution.base import ExecutionRequest
    from nbops.execution.outcome import ExecutionResult
    from nbops.execution.papermill import PapermillExecutor

    class Broken(PapermillExecutor):
        def execute(self, request: ExecutionRequest, stop: Any = None) -> ExecutionResult:
            raise RuntimeError(f"a bug that quotes {request.env['SERVICE_TOKEN']}")

    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="a bug that quotes"):
        run(TEMPLATE, options=RunOptions(runs_dir=runs, tracking_uri="none",
                                         executor=Broken()))
    store = RunStore(runs)
    (run_id,) = store.ids()
    record = store.read(run_id)
    assert record["status"] == "failed" and record["error"] is not None
    assert "a bug that quotes [secret SERVICE_TOKEN]" in record["error"]["message"]
    assert grep(runs, TOKEN) == []
