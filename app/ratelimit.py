"""Per-minute limits: requests and Datastore reads per org, failed sign-ins per address.

Three budgets, each counted in a fixed window per UTC minute (simple and cheap, at
the price of letting up to twice a budget through across a minute boundary); over
one, the answer is 429 `rate_limited` with `Retry-After` = seconds to the next
minute, and nothing is changed:

- requests per org (`rate_limit_per_minute`): `check(org)` counts the request right
  after its API key is authenticated;
- Datastore entities read per org (`read_budget_per_minute`): what a request costs,
  not just that it came. Each authenticated request's reads (`app.storage.metrics`)
  are added after it has run; a request arriving once the org's reads of the minute
  have reached the budget is refused before it reads anything more. The request that
  crosses the budget still completes (it is bounded by the request deadline). A cheap
  request's reads (at most `CARRIED_READS`) are added by the org's next request in the
  same process, in the round trip it makes for its own count, so the per-request cost is
  one Redis round trip (issue 16); other processes see them that much later;
- requests with a missing, unknown or revoked key per client address
  (`unauthenticated_per_minute`): counted when authentication fails; past the limit
  the address is refused before any key lookup for the rest of the minute, even
  with a valid key, so a flood of wrong keys cannot buy Datastore reads. An address
  is blocked per process, once that process sees the (shared) count over the limit.

Where the counts live decides what "per org" means with several gunicorn workers
and App Engine instances:

- with `REDIS_CACHE_URL` set, one counter per (name, minute) in Redis (INCRBY with
  an expiry), shared by every worker and instance: the limits are exact;
- without Redis, or while Redis does not answer, each process counts alone: the
  limits hold per process, so an org can reach workers x instances x N.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis
from flask import current_app, g

from app import cache
from app.errors import TooManyRequests
from app.storage import metrics

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60
#: (issue 16) A request's reads up to this many are carried to its org's next request in
#: the process (one Redis round trip less per request); a costlier request's are added at
#: once. Carried reads are kept for at most this many orgs at a time.
CARRIED_READS = 32
CARRIED_ORGS = 10_000


class LocalCounter:
    """Per-process counts of the current window (older windows are dropped)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window: int | None = None
        self._counts: dict[str, int] = {}

    def tally(self, window: int, add: dict[str, int], peek: tuple[str, ...] = ()) -> dict[str, int]:
        """Add `add`'s amounts to their counters; every named counter's new value."""
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            for name, amount in add.items():
                self._counts[name] = self._counts.get(name, 0) + amount
            return {name: self._counts.get(name, 0) for name in (*add, *peek)}


class RedisCounter:
    """Counts shared by every process that uses the same Redis: one round trip a tally."""

    def __init__(self, client: redis.Redis):
        self._client = client

    @staticmethod
    def _key(name: str, window: int) -> str:
        return f"metering:ratelimit:{name}:{window}"

    def tally(self, window: int, add: dict[str, int], peek: tuple[str, ...] = ()) -> dict[str, int]:
        with self._client.pipeline(transaction=True) as pipe:
            for name, amount in add.items():
                pipe.incrby(self._key(name, window), amount)
                pipe.expire(self._key(name, window), WINDOW_SECONDS * 2)
            for name in peek:
                pipe.get(self._key(name, window))
            results = pipe.execute()
        added = results[0 : 2 * len(add) : 2]
        peeked = results[2 * len(add) :]
        return {name: int(value or 0) for name, value in zip((*add, *peek), (*added, *peeked))}


