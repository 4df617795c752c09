"""When to retry, and how long to wait: exponential backoff with jitter, Retry-After.

Retried: network errors (no answer, or a cut-off one), 408, 429 and 5xx. Never
retried: other 4xx, which say the request itself is wrong.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

Reply = httpx.Response | Exception


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts; `deadline` bounds direct calls (background sends retry on)."""

    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    #: Longest Retry-After the client honours as given; longer ones are cut to this.
    max_retry_after: float = 60.0
    #: Seconds after which a direct call (meters, summaries, send_now) stops retrying.
    deadline: float = 60.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure in a row ("equal jitter").

        Half the exponential step is kept and half is random, so clients that
        failed together do not retry together, and none retries at once.
        """
        step = min(self.max_delay, self.initial_delay * self.multiplier ** (failures - 1))
        backoff = step / 2 + random.uniform(0, step / 2)
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff)
        return backoff


def is_retryable(reply: Reply) -> bool:
    """Whether trying the same request again may succeed."""
    if isinstance(reply, Exception):
        return isinstance(reply, httpx.HTTPError)
    return reply.status_code in (408, 429) or reply.status_code >= 500


def retry_after(reply: Reply) -> float | None:
    """The seconds a 429 or 503 answer's Retry-After header asks for, if any."""
    if isinstance(reply, Exception):
        return None
    header = reply.headers.get("Retry-After")
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe(reply: Reply) -> str:
    """A short text of what went wrong, for logs and error messages."""
    if isinstance(reply, Exception):
        return f"{type(reply).__name__}: {reply}" if str(reply) else type(reply).__name__
    return f"HTTP {reply.status_code}"
