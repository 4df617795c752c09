"""Counting Datastore work: RPCs, entities read and entities written, per request.

`instrument(client)` wraps the NDB client's gRPC transport once, so every call,
NDB's own and ours, is counted into the current `Usage` (a context variable that
the app resets per request and reports in the `X-Datastore-Usage` header; the
per-org read budget of `app.ratelimit` adds up its `entities_read`). The same
wrapper bounds every call by the request's deadline (`app.deadline`): the one place
all RPCs pass through.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from app import deadline
from app.storage import journal


@dataclass
class Usage:
    """Datastore work of one request."""

    rpcs: int = 0
    entities_read: int = 0
    entities_written: int = 0

    def header(self) -> str:
        return f"rpcs={self.rpcs}; read={self.entities_read}; written={self.entities_written}"


_current: contextvars.ContextVar[Usage | None] = contextvars.ContextVar(
    "datastore_usage", default=None
)


def start() -> Usage:
    """Begin counting for the current request."""
    usage = Usage()
    _current.set(usage)
    return usage


def current() -> Usage | None:
    return _current.get()


def _count(usage: Usage | None, rpc_name: str, request: Any, response: Any) -> None:
    if usage is None:
        return
    usage.rpcs += 1
    if response is None:
        return
    if rpc_name == "lookup":  # billed per key asked for, found or not
        usage.entities_read += len(request.keys)
    elif rpc_name == "run_query":
        usage.entities_read += len(response.batch.entity_results)
    elif rpc_name == "commit":
        usage.entities_written += len(request.mutations)


def _journal(rpc_name: str, request: Any, response: Any) -> None:
    """Note a transaction begun or ended (`app.storage.journal`): a commit or rollback
    ends its transaction whatever its answer (None: it failed), unless it never got one
    (a kill)."""
    if rpc_name == "begin_transaction" and response is not None:
        journal.opened(response.transaction)
    elif rpc_name in ("commit", "rollback"):
        journal.closed(request.transaction)


#: RPCs the deadline never cuts short: a commit is refused before it is sent past the
#: deadline but never timed out by it once sent (its outcome would be unknown); a
#: rollback must work even past the deadline.
_WHOLE = frozenset({"commit"})
_EXEMPT = frozenset({"rollback"})
#: Inside a request, the timeout of a commit sent without one (NDB sends none): a hung
#: Datastore must not hold a request forever, and a commit takes well under this.
COMMIT_TIMEOUT_SECONDS = 60.0


def _bounded(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments with its timeout cut to the request's time left."""
    if name in _EXEMPT or deadline.remaining() is None:
        return kwargs
    if name in _WHOLE:
        deadline.check()
        if kwargs.get("timeout") is None:
            return {**kwargs, "timeout": COMMIT_TIMEOUT_SECONDS}
        return kwargs
    return {**kwargs, "timeout": deadline.rpc_timeout(kwargs.get("timeout"))}


class _CountingMethod:
    """A gRPC method that counts its calls (blocking and `.future` alike) and bounds
    them by the request's deadline."""

    def __init__(self, name: str, method: Any) -> None:
        self._name, self._method = name, method

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs = _bounded(self._name, kwargs)
        usage = _current.get()
        try:
            response = self._method(request, *args, **kwargs)
        except Exception:
            _count(usage, self._name, request, None)
            _journal(self._name, request, None)
            raise
        _count(usage, self._name, request, response)
        _journal(self._name, request, response)
        return response

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs = _bounded(self._name, kwargs)
        # The callback runs on a gRPC thread: take the request's Usage now.
        usage = _current.get()
        call = self._method.future(request, *args, **kwargs)

        def done(finished: Any) -> None:
            response = finished.result() if finished.exception() is None else None
            _count(usage, self._name, request, response)
            _journal(self._name, request, response)

        call.add_done_callback(done)
        return call


class _CountingTransport:
    """The NDB client's transport, with its RPC methods counted."""

    _METHODS = (
        "lookup",
        "run_query",
        "run_aggregation_query",
        "begin_transaction",
        "commit",
        "rollback",
        "allocate_ids",
        "reserve_ids",
    )

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._methods = {
            name: _CountingMethod(name, getattr(transport, name))
            for name in self._METHODS
            if hasattr(transport, name)
        }

    def __getattr__(self, name: str) -> Any:
        method = self._methods.get(name)
        return method if method is not None else getattr(self._transport, name)


def instrument(client: Any) -> None:
    """Count every RPC the NDB client makes from now on."""
    if not isinstance(client.stub, _CountingTransport):
        client.stub = _CountingTransport(client.stub)
