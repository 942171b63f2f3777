"""``nbops serve MODEL``: the HTTP model server (FastAPI + uvicorn)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from .common import RUNS_DIR, TRACKING_URI

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback unless you say otherwise).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes.")
@click.option("--challenger", default=None, help="A second model (name@alias ...) that "
              "takes --split percent of requests.")
@click.option("--split", default=10.0, show_default=True, type=click.FloatRange(0, 100),
              help="Percent of requests for the challenger (sticky by X-Request-Key).")
@click.option("--shadow", default=None, help="A model run on every request off the "
              "response path (its answers are only logged).")
@click.option("--max-body-bytes", default=8 * 2**20, show_default=True,
              type=click.IntRange(1), help="Larger bodies get 413 before they are parsed.")
@click.option("--max-columns", default=1000, show_default=True, type=click.IntRange(1),
              help="Most columns a request may have when the model has no signature or "
              "--allow-extra-columns is given (otherwise: the signature's); more get 422 "
              "before a frame is built.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.001),
              help="Seconds a prediction may take before the request gets 504.")
@click.option("--max-concurrency", default=64, show_default=True, type=click.IntRange(1),
              help="Requests in flight per worker; more get 503 with Retry-After.")
@click.option("--allow-extra-columns", is_flag=True,
              help="Drop columns the model does not know (logged) instead of refusing.")
@click.option("--poll-seconds", default=30.0, show_default=True,
              type=click.FloatRange(0.05), help="How often a served alias is checked.")
@click.option("--log-sample", default=1.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of requests written to the prediction log.")
@click.option("--no-log", is_flag=True, help="Write no prediction log.")
@RUNS_DIR
@TRACKING_URI
def serve_cmd(model: str, host: str, port: int, workers: int, challenger: str | None,
              split: float, shadow: str | None, max_body_bytes: int, max_columns: int,
              timeout: float, max_concurrency: int, allow_extra_columns: bool, poll_seconds: float,
              log_sample: float, no_log: bool, runs_dir: Path | None,
              tracking_uri: str | None) -> None:
    """Serve MODEL (name@alias, name/version or runs:/RUN_ID/NAME) over HTTP.

    POST /invocations takes MLflow's request formats (JSON dataframe_split,
    dataframe_records, instances, inputs; or CSV); GET /health, /ready, /version, /metrics.
    Predictions are logged under RUNS/predictions/<model>/ for monitoring.
    """
    from ..serving.config import CONFIG_ENV, ServeConfig
    from ..serving.model import parse_ref

    for ref in (model, challenger, shadow):
        if ref:
            parse_ref(ref)  # a bad reference is a usage error before anything starts
    config = ServeConfig(model=model, challenger=challenger, split=split if challenger else 0,
                         shadow=shadow, runs_dir=str(runs_dir) if runs_dir else None,
                         tracking_uri=tracking_uri, max_body_bytes=max_body_bytes,
                         max_columns=max_columns, timeout=timeout,
                         max_concurrency=max_concurrency,
                         allow_extra_columns=allow_extra_columns, poll_seconds=poll_seconds,
                         log_predictions=not no_log, log_sample=log_sample)
    if host not in LOOPBACK:
        click.echo(f"warning: binding {host}: the server is reachable from other machines "
                   "and has no authentication; put it behind a proxy that has", err=True)
    import uvicorn

    if workers == 1:
        from ..serving.app import create_app

        uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
        return
    os.environ[CONFIG_ENV] = config.to_json()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="nbops-prom-"))
    uvicorn.run("nbops.serving.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="warning")
