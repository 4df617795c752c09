"""What the sync and the async client share: everything about delivery but the I/O.

`MeteringClient` (threads) and `AsyncMeteringClient` (asyncio) differ only in how
they wait, send and queue. The rest is here, once, so that the twins cannot drift:
the checks of the options, the delivery stats, the refused events held for
`flush()`, and what a settled batch or a retry means for both (counting, the
"trouble" that BufferFull and NotDelivered explain).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from metering_client import operations as ops
from metering_client.errors import EventsRejected, NotDelivered
from metering_client.protocol import BatchResult, Pause
from metering_client.retry import RetryPolicy
from metering_client.types import Event, Rejection

log = logging.getLogger("metering_client")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass
class DeliveryStats:
    """What the background sender did so far (for monitoring and tests)."""

    requests: int = 0
    retries: int = 0
    created: int = 0
    duplicates: int = 0
    rejected: int = 0


class Rejections:
    """Refused events: to `on_error` if given, else kept (bounded) until flush raises them.

    The lock is for the sync client, whose sender thread reports while the caller's
    thread may be flushing; in the async client it is never contended.
    """

    def __init__(self, on_error: Callable[[Rejection], None] | None, keep: int):
        self.on_error = on_error
        self.keep = keep
        self._held: list[Rejection] = []
        self._lock = threading.Lock()

    def report(self, rejection: Rejection) -> None:
        log.error("event %s refused: %s", rejection.event.idempotency_key, rejection.error.message)
        if self.on_error is not None:
            try:
                self.on_error(rejection)
            except Exception:  # the sender must go on whatever the callback does
                log.exception("on_error callback failed")
            return
        with self._lock:
            if len(self._held) < self.keep:
                self._held.append(rejection)

    def raise_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        if held:
            raise EventsRejected(held)


@dataclass(frozen=True)
class Trouble:
    """The sender has been failing since `since` (monotonic); `problem` is the last failure.

    Replaced whole, never changed in place, so another thread reads a consistent pair.
    """

    since: float
    problem: str


class DeliveryBase:
    """The options, stats, refused events and trouble of a client; no I/O.

    Subclasses own the HTTP client, the buffer and the sender, and call
    `_note_request`, `_note_retry` and `_tally` as their sender works.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        flush_interval: float,
        max_pending: int,
        block_timeout: float,
        close_timeout: float,
        retry: RetryPolicy | None,
        on_error: Callable[[Rejection], None] | None,
    ):
        if not 1 <= batch_size <= ops.MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {ops.MAX_BATCH}")
        if max_pending < batch_size:
            raise ValueError("max_pending must be at least batch_size")
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_pending = max_pending
        self.block_timeout, self.close_timeout = block_timeout, close_timeout
        self.retry = retry or RetryPolicy()
        self.stats = DeliveryStats()
        self._rejections = Rejections(on_error, keep=max_pending)
        self._trouble: Trouble | None = None  # set while the sender is failing

    # -- what the sender reports --------------------------------------------------------

    def _note_request(self) -> None:
        self.stats.requests += 1

    def _note_retry(self, pause: Pause) -> None:
        """A background send failed and is retried after `pause`."""
        self.stats.retries += 1
        trouble = self._trouble
        since = trouble.since if trouble is not None else time.monotonic()
        self._trouble = Trouble(since, pause.reason)
        log.warning("metering: retrying in %.2fs after %s", pause.seconds, pause.reason)

    def _tally(self, result: BatchResult) -> None:
        """A batch is settled: count its outcomes and hand its refused events over."""
        self._trouble = None
        for _event, outcome in result.delivered:
            if outcome.status == "created":
                self.stats.created += 1
            else:
                self.stats.duplicates += 1
        self.stats.rejected += len(result.rejected)
        for rejection in result.rejected:
            self._rejections.report(rejection)

    # -- what the caller is told --------------------------------------------------------

    def _buffer_full_message(self, pending: int) -> str:
        trouble = self._trouble
        if trouble is None:
            return (
                f"{pending} events are waiting to be sent (max_pending): they are "
                "recorded faster than the service accepts them"
            )
        return (
            f"{pending} events are waiting to be sent (max_pending) and the service has "
            f"not accepted any for {time.monotonic() - trouble.since:.0f}s; "
            f"last problem: {trouble.problem}"
        )

    def _settled_or_raise(self, settled: bool) -> bool:
        """The end of flush(): raise what was refused, else say whether all is settled."""
        self._rejections.raise_held()
        return settled

    def _closed_or_raise(self, unsent: list[Event]) -> None:
        """The end of close(): NotDelivered for what is still unsent, then the refused."""
        if unsent:
            trouble = self._trouble
            raise NotDelivered(unsent, trouble.problem if trouble else "timed out")
        self._rejections.raise_held()
