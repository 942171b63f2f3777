"""Validation of persisted documents against their versioned JSON schemas.

Every document nbops writes under ``runs/`` names its schema (``nbops.run/1``,
``nbops.pipeline/1``, ``nbops.sweep/1``); it is validated on every write and every read. A
document of a newer version than this nbops knows is refused with a message to upgrade.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import NotRegularFileError, RecordError
from ..util.files import decode_json, encode_json, read_regular

RUN_SCHEMA = "nbops.run/1"
PIPELINE_SCHEMA = "nbops.pipeline/1"
SWEEP_SCHEMA = "nbops.sweep/1"
CYCLE_SCHEMA = "nbops.cycle/1"
_FILES = {RUN_SCHEMA: "run.v1.json", PIPELINE_SCHEMA: "pipeline.v1.json",
          SWEEP_SCHEMA: "sweep.v1.json", CYCLE_SCHEMA: "cycle.v1.json"}


@cache
def _schema_document(schema: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (Path(__file__).parent / "schemas" / _FILES[schema]).read_text())
    return document


@cache
def _validator(schema: str) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(_schema_document(schema))


@cache
def _shallow_validator(schema: str) -> Any:
    """The schema cut to its top level: required keys and their types, nothing nested (what
    a listing reads; large metric histories and outputs are not walked)."""
    import jsonschema

    document = _schema_document(schema)
    keep = ("type", "enum", "const", "pattern")
    shallow = {"type": "object", "required": document["required"],
               "properties": {name: {k: v for k, v in spec.items() if k in keep}
                              for name, spec in document["properties"].items()}}
    return jsonschema.Draft202012Validator(shallow)


def validate(document: Any, schema: str, shallow: bool = False) -> None:
    """Raises RecordError naming the first violation of ``schema`` (e.g. ``nbops.run/1``);
    ``shallow`` checks only the top-level keys and their types."""
    encoded = document if shallow else encode_json(document)  # shallow: nothing walked
    what = schema.split("/")[0].replace("nbops.", "")
    if not isinstance(encoded, dict):
        raise RecordError(f"{what} record is not a JSON object")
    found = str(encoded.get("schema", ""))
    family = schema.split("/")[0] + "/"
    if found != schema and found.startswith(family):
        raise RecordError(f"{what} record {encoded.get('id')} has schema {found}, newer than "
                          "this nbops understands: upgrade nbops (pip install -U nbops)")
    validator = _shallow_validator(schema) if shallow else _validator(schema)
    errors = sorted(validator.iter_errors(encoded), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top)"
        raise RecordError(f"{what} record {encoded.get('id')} is invalid at {where}: "
                          f"{first.message}")


def load_document(file: Path, schema: str, shallow: bool = False) -> Any:
    """Read, decode and validate a persisted document; every failure is a RecordError that
    names the file (``FileNotFoundError`` passes through for the caller to explain). Only a
    regular file is opened: a folder, FIFO, socket or device is a RecordError, never read."""
    try:
        text = read_regular(file).decode("utf-8")
    except FileNotFoundError:
        raise
    except NotRegularFileError as exc:
        raise RecordError(f"{file} is unreadable: not a regular file: {exc.kind}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{file} is unreadable: {exc}") from None
    try:
        document = decode_json(json.loads(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"{file} is not valid JSON: {exc}") from None
    try:
        validate(document, schema, shallow)
    except RecordError as exc:
        raise RecordError(f"{file}: {exc}") from None
    return document
