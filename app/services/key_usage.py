"""When each API key was last used: remembered per request, written in the background.

Authenticating already reads the key's entity, stored `LastUsedAt` included, so a
request knows for free whether that time is less than `EVERY` old; almost always it
is, and nothing more happens. Otherwise the request notes the key and its time here
(a dict under a lock: no I/O) and a daemon thread of the process writes it, so no
request ever waits for the write. The writer reads the key again in a transaction and
writes only if the stored time is still older than `EVERY` and the key is not revoked:
at most one write per key per minute whatever the number of processes, and the write
can never undo a revocation that committed in between (the transaction would conflict
and be retried, then see it).

A use not yet written when the process ends is lost: "last used" is a hint for the
org's housekeeping ("which keys are idle?"), never a bill, and is at most about a minute
behind.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from google.cloud import ndb

from app.models import ApiKey, transactional, utcnow

log = logging.getLogger(__name__)

#: The least time between two writes of one key's LastUsedAt.
EVERY = timedelta(minutes=1)
#: Keys whose last write this process remembers (the oldest are forgotten first).
REMEMBERED = 100_000
_FRESH = {"use_cache": False, "use_global_cache": False}


class LastUsed:
    """One process's record of key uses, and the thread that stores them.

    `touch` is what a request calls; `run_once` writes what is pending (the thread
    calls it; tests may too); `idle(timeout)` waits until nothing is pending or being
    written, for tests and orderly shutdowns.
    """

    def __init__(
        self,
        client: Any,
        context_options: dict[str, Any],
        *,
        every: timedelta = EVERY,
        clock: Callable[[], datetime] = utcnow,
        start: bool = True,
    ):
        self.client, self.context_options = client, context_options
        self.every, self.clock, self.start = every, clock, start
        self.writes = 0  # entities written, for tests and logs
        self._pending: dict[str, datetime] = {}
        self._written: OrderedDict[str, datetime] = OrderedDict()
        self._busy = False
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    def touch(self, digest: str, stored: datetime | None, now: datetime | None = None) -> None:
        """Note a use of the key at `now`, given the LastUsedAt its request read."""
        now = now or self.clock()
        with self._lock:
            latest = max(filter(None, (stored, self._written.get(digest))), default=None)
            if latest is not None and now - latest < self.every:
                return
            if digest in self._pending:
                return  # the earlier use is written soon; this one is within its minute
            self._pending[digest] = now
            self._lock.notify_all()
            if self.start and self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="metering-key-usage", daemon=True
                )
                self._thread.start()

    def run_once(self) -> int:
        """Write every pending use; how many entities were written."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._busy = bool(pending)
        written = 0
        try:
            if pending:
                with self._context():
                    for digest, used_at in pending.items():
                        written += self._write(digest, used_at)
        finally:
            with self._lock:
                for digest, used_at in pending.items():
                    self._remember(digest, used_at)
                self.writes += written
                self._busy = False
                self._lock.notify_all()
        return written

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        """The thread's own NDB context; a caller already inside one (a command, a test
        calling `run_once`) keeps its own."""
        if ndb.get_context(False) is not None:
            return contextlib.nullcontext()
        opened: contextlib.AbstractContextManager[Any] = self.client.context(**self.context_options)
        return opened

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or being written; whether that happened in time."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _remember(self, digest: str, used_at: datetime) -> None:
        self._written.pop(digest, None)
        self._written[digest] = used_at
        while len(self._written) > REMEMBERED:
            self._written.popitem(last=False)

    def _write(self, digest: str, used_at: datetime) -> int:
        @transactional(retries=3)
        def store() -> int:
            entity: ApiKey | None = ApiKey.key_for(digest).get(**_FRESH)
            if entity is None or entity.revoked:
                return 0
            if entity.last_used_at is not None and used_at - entity.last_used_at < self.every:
                return 0  # another process wrote it within the minute
            entity.last_used_at = used_at
            entity.update()
            return 1

        try:
            return store()
        except Exception:  # a hint, not a bill: logged, and the next use tries again
            log.warning("could not record when API key %s was last used", digest[:8], exc_info=True)
            return 0

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._pending))
            try:
                self.run_once()
            except Exception:  # no context (the Datastore is away): the next use retries
                log.warning("could not record when API keys were last used", exc_info=True)
