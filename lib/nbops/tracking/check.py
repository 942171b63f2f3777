"""Checking a tracking URI before anything runs: in seconds, with a clear answer.

MLflow, given a bad URI, fails late and slowly: it refuses a file store only when a run is
logged, retries an unreachable server for minutes, and creates the folders of any
``sqlite:///`` path it is given, anywhere on disk. nbops checks first (standard library only,
no MLflow import), before a record exists or a kernel starts:

- ``none``: nothing to check;
- ``http(s)://``: the server answers ``GET /health`` within ``CONNECT_TIMEOUT`` seconds
  in all (connecting, sending and reading together);
- ``sqlite:///PATH``: the folder of PATH exists (the runs folder's own store excepted:
  nbops creates that folder);
- a ``file:`` URI or a bare path: refused, since MLflow 3 refuses file stores (unless
  ``MLFLOW_ALLOW_FILE_STORE=true``);
- anything else (databricks, postgresql, ...) is left to MLflow.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import urllib.parse
from pathlib import Path

from ..errors import ConfigError
from .uri import NO_TRACKING, default_uri

CONNECT_TIMEOUT = 5.0


def check_uri(uri: str, runs_dir: Path) -> None:
    """Raises ConfigError (exit 2) naming what is wrong with ``uri`` and what to do."""
    if uri == NO_TRACKING or uri == default_uri(runs_dir):
        return
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() \
            not in ("true", "1"):
        raise ConfigError(f"tracking URI {uri!r} is a file store, which MLflow 3 refuses. Use "
                          "a SQLite store (--tracking-uri sqlite:///PATH/mlflow.db), a server "
                          "(http://HOST:PORT), or 'none' to keep run records only.")


def _check_server(uri: str) -> None:
    """``GET /health`` within ``CONNECT_TIMEOUT`` seconds *in all*: a server that trickles
    its answer a byte at a time is cut off at the deadline (a per-read timeout alone let
    one hold the start for minutes); the socket is closed, so nothing is left reading."""
    parts = urllib.parse.urlsplit(uri.rstrip("/") + "/health")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = kind(parts.hostname or "", parts.port, timeout=CONNECT_TIMEOUT)
    except ValueError as exc:  # a malformed port
        raise ConfigError(f"tracking URI {uri!r} is malformed: {exc}") from None
    result: dict[str, object] = {}

    def ask() -> None:
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
            response = conn.getresponse()
            response.read(_MAX_HEALTH_BYTES)
            result["status"] = response.status
        except (OSError, http.client.HTTPException) as exc:
            result["error"] = exc

    worker = threading.Thread(target=ask, name="nbops-tracking-check", daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT)
    if worker.is_alive():
        _close(conn)
        worker.join(1.0)
        result = {"error": f"no complete answer within {CONNECT_TIMEOUT:g} s"}
    _close(conn)
    status = result.get("status")
    if isinstance(status, int):
        if status >= 400:
            raise ConfigError(f"MLflow server {uri} answered {status} on /health: is it an "
                              "MLflow tracking server?")
        return
    reason = result.get("error")
    raise ConfigError(f"cannot reach the MLflow server at {uri} ({reason}) within "
                      f"{CONNECT_TIMEOUT:g} s. Start it, fix --tracking-uri / "
                      "MLFLOW_TRACKING_URI, or pass --tracking-uri none.")


_MAX_HEALTH_BYTES = 1 << 16


def _close(conn: http.client.HTTPConnection) -> None:
    """Close the connection so that a read blocked on it returns at once."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


def _check_sqlite(uri: str) -> None:
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if not path or path == ":memory:":
        return
    folder = Path("/" + path.lstrip("/") if uri.startswith("sqlite:////") else path).parent
    if not folder.is_dir():
        raise ConfigError(f"the SQLite tracking store {uri} is in folder {folder}, which does "
                          "not exist; create it first (nbops does not create folders named "
                          "by a tracking URI)")
