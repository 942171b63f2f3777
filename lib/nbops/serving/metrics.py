"""The server's Prometheus metrics (its own registry, so two apps never collide).

``nbops_errors_total`` carries a ``cause`` label: ``client`` (a 4xx: the request was
wrong), ``model`` (the model raised, or its prediction ran past the timeout) or
``server`` (busy, not loaded, or a failure outside the model). Only ``model`` errors are
the served model's failures; only they are written to the prediction log as failed
requests, which the A/B error-rate guardrail counts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .model import LoadedModel

Cause = Literal["client", "model", "server"]


def version_label(model: LoadedModel | None) -> str:
    """The ``X-Model-Version`` value: the registered version, or the run id of a run's
    model (empty while nothing is loaded)."""
    if model is None:
        return ""
    version = model.identity["version"]
    return str(version) if version is not None else model.identity["run_id"]


class Metrics:
    """Requests by code, errors by cause, latency, predictions in flight, log drops."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model", "version", "variant", "code"]
        self.requests = Counter("nbops_requests", "Requests answered", labels,
                                registry=self.registry)
        self.errors = Counter("nbops_errors", "Requests answered with an error, by code and "
                              "cause (client, model, server)", ["variant", "code", "cause"],
                              registry=self.registry)
        self.latency = Histogram("nbops_request_latency_seconds",
                                 "Time from body read to answer",
                                 ["model", "version", "variant"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10, 30))
        # predictions still computing, including those already answered 504 (they hold a
        # worker until they end): what --max-concurrency is compared with
        self.in_flight = Gauge("nbops_requests_in_flight",
                               "Requests whose prediction is still computing",
                               registry=self.registry, multiprocess_mode="livesum")
        self.log_dropped = Counter("nbops_prediction_log_dropped_rows",
                                   "Prediction-log rows lost (unwritable folder, full disk, "
                                   "a queue the disk cannot keep up with)",
                                   registry=self.registry)

    def observe(self, model: LoadedModel | None, variant: str, code: int,
                seconds: float | None, cause: Cause | None = None) -> None:
        name = model.identity["name"] if model else ""
        version = version_label(model)
        self.requests.labels(model=name, version=version, variant=variant,
                             code=str(code)).inc()
        if code >= 400:
            self.errors.labels(variant=variant, code=str(code),
                               cause=cause or ("client" if code < 500 else "server")).inc()
        if seconds is not None:
            self.latency.labels(model=name, version=version, variant=variant).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several worker processes
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
