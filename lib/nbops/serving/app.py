"""The HTTP model server: FastAPI app, request limits, variants, hot swap, metrics.

Endpoints: ``POST /invocations`` (MLflow's request formats, see ``inputs``), ``GET /health``
(the process is up), ``GET /ready`` (every variant loaded and warmed; details of the last
failed swap), ``GET /version`` (what each variant serves), ``GET /metrics`` (Prometheus).
Every response carries ``X-Model-Version`` (the champion's, or the version that answered).

Limits, in the order they apply to ``/invocations``: more than ``max_concurrency``
requests in flight → 503 with ``Retry-After``; a body over ``max_body_bytes`` → 413, from
``Content-Length`` or while reading, before any parsing; parsing and signature checks →
400/415/422 (``inputs``); a prediction over ``timeout`` seconds → 504 (its thread still
counts as in flight until it ends, so a slow model is back-pressured, not piled onto).
Any other failure → 500 with the error text; the process stays up through all of them.

Variants: ``champion`` (the MODEL), an optional ``challenger`` taking ``split`` percent of
requests (sticky by the ``X-Request-Key`` header when sent: the same key always gets the
same variant), and an optional ``shadow`` that sees every request off the response path on
its own worker thread (dropped, never queued without bound, when it falls behind; its
failures never reach the client). Each variant following an alias is polled every
``poll_seconds``; a new version is loaded, verified and warmed in the background and
swapped in atomically (a request uses the model it started with); a version that fails to
load or warm is not swapped in, and ``/ready`` shows why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import RequestRejected
from .inputs import check, parse_body
from .model import LoadedModel, ModelRef, load, parse_ref, resolve_version
from .predlog import Batch, PredictionLog, log_folder

LOG = logging.getLogger("nbops.serve")
CONFIG_ENV = "NBOPS_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Everything the server needs; JSON-able so worker processes can rebuild it."""

    model: str
    challenger: str | None = None
    split: float = 0.0  # percent of requests for the challenger
    shadow: str | None = None
    runs_dir: str | None = None
    tracking_uri: str | None = None
    max_body_bytes: int = 8 * 2**20
    timeout: float = 30.0
    max_concurrency: int = 64
    allow_extra_columns: bool = False
    poll_seconds: float = 30.0
    log_predictions: bool = True
    log_sample: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


class SwapError(TypedDict):
    version: int | None
    error: str
    at: str


