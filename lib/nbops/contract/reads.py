"""What a template reads outside its inputs: the ``reads`` list of its ``nbops`` metadata.

A stage's result may depend on state that no parameter carries: a template that looks a
model up in the registry gets a different model when an alias moves. Such a template
declares what it reads, and the pipeline cache keys the stage on that state too (see
``nbops.pipeline.state``): the stage is served from the cache only while what it read is
as it was when its run ended. This is the whole vocabulary (one kind today)::

    "reads": [{"kind": "registry", "model": "model_name"}]
        the registered model named by parameter ``model_name``: every version (its
        source and model files) and every alias target
    "reads": [{"kind": "registry", "model": "model_name", "version": "version",
               "alias": "alias"}]
        one version of it: parameter ``version`` when it is set, else the version that
        the alias named by parameter ``alias`` points to (its source and model files)

Every field but ``kind`` names a parameter of the template (checked when the template is
loaded). A read whose ``model`` parameter is empty reads nothing (a template run by hand
on a baseline). ``"cache": false`` remains for state nbops cannot describe: such a stage
is never served from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TemplateError, did_you_mean

KINDS = ("registry",)
_FIELDS = {"kind", "model", "version", "alias"}
EXAMPLE = ('[{"kind": "registry", "model": "model_name"}] or [{"kind": "registry", '
           '"model": "model_name", "version": "version", "alias": "alias"}]')


@dataclass(frozen=True)
class RegistryRead:
    """A registered model (``version`` and ``alias`` unset), or one version of it; each
    field holds the name of the template parameter that gives the value."""

    model: str
    version: str | None = None
    alias: str | None = None

    def resolve(self, parameters: dict[str, Any]) -> dict[str, Any] | None:
        """The read with the stage's values: ``{"kind", "model"}`` plus ``"version"`` or
        ``"alias"`` (a version wins over an alias, as in ``infer``); None when the model
        name is empty (nothing is read)."""
        name = parameters.get(self.model)
        if not name:
            return None
        read: dict[str, Any] = {"kind": "registry", "model": str(name)}
        version = parameters.get(self.version) if self.version else None
        alias = parameters.get(self.alias) if self.alias else None
        if version is not None and version != "":
            read["version"] = int(version)
        elif alias:
            read["alias"] = str(alias)
        return read

    def to_dict(self) -> dict[str, Any]:
        found = {"kind": "registry", "model": self.model, "version": self.version,
                 "alias": self.alias}
        return {k: v for k, v in found.items() if v is not None}


def parse_reads(path: Path, raw: Any, parameters: set[str]) -> tuple[RegistryRead, ...]:
    """The checked ``reads`` list of a template's ``nbops`` metadata.

    Raises:
        TemplateError: not a list of known kinds whose fields name declared parameters.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TemplateError(f"template {path}: nbops.reads must be a list, e.g. {EXAMPLE}")
    found = []
    for position, item in enumerate(raw):
        where = f"template {path}: nbops.reads[{position}]"
        if not isinstance(item, dict) or item.get("kind") not in KINDS:
            raise TemplateError(f"{where} must be a mapping with kind one of "
                                f"{', '.join(KINDS)}, e.g. {EXAMPLE}")
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise TemplateError(f"{where} has unknown fields {unknown}; allowed: "
                                f"{', '.join(sorted(_FIELDS))}")
        if "model" not in item:
            raise TemplateError(f"{where} needs 'model': the parameter that names the "
                                "registered model")
        for field_name in ("model", "version", "alias"):
            value = item.get(field_name)
            if value is not None and (not isinstance(value, str) or value not in parameters):
                hint = did_you_mean(value, parameters) if isinstance(value, str) else ""
                raise TemplateError(f"{where}: '{field_name}' must name a parameter of the "
                                    f"template, got {value!r} (parameters: "
                                    f"{', '.join(sorted(parameters)) or 'none'}).{hint}")
        found.append(RegistryRead(item["model"], item.get("version"), item.get("alias")))
    return tuple(found)
