"""The synchronous client: the service's API, and `record()` with a background sender.

`record()` only queues the event (it returns at once unless the buffer is
full); one daemon thread sends the queue in batches of up to `batch_size`,
when a batch is full or its oldest event is `flush_interval` old, retrying
each batch with the same idempotency keys until every event in it is stored
or refused. `flush()`, `close()`, the `with` block and interpreter exit send
what is pending.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from typing import Any, TypeVar, Unpack

import httpx

from metering_client import operations as ops
from metering_client.base import DEFAULT_TIMEOUT, DeliveryBase
from metering_client.buffer import Buffer
from metering_client.calls import ApiCalls
from metering_client.errors import BufferFull, ClientClosed
from metering_client.export import EXPORT_PATH, AnswerCut, ExportProgress
from metering_client.protocol import BatchResult, Pause, Send, deliver
from metering_client.retry import RetryPolicy
from metering_client.types import (
    Event,
    ExportedEvent,
    LimitCheck,
    Rejection,
    Summary,
)

T = TypeVar("T")
log = logging.getLogger("metering_client")


class _Stopped(Exception):
    """The sender was told to stop while it waited to retry."""


class MeteringClient(DeliveryBase, ApiCalls):
    """A tenant's connection to the metering service (thread-safe).

    Options, stats, refused events and what a retry or a settled batch means live in
    `DeliveryBase`, shared with the async client; this class owns the threads and I/O.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_pending: int = 10_000,
        block_timeout: float = 10.0,
        close_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        on_error: Callable[[Rejection], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        limit_cache_seconds: float = 1.0,
    ):
        super().__init__(
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_pending=max_pending,
            block_timeout=block_timeout,
            close_timeout=close_timeout,
            retry=retry,
            on_error=on_error,
        )
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self._buffer = Buffer(max_pending)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._closed = False
        #: issue 16: recent limit checks, reused for `limit_cache_seconds` (0: off)
        self._checks = ops.CheckCache(limit_cache_seconds)
        atexit.register(self._close_at_exit)

    # -- recording ------------------------------------------------------------------

    def record(
        self,
        event_name: str | None = None,
        user_id: str | None = None,
        value: int | None = None,
        *,
        meter_id: str | None = None,
        timestamp: datetime | str | None = None,
        dimensions: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one usage event; returns its idempotency key (generated when not given).

        The event is stamped now unless `timestamp` is given. Raises ValueError for
        what the client can tell is wrong, BufferFull when the buffer stays full for
        `block_timeout` seconds, ClientClosed after `close()`.
        """
        event = Event.new(
            user_id=user_id or "",
            event_name=event_name,
            meter_id=meter_id,
            value=value,
            timestamp=timestamp,
            dimensions=dimensions,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        self.record_event(event)
        return event.idempotency_key

    def record_event(self, event: Event) -> None:
        """Queue an already built event (e.g. one from NotDelivered.events)."""
        if self._closed:
            raise ClientClosed("the client is closed")
        self._ensure_sender()
        if not self._buffer.put(event, self.block_timeout):
            raise BufferFull(self._buffer_full_message(self._buffer.pending()))

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far now and wait until it is stored or refused.

        Returns False if that took longer than `timeout` (the events stay queued
        and keep being retried). Raises EventsRejected for refused events when no
        `on_error` callback is set.
        """
        return self._settled_or_raise(self._sender is None or self._buffer.wait_settled(timeout))

    def close(self, timeout: float | None = None) -> None:
        """Send what is pending (waiting at most `timeout`, default `close_timeout`), then stop.

        Raises NotDelivered with the events still unsent at the timeout, and
        EventsRejected for refused events when no `on_error` callback is set.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        unsent: list[Event] = []
        try:
            unsent = self._stop_sender(self.close_timeout if timeout is None else timeout)
        finally:
            self._http.close()
        self._closed_or_raise(unsent)

    def _stop_sender(self, timeout: float) -> list[Event]:
        if self._sender is None:
            return []
        if self._buffer.wait_settled(timeout, drain=True):
            self._sender.join()
            return []
        unsent = self._buffer.unsent()
        self._stop.set()
        self._buffer.wake()
        self._sender.join(timeout=5.0)
        return unsent

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001 - nobody to raise to at exit: say it loudly
            log.error("metering client at exit: %s", exc)

    def __enter__(self) -> MeteringClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the background sender ---------------------------------------------------------

    def _ensure_sender(self) -> None:
        if self._sender is not None:
            return
        with self._lock:
            if self._sender is None:
                thread = threading.Thread(
                    target=self._send_forever, daemon=True, name="metering-client-sender"
                )
                thread.start()
                self._sender = thread

    def _send_forever(self) -> None:
        while True:
            batch = self._buffer.take(self.batch_size, self.flush_interval, self._stop)
            if batch is None:
                return
            try:
                result = self._deliver(batch)
            except _Stopped:
                return
            self._settle(result)

    def _deliver(self, batch: list[Event]) -> BatchResult:
        """Deliver one batch; an unexpected error is logged and the same batch tried again."""
        while True:
            try:
                return self._drive(deliver(batch, self.retry), background=True)
            except _Stopped:
                raise
            except Exception:  # a bug here must not silently stop all delivery
                log.exception("metering: unexpected error while sending a batch; retrying")
                if self._stop.wait(self.retry.max_delay):
                    raise _Stopped() from None

    def _settle(self, result: BatchResult) -> None:
        self._tally(result)
        self._buffer.settle()

    # -- driving the I/O-free operations ----------------------------------------------

    def _drive(self, operation: ops.Op[T], background: bool = False) -> T:
        reply = None
        try:
            action = next(operation)
            while True:
                if isinstance(action, Pause):
                    # mypy: a pause gets no reply: the next attempt starts afresh
                    reply = self._pause(action, background)  # type: ignore[func-returns-value]
                else:
                    reply = self._send(action, background)
                action = operation.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # the operation's T

    def _pause(self, pause: Pause, background: bool) -> None:
        if not background:
            time.sleep(pause.seconds)
            return None
        self._note_retry(pause)
        if self._stop.wait(pause.seconds):
            raise _Stopped()
        return None

    def _send(self, send: Send, background: bool) -> httpx.Response | Exception:
        if background:
            if self._stop.is_set():
                raise _Stopped()
            self._note_request()
        try:
            return self._http.request(send.method, send.path, params=send.params, json=send.json)
        except httpx.HTTPError as exc:
            return exc

    # -- the rest of the API (direct calls, retried up to retry.deadline) --------------
    # A method that is one operation of its arguments is written once for both clients,
    # in `calls.ApiCalls`; here are those that page, stream or cache.

    def summary_pages(
        self, meter_id: str, **options: Unpack[ops.SummaryOptions]
    ) -> Iterator[Summary]:
        """Every page of a summary grouped by userId (unless `group_by` says otherwise;
        `limit` users a page), one request per page as the loop asks for it; each page's
        `value` is the whole period's."""
        options.setdefault("group_by", ("userId",))
        params: list[tuple[str, str]] | None = ops.summary_params(meter_id, **options)
        while params is not None:
            page = self._drive(ops.summary(self.retry, params))
            yield page
            params = ops.next_page_params(params, page)

    # -- issue 17, export ---------------------------------------------------------------

    def export_events(
        self,
        meter_id: str,
        *,
        period_start: datetime | date | str | None = None,
        period_end: datetime | date | str | None = None,
        user_id: str | None = None,
        include_cancelled: bool = False,
        cursor: str | None = None,
    ) -> Iterator[ExportedEvent]:
        """Every event of a meter in a period (one user's, cancelled ones too if asked),
        oldest first, streamed: memory holds one line at a time. A dropped connection or
        a cut answer is resumed after the last event received (no duplicates, no gaps),
        retried like other calls while events keep coming; `cursor` (an event id) starts
        after that event."""
        progress = ExportProgress.start(
            meter_id,
            self.retry,
            period_start=period_start,
            period_end=period_end,
            user_id=user_id,
            include_cancelled=include_cancelled,
            cursor=cursor,
        )
        while not progress.finished:
            failure: httpx.Response | Exception | AnswerCut | None = None
            try:
                with self._http.stream(
                    "GET", EXPORT_PATH, params=progress.request_params()
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        failure = response
                    else:
                        for line in response.iter_lines():
                            event = progress.take(line)
                            if event is not None:
                                yield event
                        progress.answer_ended()
            except (httpx.HTTPError, AnswerCut) as exc:
                failure = exc
            if failure is not None:
                time.sleep(progress.failed(failure))

    # -- usage limits and the limit check (issue 16) ------------------------------------

    def check_limit(
        self,
        *,
        user_id: str,
        meter_id: str | None = None,
        event_name: str | None = None,
        fresh: bool = False,
    ) -> LimitCheck:
        """May `user_id` still use the meter this period? An answer is reused for
        `limit_cache_seconds` (the constructor's, 1 s by default; 0 turns this off) unless
        `fresh`; the service's own answer counts every batch answered before it."""
        key = (meter_id, event_name, user_id)
        if not fresh:
            known = self._checks.get(key)
            if known is not None:
                return known
        answer = self._drive(ops.check_limit(self.retry, meter_id, event_name, user_id))
        self._checks.put(key, answer)
        return answer
