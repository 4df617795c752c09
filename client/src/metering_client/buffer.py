"""The bounded, thread-safe queue between `record()` and the background sender.

Events are numbered as they are recorded. The one sender takes them in order,
a batch at a time, and settles each batch completely before taking the next,
so "every event up to number N is settled" is a single counter that `flush()`
can wait on. Memory is bounded: `put` waits while `capacity` events are
queued or in flight, and gives up with BufferFull after its timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from metering_client.types import Event


class Buffer:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._changed = threading.Condition()
        self._queue: deque[tuple[int, float, Event]] = deque()  # (number, recorded at, event)
        self._in_flight: list[Event] = []
        self._recorded = 0  # number of the last event put
        self._settled = 0  # every event up to this number is settled
        self._flush_to = 0  # the sender should send without waiting up to this number
        self._draining = False  # closing: send everything, then stop

    # -- the recording side ------------------------------------------------------------

    def put(self, event: Event, timeout: float) -> bool:
        """Queue `event`; False when there was no room within `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(self._has_room, timeout):
                return False
            self._recorded += 1
            self._queue.append((self._recorded, time.monotonic(), event))
            self._changed.notify_all()
            return True

    def _has_room(self) -> bool:
        return len(self._queue) + len(self._in_flight) < self.capacity

    def pending(self) -> int:
        with self._changed:
            return len(self._queue) + len(self._in_flight)

    def wait_settled(self, timeout: float | None, drain: bool = False) -> bool:
        """Ask for what is recorded so far to be sent now; wait until it is settled."""
        with self._changed:
            target = self._recorded
            self._flush_to = max(self._flush_to, target)
            self._draining = self._draining or drain
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._settled >= target, timeout)

    def unsent(self) -> list[Event]:
        """Events in flight or queued, oldest first (for NotDelivered)."""
        with self._changed:
            return list(self._in_flight) + [event for _, _, event in self._queue]

    # -- the sender side --------------------------------------------------------------

    def take(self, size: int, interval: float, stop: threading.Event) -> list[Event] | None:
        """The next batch, once it is full, old enough or asked for; None: time to stop."""
        with self._changed:
            while not stop.is_set():
                if self._queue and self._due(size, interval):
                    count = min(size, len(self._queue))
                    self._in_flight = [self._queue.popleft()[2] for _ in range(count)]
                    return list(self._in_flight)
                if self._draining and not self._queue:
                    return None
                wait = interval - (time.monotonic() - self._queue[0][1]) if self._queue else None
                self._changed.wait(max(wait, 0.001) if wait is not None else 0.5)
            return None

    def _due(self, size: int, interval: float) -> bool:
        number, recorded_at, _ = self._queue[0]
        return (
            len(self._queue) >= size
            or self._draining
            or number <= self._flush_to
            or time.monotonic() - recorded_at >= interval
        )

    def settle(self) -> None:
        """The batch in flight is settled (delivered or rejected)."""
        with self._changed:
            self._settled += len(self._in_flight)
            self._in_flight = []
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()
