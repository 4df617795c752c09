"""The send timeout's watchdog (`dispatch._Watchdog`): one thread for every send, which
ends an exchange that outlives its timeout even when each byte arrives in time."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from app.services.webhooks import dispatch, safety


def test_the_watchdog_calls_an_abort_once_its_time_has_passed_and_never_a_cancelled_one():
    watchdog = dispatch._Watchdog()
    called: list[str] = []
    fired = threading.Event()

    def abort(name: str):
        def call() -> None:
            called.append(name)
            if name == "late":
                fired.set()

        return call

    cancelled = watchdog.watch(0.05, abort("cancelled"))
    watchdog.watch(0.3, abort("late"))
    watchdog.watch(0.1, abort("early"))
    watchdog.cancel(cancelled)
    assert fired.wait(5.0)
    assert called == ["early", "late"]  # by deadline, not by the order they were watched
    assert not watchdog.live


@pytest.fixture
def trickler():
    """A loopback server that answers a POST one byte every 0.2 s, for as long as the
    client stays: each read gets data well within a socket timeout of 1 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 1000:
                    if stop.is_set():
                        break
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5.0)
    server.close()


def test_a_send_to_an_endpoint_that_trickles_its_answer_ends_at_its_timeout(trickler):
    target = safety.resolve(f"http://127.0.0.1:{trickler}/hook", production=False)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        dispatch._post(target, {"content-type": "application/json"}, b"{}", timeout=1.0)
    took = time.monotonic() - began
    assert 0.9 < took < 3.0
