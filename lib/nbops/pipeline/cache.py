"""The stage cache: a stage's key, its parameters from upstream outputs, cached runs.

A stage is served from the cache when an earlier successful run had the same cache key:
the sha256 of its template content, its parameters as the key sees them (a file or folder
by its content, not its path: see ``content``), the fingerprints of the stages it runs
``after`` without taking their outputs, its secrets' fingerprints, and the outside state
its template declares it reads (``nbops.reads``: see ``state``), as that state was when
the cached run ended. The cached record is verified (every file re-hashed) before it is
reused. A template that declares ``"cache": false`` is never served from the cache.

:func:`decide` is the one place that decides: ``pipeline run`` acts on it and
``pipeline show`` reports it, so the prediction and the run agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import params
from ..contract.secrets import fingerprints
from ..errors import NbopsError
from ..records.integrity import verify
from ..records.relocate import portable, rebase
from ..records.store import RunStore
from ..records.types import RunRecord
from ..util.files import dumps
from .content import by_content, key_parameters
from .spec import Stage
from .state import describe, read_state, resolved_reads, unreadable

_VOLATILE = {"notebook.ipynb", ".record/notebook.ipynb", "kernel.log", "events.jsonl"}


def fingerprint(record: RunRecord) -> dict[str, Any]:
    """What a downstream stage depends on: outputs (paths into runs by their content) and
    content hashes of data artifacts: a copied project has the same fingerprints."""
    arts = sorted((a["path"], a["sha256"]) for a in record["artifacts"]
                  if a["path"] not in _VOLATILE)
    return {"outputs": by_content(record["outputs"], None), "artifacts": arts}


def run_key(template_sha256: str, resolved: dict[str, Any],
            upstream: dict[str, RunRecord], secrets: Mapping[str, str] | None = None) -> str:
    """sha256 of the template's content, the parameters (paths into runs by their content),
    and the upstream fingerprints: what a stage or a sweep trial is cached under.
    ``secrets``: the keyed fingerprints of its secrets (``contract.secrets.fingerprints``),
    never their values: a run with another credential is another run."""
    payload: dict[str, Any] = {
        "template": template_sha256, "parameters": portable(by_content(resolved, None)),
        "upstream": {name: fingerprint(rec) for name, rec in sorted(upstream.items())}}
    if secrets:  # absent otherwise: keys of templates without secrets stay as they were
        payload["secrets"] = dict(sorted(secrets.items()))
    return hashlib.sha256(dumps(payload, indent=None).encode()).hexdigest()


def with_state(inputs_key: str, state: list[dict[str, Any]]) -> str:
    """The full key: the inputs' key, and the outside state read (none: the inputs' key)."""
    if not state:
        return inputs_key
    payload = {"inputs": inputs_key, "reads": state}
    return hashlib.sha256(dumps(payload, indent=None).encode()).hexdigest()


@dataclass
class Decision:
    """What the cache says of one stage before it would run."""

    inputs_key: str  # template, parameters by content, ``after`` stages, secrets
    key: str  # with the outside state read now (see ``with_state``)
    reads: list[dict[str, Any]] = field(default_factory=list)  # the reads, resolved
    state: list[dict[str, Any]] = field(default_factory=list)  # what they found now
    cached: RunRecord | None = None
    reason: str = ""  # why it runs (empty when cached)


@dataclass
class Lookup:
    """Where and how stages are looked up: the same for ``pipeline run`` and ``show``."""

    store: RunStore
    uri: str  # the tracking store that registry reads look at
    base: Path  # the pipeline's folder: relative paths are read from there
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> fingerprints
    ready: Callable[[], None] | None = None  # called before the registry is read

    def decide(self, stage: Stage, resolved: dict[str, Any], upstream: dict[str, RunRecord],
               forced: str | None = None) -> Decision:
        """The stage's keys and its cached run, or why it runs (``forced``: the reason it
        must, such as "--force")."""
        data_sources = {source for source, _ in stage.refs.values()}
        ordering = {n: r for n, r in upstream.items() if n not in data_sources}
        special: list[str] = []
        keyed = key_parameters(stage.template, resolved, self.base, self.store.root, special)
        secrets = (self.secrets[stage.name] if stage.name in self.secrets
                   else fingerprints(stage.template, self.store.root))
        inputs_key = run_key(stage.template.sha256, keyed, ordering, secrets)
        reads = resolved_reads(stage.template, resolved)
        state = self._read(reads)
        decision = Decision(inputs_key, with_state(inputs_key, state), reads, state)
        if forced:
            decision.reason = forced
        elif not stage.template.cache:
            decision.reason = ("never cached: its template declares nbops.cache false "
                               "(it reads state nbops cannot describe)")
        elif (trouble := unreadable(state)) is not None:
            decision.reason = f"what it reads cannot be read now ({trouble})"
        elif special:
            decision.reason = f"an input cannot be keyed by its content ({special[0]})"
        else:
            failed: list[str] = []
            decision.cached = find_cached(self.store, decision.key, failed=failed)
            if decision.cached is None:
                decision.reason = (f"the earlier run with these inputs fails verification "
                                   f"({failed[0]})" if failed else self._miss(decision))
        return decision

    def state_after(self, decision: Decision) -> tuple[str, list[dict[str, Any]]]:
        """The full key and the state read once the stage's run has ended (what its record
        is cached under: a stage may change what it reads)."""
        state = self._read(decision.reads)
        return with_state(decision.inputs_key, state), state

    def _read(self, reads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if reads and self.ready is not None:
            self.ready()
        return read_state(reads, self.uri, self.store.root)

    def _miss(self, decision: Decision) -> str:
        if decision.reads:
            for run_id in reversed(self.store.ids()):
                try:
                    summary = self.store.read(run_id, full=False)
                except NbopsError:
                    continue
                ref = summary["pipeline"]
                if (ref is not None and ref.get("inputs_key") == decision.inputs_key
                        and summary["status"] == "succeeded"):
                    return (f"what it reads changed since run {run_id} (now: "
                            f"{describe(decision.state)})")
        return "no earlier run with these inputs"


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


def find_cached(store: RunStore, key: str, index: dict[str, list[str]] | None = None,
                failed: list[str] | None = None) -> RunRecord | None:
    """The newest succeeded, intact run with this cache key (a pipeline stage's or a sweep
    trial's: both keys hash the same things); ``index`` from :func:`cache_index` spares
    reading every record again. A candidate that fails verification (a changed file, a
    FIFO or device in its folder: never opened) is skipped, and its first problem is added
    to ``failed``."""
    candidates = index.get(key, []) if index is not None else reversed(store.ids())
    for run_id in candidates:
        try:
            summary = store.read(run_id, full=False)
            if _key_of(summary) != key or summary["status"] != "succeeded":
                continue
            record = store.read(run_id)
        except NbopsError:
            continue
        problems = verify(store.path(run_id), record)
        if not problems:
            return record
        if failed is not None:
            failed.append(problems[0])
    return None


def _key_of(record: RunRecord) -> str | None:
    """The cache key a record was run under: as a pipeline stage or as a sweep trial."""
    for ref in (record["pipeline"], record.get("sweep")):
        if ref is not None and ref.get("cache_key"):
            return str(ref["cache_key"])
    return None
