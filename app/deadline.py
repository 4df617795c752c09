"""Request deadlines: no request runs longer than `Config.request_deadline_seconds`.

Gunicorn's `timeout` does not stop a slow request under threaded workers (it only
restarts a worker whose main loop stops answering), so the service bounds its own
requests. Each request gets a deadline when it arrives, kept in a context variable
(NDB's event loop runs on the request's thread, so every RPC sees it):

- every Datastore RPC, NDB's and our raw ones, gets a gRPC timeout of at most the
  time left (`rpc_timeout`, applied once where the client's transport is wrapped,
  `app.storage.metrics`); an RPC that would start past the deadline is not sent;
- loops that compute without RPCs (the summary engine) call `check()` as they go;
- past the deadline the request answers 503 `deadline_exceeded` with `Retry-After`.

Writes stay whole. Every write is one Commit RPC, and a commit is never cut: it is
refused before it is sent once the deadline has passed (nothing written), and once
sent it keeps its full timeout, so the deadline can never leave a caller unsure
whether a batch was stored. Nothing after a commit checks the deadline. Rollbacks are
exempt too: abandoning a transaction must work even past the deadline.

Outside a request (the CLI, tests calling services directly) there is no deadline.
"""

from __future__ import annotations

import contextvars
import time

from app.errors import DeadlineExceeded

_expires_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)


def start(seconds: float) -> None:
    """Give the current request `seconds` from now (none when `seconds` is 0)."""
    _expires_at.set(time.monotonic() + seconds if seconds > 0 else None)


def clear() -> None:
    _expires_at.set(None)


def remaining() -> float | None:
    """Seconds left before the deadline (negative past it); None without a deadline."""
    expires_at = _expires_at.get()
    return None if expires_at is None else expires_at - time.monotonic()


def check() -> None:
    """DeadlineExceeded if the current request is past its deadline."""
    expires_at = _expires_at.get()
    if expires_at is not None and time.monotonic() >= expires_at:
        raise DeadlineExceeded(
            "the request ran out of its time; it changed nothing. "
            "Narrow it (a shorter period, fewer groups) or retry later"
        )


def rpc_timeout(requested: float | None) -> float | None:
    """The timeout an RPC may have now: `requested`, cut to the time left.

    Raises DeadlineExceeded when no time is left, so the RPC is never sent.
    """
    left = remaining()
    if left is None:
        return requested
    check()
    return left if requested is None else min(requested, left)


def init_app(app) -> None:
    """Start each request's deadline as it arrives; forget it when the request ends."""
    seconds = app.config["METERING"].request_deadline_seconds
    app.before_request(lambda: start(seconds))
    app.teardown_request(lambda _exc=None: clear())
    # How app.errors tells that a failed Datastore call failed because time ran out (it
    # cannot import this module, which imports it for DeadlineExceeded).
    app.extensions["deadline_passed"] = passed


def passed() -> bool:
    """Whether the current request has a deadline and is past it."""
    left = remaining()
    return left is not None and left <= 0
