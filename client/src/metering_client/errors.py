"""The client's one error hierarchy.

`ApiError` carries what the service said, from its envelope
`{"error": {"type", "message", "code", "param", "errors"}}`. The others are
the client's own situations: events that cannot be buffered, events the
service refused, events still unsent when the client had to stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metering_client.types import Event, Rejection


class MeteringError(Exception):
    """Base of every error this client raises."""


class ApiError(MeteringError):
    """Raised when the service answers an error (4xx, or 429/5xx after the retries)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.errors = errors or []

    @classmethod
    def from_body(cls, status: int, body: Any, fallback: str) -> ApiError:
        """The error an answer's envelope describes; `fallback` when it has none."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return cls(status, fallback)
        return cls(
            status,
            error["message"],
            code=error.get("code"),
            param=error.get("param"),
            errors=[e for e in error.get("errors") or [] if isinstance(e, dict)],
        )


class ServiceUnreachable(MeteringError):
    """Raised by a direct call when every retry failed without an answer (network errors)."""


class ClientClosed(MeteringError):
    """Raised by `record()` after `close()`."""


class BufferFull(MeteringError):
    """Raised by `record()` when the buffer stayed full for the whole blocking time.

    The buffer fills when the service does not accept events as fast as they are
    recorded, usually because it is unreachable; the message says since when and why.
    """


class EventsRejected(MeteringError):
    """Raised by `flush()`/`close()` for events the service refused, when no `on_error` is set.

    `rejections` holds each refused event with the service's error about it.
    """

    def __init__(self, rejections: list[Rejection]):
        first = rejections[0]
        super().__init__(
            f"the service refused {len(rejections)} event(s); first: "
            f"{first.error.message} (event {first.event.idempotency_key})"
        )
        self.rejections = rejections


class NotDelivered(MeteringError):
    """Raised by `flush()`/`close()` when events were still unsent at the timeout.

    `events` keep their idempotency keys: send them again later (`send_now`, or
    `record_event` on a new client) and the service stores each exactly once,
    including any the service had already stored when the client gave up.
    """

    def __init__(self, events: list[Event], reason: str):
        super().__init__(f"{len(events)} event(s) not delivered: {reason}")
        self.events = events


class WebhookVerificationError(MeteringError):
    """Raised by `verify_webhook` for a delivery that is not genuine or not fresh: a missing
    header, no signature matching the secret, or a timestamp outside the tolerance."""
