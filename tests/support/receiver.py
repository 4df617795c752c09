"""A real webhook receiver on loopback: records every request, and misbehaves on demand.

A threaded HTTP server on 127.0.0.1 (port 0). Each request is recorded (headers, exact
body bytes) and answered by the current `mode`:
- "ok" (200), "error" (500), "redirect" (302 to another path of this receiver),
- "hang": sleep `hang_seconds` before answering (past the dispatcher's timeout),
- "reset": close the connection with a TCP reset, answering nothing,
- `down()`: the listening socket is closed (connection refused) until `up()`.
A list of modes in `script` is used first, one per request, then `mode`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        mode = receiver._next_mode()
        receiver._record(
            Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
        )
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if mode == "hang":
            time.sleep(receiver.hang_seconds)
        status = {"ok": 200, "error": 500, "redirect": 302, "hang": 200}[mode]
        answer = receiver.answer_body
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, receiver: Receiver):
        super().__init__(address, _Handler)
        self.receiver = receiver


class Receiver:
    """The receiver; `url` to register as an endpoint, `received` what came."""

    def __init__(self):
        self.mode = "ok"
        self.script: list[str] = []
        self.hang_seconds = 3.0
        self.answer_body = b"thanks"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def down(self) -> None:
        """Close the listening socket: connections are refused."""
        self.stop()

    def up(self) -> None:
        """Listen again on the same port."""
        self._server = _Server(("127.0.0.1", self.port), self)
        self.start()

    def _next_mode(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.mode

    def _record(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)

    def of_type(self, event_type: str) -> list[Received]:

        with self._lock:
            return [r for r in self.received if json.loads(r.body)["type"] == event_type]
