"""Which model to serve, loaded through nbops' integrity-checked loader.

A model reference is ``name@alias`` (follows the alias: the server polls it and swaps),
``name/version`` (one registered version) or ``runs:/RUN_ID/NAME`` (a model logged by an
nbops run). Registered versions are found through the ``nbops.model_path`` tag nbops's
register stage sets; the model files are re-hashed against their run record before
anything is unpickled (``records.queries.load_model``), so the server never loads an
unverified pickle.

The model's input contract comes from its MLflow signature (column names, types, whether
required); its input example, when saved, is what warms it before it takes traffic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict

from ..errors import NbopsError, RegistryError, RegistryNotFound, UsageError

_REF = re.compile(r"^(?:runs:/(?P<run>[^/\s]+)/(?P<artifact>[^/\s]+)|"
                  r"(?P<name>[^@/\s]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+)))$")


class ModelRef(NamedTuple):
    """A parsed model reference (exactly one form is set)."""

    text: str
    name: str | None = None
    alias: str | None = None
    version: int | None = None
    run_id: str | None = None
    artifact: str | None = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None


class ColumnSpec(TypedDict):
    """One input column of a model signature."""

    name: str
    type: str  # MLflow type: double, float, long, integer, boolean, string, datetime
    required: bool


class Identity(TypedDict):
    """What ``GET /version`` says about a loaded model."""

    name: str
    version: int | None
    alias: str | None
    run_id: str
    model_path: str
    reference: str


def parse_ref(text: str) -> ModelRef:
    """``name@alias``, ``name/version`` or ``runs:/RUN_ID/NAME``.

    Raises:
        UsageError: anything else.
    """
    match = _REF.match(text.strip())
    if not match:
        raise UsageError(f"cannot read model {text!r}: use name@alias (e.g. nbops-demo@champion),"
                         " name/version (nbops-demo/3) or runs:/RUN_ID/NAME")
    groups = match.groupdict()
    if groups["run"]:
        return ModelRef(text, run_id=groups["run"], artifact=groups["artifact"])
    version = int(groups["version"]) if groups["version"] else None
    return ModelRef(text, name=groups["name"], alias=groups["alias"], version=version)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with where it came from and its input contract."""

    model: Any
    identity: Identity
    columns: list[ColumnSpec]
    example: Any = None  # a DataFrame of a few rows, or None
    output: Literal["predict", "predict_proba"] = "predict"
    notes: list[str] = field(default_factory=list)

    def predict(self, frame: Any) -> list[Any]:
        """Predictions for a checked frame, as JSON-ready values."""
        import numpy as np

        result = self.model.predict(frame)
        values = np.asarray(result)
        return values.tolist()  # type: ignore[no-any-return]


def resolve_version(ref: ModelRef, tracking_uri: str | None = None) -> int | None:
    """The registered version ``ref`` means now (None for a run's model)."""
    from ..tracking.registry import version_by_alias

    if ref.run_id:
        return None
    if ref.version is not None:
        return ref.version
    assert ref.name is not None and ref.alias is not None
    found = version_by_alias(ref.name, ref.alias, tracking_uri)
    if found is None:
        raise RegistryNotFound(f"model {ref.name!r} has no alias {ref.alias!r} (see: nbops "
                               f"models show {ref.name})")
    return found["version"]


def load(ref: ModelRef, runs_dir: str | Path | None = None,
         tracking_uri: str | None = None, version: int | None = None) -> LoadedModel:
    """Load (and verify) the model ``ref`` means now, or its ``version`` when given."""
    from ..records.queries import load_model, load_run

    if ref.run_id:
        assert ref.artifact is not None
        run = load_run(ref.run_id, runs_dir)
        model = run.load_model(ref.artifact)
        folder = run.path / "models" / ref.artifact
        identity: Identity = {"name": ref.artifact, "version": None, "alias": None,
                              "run_id": ref.run_id, "model_path": str(folder),
                              "reference": ref.text}
        return _loaded(model, folder, identity)
    from ..tracking.registry import get_version

    assert ref.name is not None
    number = version if version is not None else resolve_version(ref, tracking_uri)
    assert number is not None
    found = get_version(ref.name, number, tracking_uri)
    path = found["tags"].get("nbops.model_path")
    if not path:
        raise RegistryError(f"{ref.name} v{number} was not registered by nbops (no "
                            "nbops.model_path tag): nbops serves only models it can verify")
    from ..records.relocate import rebase
    from ..util.envvars import resolve_runs_dir

    folder = Path(rebase(path, resolve_runs_dir(runs_dir)))  # a moved project: its own copy
    model = load_model(folder)
    identity = {"name": ref.name, "version": number, "alias": ref.alias,
                "run_id": folder.parent.parent.name, "model_path": str(folder),
                "reference": ref.text}
    return _loaded(model, folder, identity)


def _loaded(model: Any, folder: Path, identity: Identity) -> LoadedModel:
    columns, notes = signature_columns(folder)
    return LoadedModel(model, identity, columns, input_example(folder), notes=notes)


def signature_columns(folder: Path) -> tuple[list[ColumnSpec], list[str]]:
    """The input columns of the model's MLflow signature (empty with a note when none)."""
    import yaml

    spec = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    raw = (spec.get("signature") or {}).get("inputs")
    if not raw:
        return [], ["the model has no signature: inputs are passed through unchecked"]
    columns: list[ColumnSpec] = []
    for item in json.loads(raw):
        if "name" not in item:
            raise NbopsError(f"the signature of {folder} is not column-based; nbops serves "
                             "models with named input columns")
        columns.append({"name": str(item["name"]), "type": str(item.get("type", "string")),
                        "required": bool(item.get("required", True))})
    return columns, []


def input_example(folder: Path) -> Any:
    """The saved input example as a DataFrame, or None."""
    file = folder / "input_example.json"
    if not file.is_file():
        return None
    import pandas as pd

    data = json.loads(file.read_text())
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"])
    return None
