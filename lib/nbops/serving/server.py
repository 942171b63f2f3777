"""The model server without HTTP: variants, limits, the prediction log, and what one
request may cost (``app`` adapts it to FastAPI; nothing here knows the framework).

Limits, in the order they apply to a request (:meth:`Server.invoke`): more than
``max_concurrency`` requests in flight → 503 with ``Retry-After``; a body over
``max_body_bytes`` → 413 (the adapter's reader, before any parsing); a body wider than the
model's signature (or ``max_columns``), deeper than ``inputs.MAX_DEPTH``, not UTF-8 or
holding a lone surrogate → 4xx, measured before anything of that size is built
(``inputs``); a wrong value → 422; a prediction over ``timeout`` seconds → 504.

Who is at fault (the ``cause`` of an error, see ``metrics``): every 4xx is the client's; a
500 raised by the model's ``predict``, and a 504 while the model was predicting, are the
model's; anything else (busy, not loaded, a failure outside the model) is the server's.
Only the model's failures go to the prediction log as failed requests, so no request a
client shapes (and can steer to a variant with ``X-Request-Key``) counts against a model.

What a timeout stops: a request runs on a worker thread in phases (read → predict → log);
once it has been answered 504 the thread stops at the next phase boundary: a request still
parsing never reaches the model, and a prediction that ends after its 504 is neither logged
nor sent to the shadow. A Python thread cannot be killed, so a model's ``predict`` already
running goes on to its end; until then the request counts as in flight (the
``nbops_requests_in_flight`` gauge and the ``max_concurrency`` check), so a slow model is
back-pressured with 503s rather than piled onto.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import RequestRejected
from .config import ServeConfig
from .inputs import check, column_limit, names, parse_body
from .metrics import Cause, Metrics, version_label
from .model import LoadedModel, parse_ref
from .predlog import Batch, PredictionLog, log_folder
from .slots import Slot

LOG = logging.getLogger("nbops.serve")
SHADOW_BACKLOG = 100  # shadow requests waiting at most; more are dropped and counted


class Reply(NamedTuple):
    """What to answer: status, JSON payload, headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Job:
    """One request on its worker thread: the phase it is in (``queued``, ``reading``,
    ``predicting``, ``logging``), and whether it has been answered already (a 504)."""

    body: bytes
    content_type: str
    model: LoadedModel
    variant: str
    request_id: str
    phase: str = "queued"
    abandoned: threading.Event = field(default_factory=threading.Event)

    def enter(self, phase: str) -> None:
        """Move to ``phase``, or stop here if the client has been answered meanwhile."""
        if self.abandoned.is_set():
            raise _Abandoned(self.phase)
        self.phase = phase


class _Abandoned(Exception):
    """The request was answered (504) while its thread worked: it stops."""


class _ModelFailed(Exception):
    """The model's own ``predict`` raised (the original is the ``__cause__``)."""


