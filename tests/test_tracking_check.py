"""The tracking check answers within its time limit in all, whatever the server does
(issue 22, class 10): real sockets on loopback, bounded in time and requests."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nbops.errors import ConfigError
from nbops.tracking import check


@contextmanager
def serving(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback server that hands each connection (at most 4) to ``answer``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        served = 0
        while not stop.is_set() and served < 4:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            served += 1
            threading.Thread(target=_answer, args=(answer, conn), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def _answer(answer: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn:
        try:
            conn.recv(65536)
            answer(conn)
        except OSError:
            pass


def trickle(conn: socket.socket) -> None:
    """A valid answer, one byte every 0.5 s: each read is quick, the whole is not."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK":
        conn.sendall(bytes([byte]))
        time.sleep(0.5)


def healthy(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")


def not_mlflow(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def silent(conn: socket.socket) -> None:
    time.sleep(30)


@pytest.mark.timeout(20)  # guards against a hang; the answer arrives after 1 s
@pytest.mark.parametrize("answer", [trickle, silent], ids=["trickle", "silent"])
def test_a_slow_server_is_cut_off_at_the_deadline(answer: Callable[[socket.socket], None],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "CONNECT_TIMEOUT", 1.0)
    with serving(answer) as uri, pytest.raises(ConfigError, match="within 1 s"):
        check.check_uri(uri, tmp_path / "runs")
    assert not any(t.name == "nbops-tracking-check" and t.is_alive()
                   for t in threading.enumerate())


def test_a_healthy_server_passes_and_another_service_is_named(tmp_path: Path) -> None:
    with serving(healthy) as uri:
        check.check_uri(uri, tmp_path / "runs")
    with serving(not_mlflow) as uri, pytest.raises(ConfigError, match="answered 404"):
        check.check_uri(uri, tmp_path / "runs")


def test_a_closed_port_is_named(tmp_path: Path) -> None:
    from conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match="cannot reach the MLflow server"):
        check.check_uri(uri, tmp_path / "runs")
