"""The HTTP adapter: FastAPI routes over :class:`~nbops.serving.server.Server`.

Endpoints: ``POST /invocations`` (MLflow's request formats, see ``inputs``), ``GET /health``
(the process is up), ``GET /ready`` (every variant loaded and warmed; details of the last
failed swap; rows the prediction log dropped), ``GET /version`` (what each variant
serves), ``GET /metrics`` (Prometheus, see ``metrics``). Every response carries
``X-Model-Version`` (the champion's, or the version that answered).

This module only translates: it reads the body within ``max_body_bytes`` (413 from
``Content-Length`` or while reading, before any parsing) and turns the server's
:class:`~nbops.serving.server.Reply` into a response. Limits, variants, hot swap, errors
and their causes are the server's (see ``server``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import RequestRejected
from .config import CONFIG_ENV, ServeConfig
from .metrics import version_label
from .server import Server

__all__ = ["CONFIG_ENV", "ServeConfig", "Server", "app_from_env", "create_app"]


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
        reply = await state.invoke(lambda: read_limited(request, config.max_body_bytes),
                                   request.headers.get("content-type", ""),
                                   request.headers.get("x-request-id") or uuid.uuid4().hex,
                                   request.headers.get("x-request-key"))
        return JSONResponse(reply.payload, status_code=reply.status, headers=reply.headers)

    return app


async def read_limited(request: Any, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes, declared or read."""
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
