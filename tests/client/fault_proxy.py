"""A fault-injecting HTTP proxy on the loopback interface, between a client and the service.

It reads each HTTP/1.1 request from the client (keep-alive, Content-Length
bodies), asks its plan what to do, and then:

- `pass`: forwards it to the upstream service and relays the answer;
- `delay`: waits `delay_seconds`, then forwards it;
- `drop_before`: closes the connection without forwarding (nothing reached the service);
- `drop_after`: forwards it, lets the service answer, and closes the connection
  instead of relaying the answer (the service did the work; the client cannot know);
- `cut_after`: forwards it and relays only the first half of the answer;
- `503`, `429`, `413`: answers that status itself in the service's envelope (429 with
  `Retry-After`, seconds or an HTTP date), forwarding nothing.

When the upstream cannot be reached (the service is restarting) the client's
connection is closed, as a load balancer with no backend would. Every request
and the fault applied to it are logged, so tests can prove the faults happened.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "proxy-connection",
    "te",
    "upgrade",
    "trailer",
}
FAULTS = ("pass", "delay", "drop_before", "drop_after", "cut_after", "503", "429", "413")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Chaos:
    """A plan: random faults at the given rates (seeded), and timed outages.

    `only` limits the random faults to requests whose path starts with it.
    """

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 1
    only: str = "/v1/billing/meter-events"
    _outage: tuple[float, str] | None = None  # (until, fault)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self._random = random.Random(self.seed)

    def outage(self, fault: str, seconds: float) -> None:
        """Apply `fault` to every request for the next `seconds`."""
        with self._lock:
            self._outage = (time.monotonic() + seconds, fault)

    def __call__(self, request: Request) -> str:
        with self._lock:
            if self._outage and time.monotonic() < self._outage[0]:
                return self._outage[1]
            if not request.path.startswith(self.only):
                return "pass"
            draw = self._random.random()
        for fault, rate in self.rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return "pass"


class FaultProxy:
    """Serves on 127.0.0.1 (a free port) and forwards to `upstream` (host, port)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        plan: Callable[[Request], str] | None = None,
        delay_seconds: float = 0.3,
        retry_after: int | str = 1,
    ):
        self.upstream = upstream
        self.plan = plan or (lambda request: "pass")
        self.delay_seconds = delay_seconds
        self.retry_after = retry_after
        self.faults: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str, str]] = []  # (monotonic, path, fault)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._listener.close()
        with self._lock:
            for connection in list(self._connections):
                _close(connection)
        self._thread.join(timeout=5)

    # -- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while self._running:
                request = _read_request(reader)
                if request is None or not self._handle(connection, request):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(connection)
            _close(connection)

    def _handle(self, connection: socket.socket, request: Request) -> bool:
        """Apply the plan's fault to one request; False when the connection must close."""
        fault = self.plan(request)
        with self._lock:
            self.faults[fault] += 1
            self.arrivals.append((time.monotonic(), request.path, fault))
        if fault in ("503", "429", "413"):
            connection.sendall(_status_only(int(fault), self.retry_after))
            return True
        if fault == "drop_before":
            return False
        if fault == "delay":
            time.sleep(self.delay_seconds)
        answer = self._forward(request)
        if answer is None or fault == "drop_after":
            return False
        if fault == "cut_after":
            connection.sendall(answer[: len(answer) // 2])
            return False
        connection.sendall(answer)
        return True

    def _forward(self, request: Request) -> bytes | None:
        """The upstream's whole answer as bytes to relay, or None if it is unreachable."""
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in request.headers if k.lower() not in HOP_BY_HOP}
            upstream.request(
                request.method, request.path, body=request.body or None, headers=headers
            )
            response = upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            upstream.close()
        lines = [f"HTTP/1.1 {response.status} {response.reason}"]
        lines += [f"{k}: {v}" for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode("latin-1") + body


def _read_request(reader) -> Request | None:
    line = reader.readline(65537)
    if not line.strip():
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    headers = []
    while True:
        header = reader.readline(65537).decode("latin-1").rstrip("\r\n")
        if not header:
            break
        name, _, value = header.partition(":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = reader.read(length) if length else b""
    return Request(method, path, headers, body)


def _status_only(status: int, retry_after: int | str) -> bytes:
    reason = {503: "Service Unavailable", 429: "Too Many Requests", 413: "Content Too Large"}[
        status
    ]
    body = (
        b'{"error": {"type": "api-error", "message": "injected by the fault proxy", '
        b'"code": "injected"}}'
    )
    extra = f"Retry-After: {retry_after}\r\n" if status == 429 else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()
