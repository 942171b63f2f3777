"""The loop policy: the ``loop:`` section of the project's ``nbops.yaml``.

Every key has a default but ``model`` and ``retrain``; an unknown key, a bad duration or a
bad type is a ConfigError naming it (exit 2) before a tick does anything. Durations are
``90s``, ``30m``, ``6h`` or ``7d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.config import config_file, read_section
from ..errors import ConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_KEYS = {"model", "reference", "monitor", "retrain", "experiment", "triggers", "limits",
         "fresh_data", "challenger"}
_CHALLENGER = {"min_labelled", "max_labelled", "alpha", "margin", "latency_margin",
               "error_margin"}
_FRESH = {"parameter", "labels", "target", "base", "window"}
_TRIGGERS = {"drift", "min_new_rows", "max_model_age", "schedule", "accuracy_drop",
             "accuracy_rows", "accuracy_window"}
_LIMITS = {"cooldown", "max_per_day", "dry_run"}
_MONITOR = {"template", "parameters"}


def seconds(text: object, where: str) -> float:
    """A duration (``90s``, ``30m``, ``6h``, ``7d``) in seconds."""
    match = _DURATION.fullmatch(str(text).strip()) if isinstance(text, (str, int)) else None
    if match is None:
        raise ConfigError(f"{where}: {text!r} is not a duration; write e.g. 90s, 30m, 6h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class LoopConfig:
    """The checked loop policy; paths are absolute (relative ones are from the project)."""

    model: str
    retrain: Path  # the pipeline a retrain runs
    experiment: Path  # the pipeline large drift runs (default: ``retrain``)
    reference: Path | None = None  # the first drift reference (rotated on promotion)
    monitor_template: str = "monitor"
    monitor_parameters: dict[str, Any] = field(default_factory=dict)
    drift: bool = True  # act on the monitor's action
    min_new_rows: int = 100  # fewer new logged rows since the last tick: no monitor run
    max_model_age_s: float | None = None  # retrain when the champion is older
    # retrain when the champion's accuracy on labelled live traffic is this far below the
    # accuracy its evaluation measured (None: not watched), judged on at least so many rows
    accuracy_drop: float | None = None
    accuracy_rows: int = 50
    accuracy_window_s: float | None = None  # only rows this recent (None: since promotion)
    schedule_s: float | None = None  # retrain at least this often
    cooldown_s: float = 3600.0  # no retrain within this of the last one
    max_per_day: int = 3  # retrains in any 24 hours
    dry_run: bool = False  # decide and record; run nothing
    root: Path = Path(".")
    # the A/B trial of a challenger the promotion policy did not let the retrain promote
    trial_min_labelled: int = 100  # labelled rows of the trial before the first test
    trial_max_labelled: int = 1000  # still no win with this many: refused
    trial_alpha: float = 0.05
    trial_margin: float = 0.01
    trial_latency_margin: float = 0.2  # guardrails of the A/B test (ab_evaluate)
    trial_error_margin: float = 0.01
    # retrain on the base table plus the labelled recent traffic (None: the pipeline as is)
    fresh_parameter: str | None = None  # STAGE.PARAMETER of the retrain pipeline
    labels: Path | None = None  # folder of label files (request_id, [row,] target)
    target: str = "target"
    fresh_base: Path | None = None  # default: ``reference`` (the first one, never rotated)
    fresh_window_s: float | None = None  # labelled traffic of the last so long (None: all)


def load(start: Path | None = None, config: Path | None = None) -> LoopConfig:
    """The project's loop policy.

    Raises:
        ConfigError: no project, no ``loop:`` section, or a bad value (named).
    """
    path = config or config_file(start)
    if path is None:
        raise ConfigError("no nbops.yaml here or above: the loop policy lives in the "
                          "project's nbops.yaml ('nbops init' makes one)")
    section = read_section(path, "loop")
    if not isinstance(section, dict):
        raise ConfigError(f"{path} has no 'loop:' section; see the README (The closed loop) "
                          "for one with its defaults")
    return parse(section, path.parent, str(path))


def parse(section: dict[str, Any], root: Path, where: str = "nbops.yaml") -> LoopConfig:
    """Check a ``loop:`` mapping (see the module docstring)."""
    _known(section, _KEYS, f"{where}: loop")
    model = section.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}: loop.model must name the served model")
    retrain = _path(section.get("retrain"), root, f"{where}: loop.retrain", required=True)
    assert retrain is not None
    triggers = _mapping(section.get("triggers"), f"{where}: loop.triggers", _TRIGGERS)
    limits = _mapping(section.get("limits"), f"{where}: loop.limits", _LIMITS)
    monitor = _mapping(section.get("monitor"), f"{where}: loop.monitor", _MONITOR)
    params = monitor.get("parameters", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: loop.monitor.parameters must be a mapping")
    fresh = _mapping(section.get("fresh_data"), f"{where}: loop.fresh_data", _FRESH)
    parameter = fresh.get("parameter")
    if fresh and (not isinstance(parameter, str) or "." not in parameter):
        raise ConfigError(f"{where}: loop.fresh_data.parameter must be STAGE.PARAMETER of "
                          "the retrain pipeline (e.g. prepare.data_path)")
    labels = fresh.get("labels", "labels") if fresh else None
    if labels is not None and (not isinstance(labels, str) or not labels):
        raise ConfigError(f"{where}: loop.fresh_data.labels must be a folder path")
    target = fresh.get("target", "target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}: loop.fresh_data.target must name the label column")
    trial = _mapping(section.get("challenger"), f"{where}: loop.challenger", _CHALLENGER)
    low = _count(trial.get("min_labelled", 100), f"{where}: loop.challenger.min_labelled")
    high = _count(trial.get("max_labelled", 1000), f"{where}: loop.challenger.max_labelled")
    if low < 1 or high < low:
        raise ConfigError(f"{where}: loop.challenger needs 1 <= min_labelled <= max_labelled "
                          f"(got {low} and {high})")
    return LoopConfig(
        trial_min_labelled=low, trial_max_labelled=high,
        trial_alpha=_share(trial.get("alpha", 0.05), f"{where}: loop.challenger.alpha"),
        trial_margin=_share(trial.get("margin", 0.01), f"{where}: loop.challenger.margin"),
        trial_latency_margin=_positive(trial.get("latency_margin", 0.2),
                                       f"{where}: loop.challenger.latency_margin"),
        trial_error_margin=_share(trial.get("error_margin", 0.01),
                                  f"{where}: loop.challenger.error_margin"),
        fresh_parameter=parameter if fresh else None,
        labels=(root / labels).resolve() if labels else None, target=target,
        fresh_base=_path(fresh.get("base"), root, f"{where}: loop.fresh_data.base"),
        fresh_window_s=_optional_seconds(fresh.get("window"),
                                         f"{where}: loop.fresh_data.window"),
        model=model, retrain=retrain,
        experiment=_path(section.get("experiment"), root, f"{where}: loop.experiment")
        or retrain,
        reference=_path(section.get("reference"), root, f"{where}: loop.reference"),
        monitor_template=str(monitor.get("template", "monitor")), monitor_parameters=params,
        drift=_bool(triggers.get("drift", True), f"{where}: loop.triggers.drift"),
        min_new_rows=_count(triggers.get("min_new_rows", 100),
                            f"{where}: loop.triggers.min_new_rows"),
        max_model_age_s=_optional_seconds(triggers.get("max_model_age"),
                                          f"{where}: loop.triggers.max_model_age"),
        accuracy_drop=None if triggers.get("accuracy_drop") is None else _share(
            triggers["accuracy_drop"], f"{where}: loop.triggers.accuracy_drop"),
        accuracy_rows=max(1, _count(triggers.get("accuracy_rows", 50),
                                    f"{where}: loop.triggers.accuracy_rows")),
        accuracy_window_s=_optional_seconds(triggers.get("accuracy_window"),
                                            f"{where}: loop.triggers.accuracy_window"),
        schedule_s=_optional_seconds(triggers.get("schedule"), f"{where}: loop.triggers.schedule"),
        cooldown_s=seconds(limits.get("cooldown", "1h"), f"{where}: loop.limits.cooldown"),
        max_per_day=_count(limits.get("max_per_day", 3), f"{where}: loop.limits.max_per_day"),
        dry_run=_bool(limits.get("dry_run", False), f"{where}: loop.limits.dry_run"),
        root=root)


def _known(section: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in section if k not in keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(keys))}")


def _mapping(value: object, where: str, keys: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    _known(value, keys, where)
    return value


def _path(value: object, root: Path, where: str, required: bool = False) -> Path | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path (relative to the project root)")
    path = (root / value).resolve()
    if not path.exists():
        raise ConfigError(f"{where}: {path} does not exist")
    return path


def _bool(value: object, where: str) -> bool:
    if type(value) is not bool:
        raise ConfigError(f"{where} must be true or false")
    return value


def _count(value: object, where: str) -> int:
    if type(value) is not int or value < 0:
        raise ConfigError(f"{where} must be a whole number >= 0")
    return value


def _share(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where} must be a number between 0 and 1")
    return float(value)


def _positive(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{where} must be a number >= 0")
    return float(value)


def _optional_seconds(value: object, where: str) -> float | None:
    return None if value is None else seconds(value, where)
