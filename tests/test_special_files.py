"""FIFOs, sockets, devices and odd ``run.json`` entries in the run store: never opened,
always named (records built directly, no kernel; ``timeout`` guards against a hang)."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from test_integrity import finished

from conftest import cli
from nbops.errors import NotRegularFileError
from nbops.pipeline.cache import find_cached
from nbops.pipeline.content import content_of
from nbops.records.integrity import verify
from nbops.records.queries import list_records
from nbops.records.store import RunStore
from nbops.util.files import open_regular, sha256_file

pytestmark = pytest.mark.timeout(60)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    short = Path(tempfile.mkdtemp(dir=path.parent.anchor + "tmp")) / "s"  # AF_UNIX: <108 B
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(short))
    sock.close()  # the socket file stays
    os.rename(short, path)
    short.parent.rmdir()


def _char_device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # S_IFCHR: /dev/null's numbers
    except PermissionError:
        pytest.skip("mknod not permitted here")


def _zero_device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero: reads never end
    except PermissionError:
        pytest.skip("mknod not permitted here")


MAKERS = {"a FIFO": _fifo, "a socket": _socket, "a character device": _char_device}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_verify_names_a_special_file_extra_or_in_place_of_a_recorded_one(
        tmp_path: Path, kind: str) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/data.csv": "a,b\n", "artifacts/model.bin": "m"})
    run_dir = store.path(run_id)
    MAKERS[kind](run_dir / "artifacts" / "extra")
    (run_dir / "artifacts" / "data.csv").unlink()
    MAKERS[kind](run_dir / "artifacts" / "data.csv")
    problems = verify(run_dir, store.read(run_id))
    assert f"{run_id}: changed artifacts/data.csv (now not a regular file: {kind})" in problems
    assert f"{run_id}: unlisted artifacts/extra (not a regular file: {kind})" in problems
    assert len(problems) == 2
    # the CLI: exit 1, each named by path, no traceback
    done = cli("runs", "verify", run_id, "--runs-dir", str(store.root), timeout=50)
    assert done.returncode == 1, done.stderr
    assert f"artifacts/extra (not a regular file: {kind})" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_device_that_never_ends_is_never_read(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/data.csv": "a,b\n"})
    _zero_device(store.path(run_id) / "artifacts" / "zero")
    assert verify(store.path(run_id), store.read(run_id)) == [
        f"{run_id}: unlisted artifacts/zero (not a regular file: a character device)"]


def test_a_symlink_to_a_fifo_outside_the_run_is_reported_not_followed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/data.csv": "a,b\n"})
    _fifo(tmp_path / "outside")
    os.symlink(tmp_path / "outside", store.path(run_id) / "artifacts" / "link")
    os.symlink("/dev/zero", store.path(run_id) / "artifacts" / "zero")
    assert sorted(verify(store.path(run_id), store.read(run_id))) == [
        f"{run_id}: unlisted artifacts/link (a symlink to {tmp_path / 'outside'})",
        f"{run_id}: unlisted artifacts/zero (a symlink to /dev/zero)"]


@pytest.mark.parametrize("kind", ["a FIFO", "a socket"])
def test_the_notebook_as_a_special_file_is_named(tmp_path: Path, kind: str) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {".record/notebook.ipynb": '{"cells": []}'})
    evidence = store.path(run_id) / ".record" / "notebook.ipynb"
    evidence.unlink()
    MAKERS[kind](evidence)
    assert verify(store.path(run_id), store.read(run_id)) == [
        f"{run_id}: changed .record/notebook.ipynb (now not a regular file: {kind})"]


def test_the_cache_skips_a_run_holding_a_fifo_and_says_why(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/data.csv": "a,b\n"})
    record = store.read(run_id)
    record["pipeline"] = {"cache_key": "k" * 64}
    store.write(record)
    assert find_cached(store, "k" * 64) is not None
    _fifo(store.path(run_id) / "artifacts" / "pipe")
    failed: list[str] = []
    assert find_cached(store, "k" * 64, failed=failed) is None
    assert failed == [f"{run_id}: unlisted artifacts/pipe (not a regular file: a FIFO)"]


def test_content_keys_never_open_a_fifo(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_text("a\n")
    _fifo(folder / "pipe")
    special: list[str] = []
    first = content_of(folder, special)
    assert special == [f"{folder / 'pipe'}: not a regular file: a FIFO"]
    assert content_of(folder)["sha256"] != first["sha256"]  # never matches another key
    with pytest.raises(NotRegularFileError, match="not a regular file: a FIFO"):
        sha256_file(folder / "pipe")


def _record_as_folder(path: Path) -> None:
    path.mkdir()


def _record_as_dangling_link(path: Path) -> None:
    os.symlink(path.parent / "gone.json", path)


@pytest.mark.parametrize("make, said", [
    (_fifo, "not a regular file: a FIFO"), (_record_as_folder, "not a regular file: a folder"),
    (_socket, "not a regular file: a socket"), (_record_as_dangling_link, "a symlink to")])
def test_an_unreadable_run_json_is_named_not_hidden(tmp_path: Path, make: Any,
                                                    said: str) -> None:
    runs = tmp_path / "runs"
    store = RunStore(runs)
    good = finished(store, {})
    (runs / "odd-run").mkdir()
    make(runs / "odd-run" / "run.json")
    problems: list[str] = []
    assert [r["id"] for r in list_records(runs, problems=problems)] == [good]
    assert len(problems) == 1 and said in problems[0]
    listing = cli("runs", "ls", "--runs-dir", str(runs), timeout=50)
    assert listing.returncode == 0 and good in listing.stdout
    assert f"warning: skipped {runs / 'odd-run' / 'run.json'} is unreadable" in listing.stderr
    verified = cli("runs", "verify", "--runs-dir", str(runs), timeout=50)
    assert verified.returncode == 1, verified.stdout
    assert str(runs / "odd-run" / "run.json") in verified.stdout and said in verified.stdout
    shown = cli("runs", "show", "odd-run", "--runs-dir", str(runs), timeout=50)
    assert shown.returncode == 1 and said in shown.stderr, shown.stderr
    assert "Traceback" not in verified.stderr + listing.stderr + shown.stderr


def test_runs_ls_and_show_escape_control_and_bidi_characters(tmp_path: Path) -> None:
    """A record written by hand (or by an older nbops) may hold any name: printed escaped."""
    store = RunStore(tmp_path / "runs")
    run_id = finished(store, {"artifacts/a\rb\u202etxt.csv": "x"}, stage="\x1b[31mred\u202e")
    bad = ("\x1b", "\u202e", "\r")
    listing = cli("runs", "ls", "--runs-dir", str(store.root), timeout=50)
    assert listing.returncode == 0 and "\\x1b[31mred\\u202e" in listing.stdout
    shown = cli("runs", "show", run_id, "--runs-dir", str(store.root), timeout=50)
    assert shown.returncode == 0, shown.stderr
    assert "stage:    \\x1b[31mred\\u202e" in shown.stdout
    assert "artifacts/a\\rb\\u202etxt.csv" in shown.stdout
    assert not any(c in listing.stdout + shown.stdout for c in bad)
    (store.path(run_id) / "artifacts" / "a\rb\u202etxt.csv").write_text("changed")
    verified = cli("runs", "verify", run_id, "--runs-dir", str(store.root), timeout=50)
    assert verified.returncode == 1 and "changed artifacts/a\\rb\\u202etxt.csv" in verified.stdout
    assert not any(c in verified.stdout for c in bad)


def _lookup(tmp_path: Path, source: str) -> tuple[Any, Any]:
    import yaml

    from nbops.pipeline.cache import Lookup
    from nbops.pipeline.spec import load

    notebooks = Path(__file__).parent / "notebooks"
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump({"name": "special", "stages": {"count": {
        "template": str(notebooks / "fake_count.ipynb"), "parameters": {"source": source}}}}))
    lookup = Lookup(RunStore(tmp_path / "runs"), "none", tmp_path)
    return lookup, load(file)


def test_the_pipeline_cache_says_which_special_file_makes_a_stage_run(tmp_path: Path) -> None:
    from nbops.pipeline.cache import stage_parameters

    _fifo(tmp_path / "input.pipe")  # a Path parameter naming a FIFO: never read for the key
    lookup, spec = _lookup(tmp_path, str(tmp_path / "input.pipe"))
    stage = spec.stages["count"]
    decision = lookup.decide(stage, stage_parameters(stage, {}), {})
    assert decision.cached is None
    assert decision.reason == ("an input cannot be keyed by its content "
                               f"({tmp_path / 'input.pipe'}: not a regular file: a FIFO)")

    (tmp_path / "input.txt").write_text("1\n")  # a cached run holding a FIFO: not reused
    lookup, spec = _lookup(tmp_path, str(tmp_path / "input.txt"))
    stage = spec.stages["count"]
    key = lookup.decide(stage, stage_parameters(stage, {}), {}).key
    run_id = finished(lookup.store, {"artifacts/total.txt": "1"}, stage="count")
    record = lookup.store.read(run_id)
    record["pipeline"] = {"cache_key": key}
    lookup.store.write(record)
    assert lookup.decide(stage, stage_parameters(stage, {}), {}).cached is not None
    _fifo(lookup.store.path(run_id) / "artifacts" / "total.txt.pipe")
    decision = lookup.decide(stage, stage_parameters(stage, {}), {})
    assert decision.cached is None
    assert decision.reason == (
        "the earlier run with these inputs fails verification "
        f"({run_id}: unlisted artifacts/total.txt.pipe (not a regular file: a FIFO))")


def test_open_regular_refuses_every_other_kind_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    os.symlink(tmp_path / "plain", tmp_path / "link")
    _fifo(tmp_path / "fifo")
    _socket(tmp_path / "sock")
    (tmp_path / "dir").mkdir()
    for name, kind in (("fifo", "a FIFO"), ("sock", "a socket"), ("dir", "a folder")):
        with pytest.raises(NotRegularFileError, match=f"not a regular file: {kind}"):
            open_regular(tmp_path / name)
    with pytest.raises(NotRegularFileError, match="not a regular file: a symlink"):
        open_regular(tmp_path / "link", follow=False)
    with open_regular(tmp_path / "link") as handle:  # following is the caller's choice
        assert handle.read() == b"x"
    with pytest.raises(NotRegularFileError, match="a character device"):
        sha256_file(Path("/dev/zero"))