class RateLimiter:
    """The limits of one app: a shared counter when Redis is configured, a local one always."""

    def __init__(
        self,
        per_minute: int,
        redis_url: str | None,
        clock=time.time,
        *,
        read_budget: int = 0,
        unauthenticated_per_minute: int = 0,
    ):
        self.per_minute = per_minute
        self.read_budget = read_budget
        self.unauthenticated_per_minute = unauthenticated_per_minute
        self._local = LocalCounter()
        self._shared = RedisCounter(cache.redis_client(redis_url)) if redis_url else None
        self._clock = clock
        self._blocked_lock = threading.Lock()
        self._blocked: tuple[int | None, set[str]] = (None, set())  # (window, addresses)
        self._carried_lock = threading.Lock()
        self._carried: dict[str, tuple[int, int]] = {}  # org -> (window, reads), issue 16

    def _tally(self, window: int, add: dict[str, int], peek: tuple[str, ...] = ()):
        if self._shared is not None:
            try:
                return self._shared.tally(window, add, peek)
            except redis.RedisError as exc:
                log.warning("rate limits count per process: redis failed (%s)", type(exc).__name__)
        return self._local.tally(window, add, peek)

    def _window(self) -> tuple[float, int]:
        now = self._clock()
        return now, int(now // WINDOW_SECONDS)

    @staticmethod
    def _retry_after(now: float, window: int) -> int:
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))

    def check(self, org: str) -> None:
        """Count one request of `org`; TooManyRequests if it is over its request limit
        or its reads of the minute have reached the read budget. The reads this process's
        earlier requests of `org` carried (`record_reads(carry=True)`) are added in the
        same round trip, before the budget is compared."""
        add = {f"requests:{org}": 1} if self.per_minute > 0 else {}
        peek = (f"reads:{org}",) if self.read_budget > 0 else ()
        if not add and not peek:
            return
        now, window = self._window()
        carried = self._take_carried(org, window)
        if carried and peek:
            add[peek[0]], peek = carried, ()
        counts = self._tally(window, add, peek)
        if self.per_minute > 0 and counts[f"requests:{org}"] > self.per_minute:
            retry_after = self._retry_after(now, window)
            raise TooManyRequests(
                f"rate limit of {self.per_minute} requests per minute exceeded; "
                f"retry in {retry_after}s",
                retry_after=retry_after,
            )
        if self.read_budget > 0 and counts[f"reads:{org}"] >= self.read_budget:
            retry_after = self._retry_after(now, window)
            raise TooManyRequests(
                f"read budget of {self.read_budget} Datastore entities per minute spent; "
                f"retry in {retry_after}s",
                retry_after=retry_after,
            )

    def record_reads(self, org: str, entities: int, carry: bool = False) -> None:
        """Add the entities a request of `org` read to its budget of the minute. With
        `carry`, a few (at most `CARRIED_READS`) are kept in this process and added by
        `org`'s next request here, in the round trip that request makes anyway (issue
        16: one Redis round trip per request instead of two, on the limit check's path).
        This process's next request of `org` thus sees them exactly as before; another
        process sees them once this one serves `org` again (at most `CARRIED_READS` per
        process and org late; more are added at once)."""
        if self.read_budget <= 0 or entities <= 0:
            return
        window = self._window()[1]
        if carry and entities <= CARRIED_READS:
            with self._carried_lock:
                if len(self._carried) < CARRIED_ORGS or org in self._carried:
                    known = self._carried.get(org)
                    if known is None or known[0] == window:
                        self._carried[org] = (window, entities + (known[1] if known else 0))
                        return
        self._tally(window, {f"reads:{org}": entities})

    def _take_carried(self, org: str, window: int) -> int:
        """The reads carried for `org` in `window` (reads carried from an earlier minute
        are added to that minute's count now)."""
        if self.read_budget <= 0:
            return 0
        with self._carried_lock:
            known = self._carried.pop(org, None)
        if known is None:
            return 0
        if known[0] != window:
            self._tally(known[0], {f"reads:{org}": known[1]})
            return 0
        return known[1]

    def refuse_blocked(self, address: str) -> None:
        """TooManyRequests if this process has seen `address` over its limit of failed
        authentications this minute: no key lookup for it until the next minute."""
        if self.unauthenticated_per_minute <= 0:
            return
        now, window = self._window()
        with self._blocked_lock:
            blocked_window, addresses = self._blocked
            if blocked_window != window or address not in addresses:
                return
        self._refuse_address(now, window)

    def count_unauthenticated(self, address: str) -> None:
        """Count a failed authentication from `address`; TooManyRequests (and the
        address blocked for the rest of the minute) once it is over the limit."""
        if self.unauthenticated_per_minute <= 0:
            return
        now, window = self._window()
        name = f"unauthenticated:{address}"
        if self._tally(window, {name: 1})[name] <= self.unauthenticated_per_minute:
            return
        with self._blocked_lock:
            if self._blocked[0] != window:
                self._blocked = (window, set())
            self._blocked[1].add(address)
        self._refuse_address(now, window)

    def _refuse_address(self, now: float, window: int):
        retry_after = self._retry_after(now, window)
        raise TooManyRequests(
            f"more than {self.unauthenticated_per_minute} requests per minute with a "
            f"missing or invalid key from this address; retry in {retry_after}s",
            retry_after=retry_after,
        )


def _limiter() -> RateLimiter | None:
    return current_app.extensions.get("ratelimit")


def check(org: str) -> None:
    """Count one request of `org` against the current app's limits."""
    limiter = _limiter()
    if limiter is not None:
        limiter.check(org)


def refuse_blocked(address: str) -> None:
    """Refuse a request from an address over its limit of failed authentications."""
    limiter = _limiter()
    if limiter is not None:
        limiter.refuse_blocked(address)


def count_unauthenticated(address: str) -> None:
    """Count a failed authentication from `address` (429 once over the limit)."""
    limiter = _limiter()
    if limiter is not None:
        limiter.count_unauthenticated(address)


def charge_reads(org: str, entities: int) -> None:
    """(issue 17, export) Add reads made after the answer started streaming, which
    `_record_reads` cannot see, to `org`'s read budget."""
    limiter = _limiter()
    if limiter is not None:
        limiter.record_reads(org, entities)


def _record_reads(response):
    """After an authenticated request: add what it read to its org's read budget."""
    org, usage, limiter = g.get("org"), metrics.current(), _limiter()
    if org is not None and usage is not None and limiter is not None:
        limiter.record_reads(org.name, usage.entities_read, carry=True)
    return response


def init_app(app) -> None:
    """Attach the configured limits (none when all are 0)."""
    config = app.config["METERING"]
    if (
        config.rate_limit_per_minute > 0
        or config.read_budget_per_minute > 0
        or config.unauthenticated_per_minute > 0
    ):
        app.extensions["ratelimit"] = RateLimiter(
            config.rate_limit_per_minute,
            config.redis_url,
            read_budget=config.read_budget_per_minute,
            unauthenticated_per_minute=config.unauthenticated_per_minute,
        )
    if config.read_budget_per_minute > 0:
        app.after_request(_record_reads)
