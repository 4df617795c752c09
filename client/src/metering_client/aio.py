"""The asyncio client: the same API and the same batching, retries and keys, as coroutines.

It drives the very operations of `protocol` and `operations` that the sync
client drives, with `httpx.AsyncClient`; the buffer and the sender are an
asyncio queue and a task of the running loop. An event loop cannot run code
at interpreter exit, so there is no atexit hook: use `async with`, or await
`aclose()` before the loop ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date, datetime
from typing import Any, TypeVar, Unpack

import httpx

from metering_client import operations as ops
from metering_client.base import DEFAULT_TIMEOUT, DeliveryBase
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
    pass


class _AsyncBuffer:
    """Like `buffer.Buffer`, for one event loop: numbered events, one settled counter."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.changed = asyncio.Condition()
        self.queue: deque[tuple[int, float, Event]] = deque()
        self.in_flight: list[Event] = []
        self.recorded = self.settled = self.flush_to = 0
        self.draining = False

    def has_room(self) -> bool:
        return len(self.queue) + len(self.in_flight) < self.capacity

    async def put(self, event: Event, timeout: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(self.has_room), timeout)
            except TimeoutError:
                return False
            self.recorded += 1
            self.queue.append((self.recorded, time.monotonic(), event))
            self.changed.notify_all()
            return True

    async def wait_settled(self, timeout: float | None, drain: bool = False) -> bool:
        async with self.changed:
            target = self.recorded
            self.flush_to = max(self.flush_to, target)
            self.draining = self.draining or drain
            self.changed.notify_all()
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.settled >= target), timeout
                )
            except TimeoutError:
                return False
            return True

    def due(self, size: int, interval: float) -> bool:
        number, recorded_at, _ = self.queue[0]
        return (
            len(self.queue) >= size
            or self.draining
            or number <= self.flush_to
            or time.monotonic() - recorded_at >= interval
        )

    async def take(self, size: int, interval: float, stop: asyncio.Event) -> list[Event] | None:
        async with self.changed:
            while not stop.is_set():
                if self.queue and self.due(size, interval):
                    count = min(size, len(self.queue))
                    self.in_flight = [self.queue.popleft()[2] for _ in range(count)]
                    return list(self.in_flight)
                if self.draining and not self.queue:
                    return None
                wait = interval - (time.monotonic() - self.queue[0][1]) if self.queue else 0.5
                try:
                    await asyncio.wait_for(self.changed.wait(), max(wait, 0.001))
                except TimeoutError:
                    pass
            return None

    async def settle(self) -> None:
        async with self.changed:
            self.settled += len(self.in_flight)
            self.in_flight = []
            self.changed.notify_all()

    def unsent(self) -> list[Event]:
        return list(self.in_flight) + [event for _, _, event in self.queue]


