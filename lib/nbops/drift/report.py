"""The drift report as plain data and its JSON form (rendering lives in html/widget)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

SCHEMA = "nbops.drift/1"
Reason = Literal["distribution", "missing share", "unseen levels", "schema"]
ACTIONS = ("none", "warn", "retrain", "experiment")  # in order of severity


class MissingShare(TypedDict):
    """Share of missing values on each side and the test of their difference; ±inf counts
    as missing (``infinite`` says how much of it is infinite)."""

    reference: float
    current: float
    p_value: float
    drift: bool
    infinite: dict[str, float]  # share of ±inf values: {"reference": .., "current": ..}


class TextSignals(TypedDict):
    """What changed in a text column: its words, and its lengths (the second signal)."""

    tokens_p_value: float
    tokens_effect_size: float  # Jensen-Shannon distance of the word distributions
    length_p_value: float
    length_effect_size: float
    new_tokens: dict[str, float]  # current share of words rare or absent in the reference
    vanished_tokens: dict[str, float]  # reference share of words gone from the current


class DriftColumn(TypedDict, total=False):
    """The result for one column (every key is present but the ``unseen_*`` ones, set for
    categorical columns, and ``histogram``, set for tested columns)."""

    kind: str
    role: str
    test: str
    statistic: float
    p_value: float
    effect_size: float
    psi: float
    drift: bool
    significant_only: bool
    missing: MissingShare
    unseen_levels: dict[str, float]
    vanished_levels: list[str]
    warnings: list[str]
    histogram: dict[str, Any]
    unseen_alarm: bool
    unseen_expected_share: float
    time_range: dict[str, list[str]]  # datetime columns: {side: [first, last]} (ISO 8601)
    text: TextSignals  # text columns: vocabulary changes and the length signal
    threshold: float  # the effect size the column's effect was compared with
    reasons: list[Reason]  # why the column drifted (empty: it did not)


@dataclass
class Policy:
    """Maps the measured value (share of drifted features or performance drop) to an action,
    monotonic in severity (more drift never gets a milder action): below ``none_below``
    ``none``; up to ``retrain_from`` ``warn``; up to ``experiment_above`` (included)
    ``retrain``; above it ``experiment`` (back to experimentation: a search over models and
    hyperparameters, not a plain retrain).
    """

    none_below: float = 0.02
    retrain_from: float = 0.05
    experiment_above: float = 0.10

    def __post_init__(self) -> None:
        cuts = (self.none_below, self.retrain_from, self.experiment_above)
        if not all(isinstance(c, (int, float)) and 0.0 <= c <= 1.0 for c in cuts) or \
                list(cuts) != sorted(cuts):
            raise ValueError("drift policy tiers must satisfy 0 <= none_below <= retrain_from"
                             f" <= experiment_above <= 1, got {cuts}")

    def action(self, value: float) -> str:
        if value < self.none_below:
            return "none"
        if value < self.retrain_from:
            return "warn"
        if value <= self.experiment_above:
            return "retrain"
        return "experiment"

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)

    def bands(self, top: float = 1.0) -> list[tuple[float, float, str]]:
        """The tiers as ``(from, to, action)`` over ``[0, top]``, in order (for drawing)."""
        cuts = sorted({0.0, self.none_below, self.retrain_from, self.experiment_above,
                       max(top, self.experiment_above)})
        bands: list[tuple[float, float, str]] = []
        for low, high in zip(cuts[:-1], cuts[1:], strict=True):
            action = self.action((low + high) / 2)
            if bands and bands[-1][2] == action:
                bands[-1] = (bands[-1][0], high, action)
            else:
                bands.append((low, high, action))
        return bands


@dataclass
class DriftReport:
    """Everything :func:`nbops.drift.compare` found; ``to_dict()`` is the JSON form."""

    columns: dict[str, DriftColumn]
    schema: dict[str, list[str]]
    share_drifted: float
    prediction_drift: DriftColumn | None
    target_drift: DriftColumn | None
    performance: dict[str, Any] | None
    action: str
    measure: str
    measured_value: float
    multiplicity: str
    policy: Policy
    n_reference: int
    n_current: int
    warnings: list[str] = field(default_factory=list)
    summaries: str = "exact"  # or "sketch: ..." with the stated error bound (streamed data)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA, "columns": self.columns, "schema": self.schema,
                "share_drifted": self.share_drifted, "prediction_drift": self.prediction_drift,
                "target_drift": self.target_drift, "performance": self.performance,
                "action": self.action, "measure": self.measure,
                "measured_value": self.measured_value, "multiplicity": self.multiplicity,
                "policy": self.policy.to_dict(), "n_reference": self.n_reference,
                "n_current": self.n_current, "warnings": self.warnings,
                "summaries": self.summaries}

    @property
    def drifted(self) -> list[str]:
        return [n for n, c in self.columns.items() if c["drift"] and c["role"] == "feature"]

    def to_widget(self) -> Any:
        """An ipywidgets view (header, sortable table, per-column plot)."""
        from .widget import build

        return build(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widget, with the static report beside it as ``text/html``: a stored
        notebook shows the table (drifted rows highlighted) and the plots of drifted
        columns without a kernel and even untrusted; with widget state it shows the widget."""
        from .html import fragment

        bundle = dict(self.to_widget()._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = fragment(self)
        return bundle

    def to_html(self) -> str:
        """Static HTML: no JavaScript, no network, small (rendered by ``drift.html``)."""
        from .html import render

        return render(self)