class Slot:
    """One variant: the model it serves now, swapped atomically when its alias moves."""

    def __init__(self, variant: str, ref: ModelRef, config: ServeConfig) -> None:
        self.variant, self.ref, self.config = variant, ref, config
        self.current: LoadedModel | None = None
        self.swap_error: SwapError | None = None
        self.swaps = 0

    def load_first(self) -> None:
        self.current = self._load(None)

    def _load(self, version: int | None) -> LoadedModel:
        model = load(self.ref, self.config.runs_dir, self.config.tracking_uri, version)
        if model.example is not None:  # warm: the first real request is not the slow one
            frame, _ = check(model.example, model.columns, allow_extra=True)
            model.predict(frame)
        return model

    def poll(self) -> bool:
        """Swap in the version the alias points to now, if it moved; True if swapped."""
        if not self.ref.follows_alias or self.current is None:
            return False
        try:
            version = resolve_version(self.ref, self.config.tracking_uri)
        except Exception as exc:  # the registry being unreachable is not fatal
            self._failed(None, exc)
            return False
        if version == self.current.identity["version"]:
            return False
        if self.swap_error and self.swap_error["version"] == version:
            return False  # already failed: wait for the alias to move again
        try:
            fresh = self._load(version)
        except Exception as exc:
            self._failed(version, exc)
            return False
        old = self.current.identity["version"]
        self.current, self.swap_error = fresh, None
        self.swaps += 1
        LOG.warning("%s: swapped %s v%s -> v%s", self.variant, self.ref.name, old, version)
        return True

    def _failed(self, version: int | None, exc: Exception) -> None:
        self.swap_error = {"version": version, "error": f"{type(exc).__name__}: {exc}",
                           "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        LOG.error("%s: not swapping to %s v%s: %s", self.variant, self.ref.name, version, exc)


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
        champion = self.champion
        if self.config.log_predictions:
            assert self.config.runs_dir is not None
            self.log = PredictionLog(log_folder(Path(self.config.runs_dir),
                                                champion.identity["name"]),
                                     sample=self.config.log_sample)
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

    def predict(self, body: bytes, content_type: str, model: LoadedModel, variant: str,
                request_id: str) -> tuple[list[Any], list[str]]:
        """Parse, check, predict, log (on a worker thread)."""
        start = time.perf_counter()
        frame, extra = check(parse_body(body, content_type), model.columns,
                             self.config.allow_extra_columns)
        predictions = model.predict(frame)
        latency = (time.perf_counter() - start) * 1000
        if extra:
            LOG.warning("request %s: dropped extra column(s) %s", request_id, ", ".join(extra))
        if self.log is not None and self.log.wanted():
            self.log.append(_batch(frame, predictions, model, variant, request_id, latency))
        if "shadow" in self.slots:
            self._shadow(frame, request_id)
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
            if self.shadow_pending >= 100:  # behind: drop rather than queue without bound
                self.shadow_dropped += 1
                return
            self.shadow_pending += 1

        def run() -> None:
            try:
                model = self.slots["shadow"].current
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
            except Exception as exc:  # the shadow never affects the client
                LOG.warning("shadow failed on request %s: %s", request_id, exc)
                self.metrics.errors.labels(variant="shadow", code="500").inc()
                shadow = self.slots["shadow"].current
                if shadow is not None:
                    self.log_error(shadow, "shadow", request_id, 0.0, str(exc))
            finally:
                with self._shadow_lock:
                    self.shadow_pending -= 1

        self.shadow_worker.submit(run)

    def ready(self) -> dict[str, Any]:
        variants = {}
        for name, slot in self.slots.items():
            variants[name] = {"loaded": slot.current is not None,
                              "identity": slot.current.identity if slot.current else None,
                              "warmed_with_example": bool(slot.current is not None
                                                          and slot.current.example is not None),
                              "swaps": slot.swaps, "last_swap_error": slot.swap_error}
        return {"ready": all(v["loaded"] for v in variants.values()), "variants": variants}


def version_label(model: LoadedModel | None) -> str:
    """The ``X-Model-Version`` value: the registered version, or the run id of a run's
    model (empty while nothing is loaded)."""
    if model is None:
        return ""
    version = model.identity["version"]
    return str(version) if version is not None else model.identity["run_id"]


def _batch(frame: Any, predictions: list[Any], model: LoadedModel, variant: str,
           request_id: str, latency: float) -> Batch:
    return Batch(frame, predictions, {
        "request_id": request_id, "time": datetime.now(timezone.utc).isoformat(),
        "model": model.identity["name"], "version": model.identity["version"],
        "variant": variant, "latency_ms": round(latency, 3)})


class Metrics:
    """Prometheus metrics of one server (its own registry, so two apps never collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model", "version", "variant", "code"]
        self.requests = Counter("nbops_requests", "Requests answered", labels,
                                registry=self.registry)
        self.errors = Counter("nbops_errors", "Requests answered with an error, by code",
                              ["variant", "code"], registry=self.registry)
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

    def observe(self, model: LoadedModel | None, variant: str, code: int,
                seconds: float | None) -> None:
        name = model.identity["name"] if model else ""
        version = version_label(model)
        self.requests.labels(model=name, version=version, variant=variant,
                             code=str(code)).inc()
        if code >= 400:
            self.errors.labels(variant=variant, code=str(code)).inc()
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


def create_app(config: ServeConfig, server: Server | None = None) -> Any:
    """The FastAPI app for ``config`` (models load at startup)."""
    from contextlib import asynccontextmanager

    state = server or Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if state.slots["champion"].current is None:
            await asyncio.get_running_loop().run_in_executor(None, state.start)
        yield
        state.stop()

    app = FastAPI(title="nbops model server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.middleware("http")
    async def version_header(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if "x-model-version" not in response.headers:
            response.headers["X-Model-Version"] = version_label(state.slots["champion"].current)
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        details = state.ready()
        return JSONResponse(details, status_code=200 if details["ready"] else 503)

    @app.get("/version")
    async def version() -> Any:
        return {name: slot.current.identity if slot.current else None
                for name, slot in state.slots.items()}

    @app.get("/metrics")
    async def metrics() -> Any:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        slot = state.choose(request.headers.get("x-request-key"))
        model = slot.current
        start = time.perf_counter()

        def reply(status: int, payload: dict[str, Any], extra: dict[str, str] | None = None
                  ) -> Any:
            seconds = time.perf_counter() - start
            state.metrics.observe(model, slot.variant, status, seconds)
            if status >= 500 and model is not None:  # failures count in A/B guardrails
                state.log_error(model, slot.variant, request_id, seconds * 1000,
                                str(payload.get("error", "")))
            headers = {"X-Model-Version": version_label(model),
                       "X-Model-Variant": slot.variant, "X-Request-ID": request_id,
                       **(extra or {})}
            return JSONResponse(payload, status_code=status, headers=headers)

        if model is None:
            return reply(503, {"error": "the model is not loaded yet"}, {"Retry-After": "1"})
        if state.in_flight >= config.max_concurrency:
            return reply(503, {"error": f"server busy: {state.in_flight} requests in flight "
                                        f"(limit {config.max_concurrency}); retry shortly"},
                         {"Retry-After": "1"})
        state.in_flight += 1
        state.metrics.in_flight.inc()
        released = False
        future: Future[tuple[list[Any], list[str]]] | None = None
        loop = asyncio.get_running_loop()

        def release(_: Any = None) -> None:
            nonlocal released
            if not released:
                released = True
                state.in_flight -= 1
                state.metrics.in_flight.dec()

        try:
            body = await _read_limited(request, config.max_body_bytes)
            content_type = request.headers.get("content-type", "")
            future = state.workers.submit(state.predict, body, content_type, model,
                                          slot.variant, request_id)
            # in flight until the thread ends, even after a 504: slow models back-pressure
            future.add_done_callback(lambda f: loop.call_soon_threadsafe(release))
            predictions, extra = await asyncio.wait_for(asyncio.wrap_future(future),
                                                        config.timeout)
        except RequestRejected as exc:
            return reply(exc.status, {"error": str(exc),
                                      **({"field": exc.field} if exc.field else {})})
        except (asyncio.TimeoutError, TimeoutError):
            return reply(504, {"error": f"prediction took longer than {config.timeout:g} s"})
        except Exception as exc:  # the server stays up whatever the model does
            LOG.exception("request %s failed", request_id)
            return reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            if future is None or future.done():
                release()
        payload: dict[str, Any] = {"predictions": predictions}
        if extra:
            payload["dropped_columns"] = extra
        return reply(200, payload)

    return app


async def _read_limited(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestRejected(400, "invalid Content-Length header") from None
        if size > limit:
            raise RequestRejected(413, f"body of {size} bytes is over the limit of {limit} "
                                       "bytes (--max-body-bytes)")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestRejected(413, f"body is over the limit of {limit} bytes "
                                       "(--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def app_from_env() -> Any:
    """App factory for uvicorn worker processes (``--workers N``): config from the env."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))
