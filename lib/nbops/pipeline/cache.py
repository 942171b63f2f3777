"""The stage cache: a stage's key, its parameters from upstream outputs, cached runs.

A stage is served from the cache when an earlier successful run had the same cache key:
the sha256 of its template content, its resolved parameters and the artifact hashes and
outputs of its upstream stages. The cached record is verified (every file re-hashed)
before it is reused. A template that declares ``"cache": false`` in its ``nbops``
metadata (its result depends on state outside its inputs: the registry, an alias) is never
served from the cache; it runs every time, so what it reports is true now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..contract import params
from ..contract.secrets import fingerprints
from ..errors import NbopsError
from ..records.integrity import verify
from ..records.relocate import portable, rebase
from ..records.store import RunStore, resolve_runs_dir
from ..records.types import RunRecord
from ..util.files import dumps
from .spec import Pipeline, Stage

_VOLATILE = {"notebook.ipynb", ".record/notebook.ipynb", "kernel.log", "events.jsonl"}


def fingerprint(record: RunRecord) -> dict[str, Any]:
    """What a downstream stage depends on: outputs and content hashes of data artifacts
    (paths into runs written portably: a copied project has the same fingerprints)."""
    arts = sorted((a["path"], a["sha256"]) for a in record["artifacts"]
                  if a["path"] not in _VOLATILE)
    return {"outputs": portable(record["outputs"]), "artifacts": arts}


def cache_key(stage: Stage, resolved: dict[str, Any], upstream: dict[str, RunRecord],
              secrets: Mapping[str, str] | None = None) -> str:
    return run_key(stage.template.sha256, resolved, upstream, secrets)


def run_key(template_sha256: str, resolved: dict[str, Any],
            upstream: dict[str, RunRecord], secrets: Mapping[str, str] | None = None) -> str:
    """sha256 of the template's content, the resolved parameters and the upstream
    fingerprints: what a stage or a sweep trial is cached under. ``secrets``: the keyed
    fingerprints of its secrets (``contract.secrets.fingerprints``), never their values:
    a run with another credential is another run."""
    payload: dict[str, Any] = {
        "template": template_sha256, "parameters": portable(resolved),
        "upstream": {name: fingerprint(rec) for name, rec in sorted(upstream.items())}}
    if secrets:  # absent otherwise: keys of templates without secrets stay as they were
        payload["secrets"] = dict(sorted(secrets.items()))
    return hashlib.sha256(dumps(payload, indent=None).encode()).hexdigest()


def stage_parameters(stage: Stage, done: dict[str, RunRecord],
                     runs_dir: Path | None = None) -> dict[str, Any]:
    """Literal parameters plus the upstream outputs they reference, checked and typed;
    paths into runs point into ``runs_dir`` (see ``records.relocate``)."""
    values = dict(stage.parameters)
    for param, (source, out) in stage.refs.items():
        outputs = rebase(done[source]["outputs"], runs_dir) if runs_dir else done[source][
            "outputs"]
        if out not in outputs:
            raise NbopsError(f"stage '{stage.name}' needs output '{out}' of stage '{source}', "
                             f"but run {done[source]['id']} did not produce it (it produced: "
                             f"{', '.join(outputs) or 'nothing'})")
        values[param] = outputs[out]
    resolved, _ = params.resolve(stage.template, overrides=values)
    return resolved


def cache_index(store: RunStore) -> dict[str, list[str]]:
    """Succeeded runs by cache key, newest first: one pass over the store for a caller that
    looks up many keys (a sweep's trials)."""
    index: dict[str, list[str]] = {}
    for run_id in reversed(store.ids()):
        try:
            summary = store.read(run_id, full=False)
        except NbopsError:
            continue
        key = _key_of(summary)
        if key is not None and summary["status"] == "succeeded":
            index.setdefault(key, []).append(run_id)
    return index


def find_cached(store: RunStore, key: str,
                index: dict[str, list[str]] | None = None) -> RunRecord | None:
    """The newest succeeded, intact run with this cache key (a pipeline stage's or a sweep
    trial's: both keys hash the same things); ``index`` from :func:`cache_index` spares
    reading every record again."""
    candidates = index.get(key, []) if index is not None else reversed(store.ids())
    for run_id in candidates:
        try:
            summary = store.read(run_id, full=False)
            if _key_of(summary) != key or summary["status"] != "succeeded":
                continue
            record = store.read(run_id)
        except NbopsError:
            continue
        if not verify(store.path(run_id), record):
            return record
    return None


def _key_of(record: RunRecord) -> str | None:
    """The cache key a record was run under: as a pipeline stage or as a sweep trial."""
    for ref in (record["pipeline"], record.get("sweep")):
        if ref is not None and ref.get("cache_key"):
            return str(ref["cache_key"])
    return None


def cache_states(pipe: Pipeline, runs_dir: Path | None = None) -> dict[str, str]:
    """For ``pipeline show``: which stages a run would take from the cache."""
    store = RunStore(resolve_runs_dir(runs_dir))
    done: dict[str, RunRecord] = {}
    states: dict[str, str] = {}
    for name in pipe.order:
        stage = pipe.stages[name]
        if any(d not in done for d in stage.upstream):
            states[name] = "will run (an upstream stage will run)"
            continue
        if stage.sweep is not None:
            states[name] = "will sweep (each trial is cached on its own: nbops sweep ls)"
            continue
        upstream = {d: done[d] for d in stage.upstream}
        try:
            key = cache_key(stage, stage_parameters(stage, upstream, store.root), upstream,
                            fingerprints(stage.template, store.root))
        except NbopsError as exc:
            states[name] = f"will run ({exc})"
            continue
        cached = find_cached(store, key)
        if cached is None:
            states[name] = "will run (no cached run)"
        elif not stage.template.cache:  # downstream is judged as if its outputs stay put
            done[name] = cached
            states[name] = ("will run (never cached: it reads outside state such as the "
                            "registry)")
        else:
            done[name] = cached
            states[name] = f"cached (run {cached['id']})"
    return states