class AsyncMeteringClient(DeliveryBase, ApiCalls):
    """The asyncio twin of MeteringClient; use one per event loop.

    It shares `DeliveryBase` (options, stats, refused events, trouble) with the sync
    client and owns only its asyncio I/O: the queue, the sender task, `httpx.AsyncClient`.
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self._buffer = _AsyncBuffer(max_pending)
        self._stop = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        #: issue 16: recent limit checks, reused for `limit_cache_seconds` (0: off)
        self._checks = ops.CheckCache(limit_cache_seconds)

    # -- recording ------------------------------------------------------------------

    async def record(
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
        """Queue one usage event (waiting while the buffer is full); returns its key."""
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
        await self.record_event(event)
        return event.idempotency_key

    async def record_event(self, event: Event) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_forever())
        if not await self._buffer.put(event, self.block_timeout):
            raise BufferFull(self._buffer_full_message(len(self._buffer.unsent())))

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what is recorded now and wait until it is settled; False on timeout."""
        return self._settled_or_raise(
            self._sender is None or await self._buffer.wait_settled(timeout)
        )

    async def aclose(self, timeout: float | None = None) -> None:
        """Send what is pending (at most `timeout` seconds), then stop; see MeteringClient.close."""
        if self._closed:
            return
        self._closed = True
        unsent: list[Event] = []
        try:
            unsent = await self._stop_sender(self.close_timeout if timeout is None else timeout)
        finally:
            await self._http.aclose()
        self._closed_or_raise(unsent)

    async def _stop_sender(self, timeout: float) -> list[Event]:
        if self._sender is None:
            return []
        if await self._buffer.wait_settled(timeout, drain=True):
            await self._sender
            return []
        unsent = self._buffer.unsent()
        self._stop.set()
        self._sender.cancel()
        try:
            await self._sender
        except asyncio.CancelledError:
            pass
        return unsent

    async def __aenter__(self) -> AsyncMeteringClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the background sender ---------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            batch = await self._buffer.take(self.batch_size, self.flush_interval, self._stop)
            if batch is None:
                return
            try:
                result = await self._deliver(batch)
            except _Stopped:
                return
            await self._settle(result)

    async def _deliver(self, batch: list[Event]) -> BatchResult:
        """Deliver one batch; an unexpected error is logged and the same batch tried again."""
        while True:
            try:
                return await self._drive(deliver(batch, self.retry), background=True)
            except _Stopped:
                raise
            except Exception:  # a bug here must not silently stop all delivery
                log.exception("metering: unexpected error while sending a batch; retrying")
                try:
                    await asyncio.wait_for(self._stop.wait(), self.retry.max_delay)
                except TimeoutError:
                    continue
                raise _Stopped() from None

    async def _settle(self, result: BatchResult) -> None:
        self._tally(result)
        await self._buffer.settle()

    async def _drive(self, operation: ops.Op[T], background: bool = False) -> T:
        reply = None
        try:
            action = next(operation)
            while True:
                if isinstance(action, Pause):
                    # mypy: a pause gets no reply: the next attempt starts afresh
                    reply = await self._pause(action, background)  # type: ignore[func-returns-value]
                else:
                    reply = await self._send(action, background)
                action = operation.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # the operation's T

    async def _pause(self, pause: Pause, background: bool) -> None:
        if not background:
            await asyncio.sleep(pause.seconds)
            return None
        self._note_retry(pause)
        try:
            await asyncio.wait_for(self._stop.wait(), pause.seconds)
        except TimeoutError:
            return None
        raise _Stopped()

    async def _send(self, send: Send, background: bool) -> httpx.Response | Exception:
        if background:
            self._note_request()
        try:
            return await self._http.request(
                send.method, send.path, params=send.params, json=send.json
            )
        except httpx.HTTPError as exc:
            return exc

    # -- the rest of the API ----------------------------------------------------------
    # One operation of the arguments: `calls.ApiCalls`; here what pages, streams or caches.

    async def summary_pages(
        self, meter_id: str, **options: Unpack[ops.SummaryOptions]
    ) -> AsyncIterator[Summary]:
        """Every page of a summary grouped by userId (unless `group_by` says otherwise;
        `limit` users a page), one request per page as the loop asks for it; each page's
        `value` is the whole period's."""
        options.setdefault("group_by", ("userId",))
        params: list[tuple[str, str]] | None = ops.summary_params(meter_id, **options)
        while params is not None:
            page = await self._drive(ops.summary(self.retry, params))
            yield page
            params = ops.next_page_params(params, page)

    # -- issue 17, export ---------------------------------------------------------------

    async def export_events(
        self,
        meter_id: str,
        *,
        period_start: datetime | date | str | None = None,
        period_end: datetime | date | str | None = None,
        user_id: str | None = None,
        include_cancelled: bool = False,
        cursor: str | None = None,
    ) -> AsyncIterator[ExportedEvent]:
        """The async twin of `MeteringClient.export_events`: `async for event in ...`."""
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
                async with self._http.stream(
                    "GET", EXPORT_PATH, params=progress.request_params()
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        failure = response
                    else:
                        async for line in response.aiter_lines():
                            event = progress.take(line)
                            if event is not None:
                                yield event
                        progress.answer_ended()
            except (httpx.HTTPError, AnswerCut) as exc:
                failure = exc
            if failure is not None:
                await asyncio.sleep(progress.failed(failure))

    # -- usage limits and the limit check (issue 16) ------------------------------------

    async def check_limit(
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
        answer = await self._drive(ops.check_limit(self.retry, meter_id, event_name, user_id))
        self._checks.put(key, answer)
        return answer
