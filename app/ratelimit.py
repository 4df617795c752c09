"""A per-org request rate limit: at most N requests per org per clock minute.

`check(org)` runs right after a request's API key is authenticated. Over the
limit it raises `TooManyRequests` (429, `Retry-After` = seconds to the next
minute). Counting is a fixed window per UTC minute: simple and cheap, at the price
of letting up to 2N through across a minute boundary.

Where the count lives decides what "per org" means with several gunicorn workers
and App Engine instances:

- with `REDIS_CACHE_URL` set, one counter per (org, minute) in Redis (INCR with an
  expiry), shared by every worker and instance: the limit is exact;
- without Redis, or while Redis does not answer, each process counts alone: the
  limit holds per process, so an org can reach workers x instances x N.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis
from flask import current_app

from app import cache
from app.errors import TooManyRequests

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60


class LocalCounter:
    """Per-process counts of the current window (older windows are dropped)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window: int | None = None
        self._counts: dict[str, int] = {}

    def increment(self, org: str, window: int) -> int:
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            self._counts[org] = self._counts.get(org, 0) + 1
            return self._counts[org]


class RedisCounter:
    """Counts shared by every process that uses the same Redis."""

    def __init__(self, client: redis.Redis):
        self._client = client

    def increment(self, org: str, window: int) -> int:
        key = f"metering:ratelimit:{org}:{window}"
        with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS * 2)
            count, _ = pipe.execute()
        return int(count)


class RateLimiter:
    """The limit of one app: a shared counter when Redis is configured, a local one always."""

    def __init__(self, per_minute: int, redis_url: str | None, clock=time.time):
        self.per_minute = per_minute
        self._local = LocalCounter()
        self._shared = RedisCounter(cache.redis_client(redis_url)) if redis_url else None
        self._clock = clock

    def _count(self, org: str, window: int) -> int:
        if self._shared is not None:
            try:
                return self._shared.increment(org, window)
            except redis.RedisError as exc:
                log.warning("rate limit counts per process: redis failed (%s)",
                            type(exc).__name__)
        return self._local.increment(org, window)

    def check(self, org: str) -> None:
        """Count one request of `org`; TooManyRequests if it is over the limit."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        if self._count(org, window) > self.per_minute:
            retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
            raise TooManyRequests(
                f"rate limit of {self.per_minute} requests per minute exceeded; "
                f"retry in {retry_after}s", retry_after=retry_after)


def check(org: str) -> None:
    """Count one request of `org` against the current app's limit."""
    limiter = current_app.extensions.get("ratelimit")
    if limiter is not None:
        limiter.check(org)


def _render_too_many(exc: TooManyRequests):
    from flask import jsonify

    response = jsonify(exc.to_dict())
    response.status_code = exc.status
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def init_app(app) -> None:
    """Attach the configured limit (none when it is 0) and the 429 rendering."""
    config = app.config["METERING"]
    if config.rate_limit_per_minute > 0:
        app.extensions["ratelimit"] = RateLimiter(config.rate_limit_per_minute,
                                                  config.redis_url)
    app.register_error_handler(TooManyRequests, _render_too_many)