class Server:
    """The state behind the app: variants, limits, log, metrics, poller."""

    def __init__(self, config: ServeConfig) -> None:
        from ..tracking.uri import resolve_uri
        from ..util.envvars import resolve_runs_dir

        runs = resolve_runs_dir(config.runs_dir)
        config.runs_dir, config.tracking_uri = str(runs), resolve_uri(config.tracking_uri, runs)
        self.config = config
        self.slots = {"champion": Slot("champion", parse_ref(config.model), config)}
        if config.challenger:
            self.slots["challenger"] = Slot("challenger", parse_ref(config.challenger), config)
        if config.shadow:
            self.slots["shadow"] = Slot("shadow", parse_ref(config.shadow), config)
        self.in_flight = 0
        self.workers = ThreadPoolExecutor(max(1, config.max_concurrency),
                                          thread_name_prefix="nbops-predict")
        self.shadow_worker = ThreadPoolExecutor(1, thread_name_prefix="nbops-shadow")
        self.shadow_pending = 0
        self.shadow_dropped = 0
        self._shadow_lock = threading.Lock()
        self.log: PredictionLog | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._random = random.Random()
        self.metrics = Metrics()

    def start(self) -> None:
        for slot in self.slots.values():
            slot.load_first()
        if self.config.log_predictions:
            assert self.config.runs_dir is not None
            self.log = PredictionLog(log_folder(Path(self.config.runs_dir),
                                                self.champion.identity["name"]),
                                     sample=self.config.log_sample,
                                     on_drop=self.metrics.log_dropped.inc)
        if any(s.ref.follows_alias for s in self.slots.values()):
            self._poller = threading.Thread(target=self._poll_loop, name="nbops-alias-poll",
                                            daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.shadow_worker.shutdown(wait=False, cancel_futures=True)
        if self.log:
            self.log.close()

    @property
    def champion(self) -> LoadedModel:
        model = self.slots["champion"].current
        assert model is not None, "the server has not started"
        return model

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            for slot in self.slots.values():
                slot.poll()

    def choose(self, key: str | None) -> Slot:
        """Champion, or the challenger for ``split`` percent (sticky by key)."""
        challenger = self.slots.get("challenger")
        if challenger is None or self.config.split <= 0:
            return self.slots["champion"]
        if key:
            bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 10_000
        else:
            bucket = self._random.randrange(10_000)
        return challenger if bucket < self.config.split * 100 else self.slots["champion"]

    async def invoke(self, read_body: Callable[[], Awaitable[bytes]], content_type: str,
                     request_id: str, key: str | None) -> Reply:
        """Answer one ``/invocations`` request (see the module doc for the order of the
        limits and who is at fault for each error)."""
        slot = self.choose(key)
        model = slot.current
        start = time.perf_counter()

        def reply(status: int, payload: dict[str, Any], cause: Cause | None = None,
                  extra: dict[str, str] | None = None) -> Reply:
            seconds = time.perf_counter() - start
            self.metrics.observe(model, slot.variant, status, seconds, cause)
            if cause == "model" and model is not None:  # what A/B guardrails count
                self.log_error(model, slot.variant, request_id, seconds * 1000,
                               str(payload.get("error", "")))
            return Reply(status, payload, {"X-Model-Version": version_label(model),
                                           "X-Model-Variant": slot.variant,
                                           "X-Request-ID": request_id, **(extra or {})})

        limit = self.config.max_concurrency
        if model is None:
            return reply(503, {"error": "the model is not loaded yet"}, "server",
                         {"Retry-After": "1"})
        if self.in_flight >= limit:
            return reply(503, {"error": f"server busy: {self.in_flight} requests in flight "
                                        f"(limit {limit}); retry shortly"}, "server",
                         {"Retry-After": "1"})
        self.in_flight += 1
        self.metrics.in_flight.inc()
        released = False
        job: Job | None = None
        future: Future[tuple[list[Any], list[str]]] | None = None
        loop = asyncio.get_running_loop()

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
                self.metrics.in_flight.dec()

        try:
            job = Job(await read_body(), content_type, model, slot.variant, request_id)
            future = self.workers.submit(self.work, job)
            # in flight until the thread ends, even after a 504: slow models back-pressure
            future.add_done_callback(lambda f: loop.call_soon_threadsafe(release))
            predictions, extra = await asyncio.wait_for(asyncio.wrap_future(future),
                                                        self.config.timeout)
        except RequestRejected as exc:
            return reply(exc.status, {"error": str(exc),
                                      **({"field": exc.field} if exc.field else {})}, "client")
        except (asyncio.TimeoutError, TimeoutError):
            if job is not None:
                job.abandoned.set()
            if job is not None and job.phase == "predicting":
                return reply(504, {"error": "prediction took longer than "
                                            f"{self.config.timeout:g} s"}, "model")
            return reply(504, {"error": f"request took longer than {self.config.timeout:g} s"
                                        " before its prediction started"},
                         "server")
        except _ModelFailed as exc:
            failure = exc.__cause__
            LOG.error("request %s: the model failed", request_id, exc_info=failure)
            return reply(500, {"error": f"{type(failure).__name__}: {failure}"[:2000]},
                         "model")
        except Exception as exc:  # the server stays up whatever happens
            LOG.exception("request %s failed", request_id)
            return reply(500, {"error": f"{type(exc).__name__}: {exc}"[:2000]}, "server")
        finally:
            if future is None or future.done():
                release()
        payload: dict[str, Any] = {"predictions": predictions}
        if extra:
            payload["dropped_columns"] = extra
        return reply(200, payload)

    def work(self, job: Job) -> tuple[list[Any], list[str]]:
        """Parse, check, predict, log (on a worker thread), phase by phase."""
        config, model = self.config, job.model
        job.enter("reading")
        start = time.perf_counter()
        limit = column_limit(model.columns, config.allow_extra_columns, config.max_columns)
        frame, extra = check(parse_body(job.body, job.content_type, model.columns, limit),
                             model.columns, config.allow_extra_columns)
        job.enter("predicting")
        try:
            predictions = model.predict(frame)
        except Exception as exc:
            raise _ModelFailed() from exc
        latency = (time.perf_counter() - start) * 1000
        job.enter("logging")  # answered 504 meanwhile: the client never saw these
        if extra:
            LOG.warning("request %s: dropped extra column(s) %s", job.request_id,
                        names(extra, len(extra)))
        if self.log is not None and self.log.wanted():
            self.log.append(_batch(frame, predictions, model, job.variant, job.request_id,
                                   latency))
        if "shadow" in self.slots:
            self._shadow(frame, job.request_id)
        return predictions, extra

    def log_error(self, model: LoadedModel, variant: str, request_id: str, latency: float,
                  error: str) -> None:
        """A failed request in the prediction log (row -1, no prediction, the error)."""
        if self.log is None:
            return
        self.log.append([{"request_id": request_id, "row": -1,
                          "time": datetime.now(timezone.utc).isoformat(),
                          "model": model.identity["name"],
                          "version": model.identity["version"], "variant": variant,
                          "latency_ms": round(latency, 3), "inputs": {}, "prediction": None,
                          "error": error[:500]}])

    def _shadow(self, frame: Any, request_id: str) -> None:
        with self._shadow_lock:
            if self.shadow_pending >= SHADOW_BACKLOG:  # behind: drop, never queue unbounded
                self.shadow_dropped += 1
                return
            self.shadow_pending += 1
        self.shadow_worker.submit(self._run_shadow, frame, request_id)

    def _run_shadow(self, frame: Any, request_id: str) -> None:
        model = self.slots["shadow"].current
        try:
            if model is None:
                return
            start = time.perf_counter()
            checked, _ = check(frame, model.columns, allow_extra=True)
            predictions = model.predict(checked)
            latency = (time.perf_counter() - start) * 1000
            self.metrics.observe(model, "shadow", 200, latency / 1000)
            if self.log is not None:
                self.log.append(_batch(checked, predictions, model, "shadow", request_id,
                                       latency))
        except RequestRejected as exc:  # the champion's input does not fit the shadow
            LOG.warning("shadow cannot take request %s: %s", request_id, exc)
            self.metrics.errors.labels(variant="shadow", code=str(exc.status),
                                       cause="client").inc()
        except Exception as exc:  # the shadow never affects the client
            LOG.warning("shadow failed on request %s: %s", request_id, exc)
            self.metrics.errors.labels(variant="shadow", code="500", cause="model").inc()
            if model is not None:
                self.log_error(model, "shadow", request_id, 0.0, str(exc))
        finally:
            with self._shadow_lock:
                self.shadow_pending -= 1

    def ready(self) -> dict[str, Any]:
        """Each variant's state, and the prediction log's losses (rows dropped, why)."""
        variants = {}
        for name, slot in self.slots.items():
            variants[name] = {"loaded": slot.current is not None,
                              "identity": slot.current.identity if slot.current else None,
                              "warmed_with_example": bool(slot.current is not None
                                                          and slot.current.example is not None),
                              "swaps": slot.swaps, "last_swap_error": slot.swap_error}
        log = None if self.log is None else {
            "folder": str(self.log.folder), "dropped_rows": self.log.dropped,
            "last_error": self.log.last_error}
        return {"ready": all(v["loaded"] for v in variants.values()), "variants": variants,
                "prediction_log": log}


def _batch(frame: Any, predictions: list[Any], model: LoadedModel, variant: str,
           request_id: str, latency: float) -> Batch:
    return Batch(frame, predictions, {
        "request_id": request_id, "time": datetime.now(timezone.utc).isoformat(),
        "model": model.identity["name"], "version": model.identity["version"],
        "variant": variant, "latency_ms": round(latency, 3)})
