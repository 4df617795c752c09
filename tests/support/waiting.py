"""Waiting for what becomes true, with google-cloud-testutils' retry decorators.

Google's client libraries poll emulators and services in their system tests with
`test_utils.retry`; the suite does the same instead of hand-made loops:
`RetryResult` for a condition that holds eventually (a log line, a count),
`RetryErrors` for a service that answers once it is up (connection refused until then).

Both count tries, while a test states how long it is willing to wait; so every try
also checks a deadline, and the tries (a fixed `interval` apart, no backoff, as the
thing awaited is local) are only a backstop that never ends the wait before it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from test_utils.retry import BackoffFailed, RetryErrors, RetryResult

T = TypeVar("T")

log = logging.getLogger("tests.waiting")


class _DebugLog:
    """test_utils.retry reports every retry through `logger.warning`: a poll is expected to
    retry, so say it at debug level (a failed wait raises with its own message)."""

    def __init__(self, logger: logging.Logger):
        self.warning = logger.debug


def _tries(timeout: float, interval: float) -> int:
    """More tries than fit in `timeout`, as each takes at least `interval`."""
    return math.ceil(timeout / interval) + 1


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """check()'s first true result, tried every `interval` for `timeout` seconds.

    AssertionError naming `what` if it never holds; an exception from check (e.g. the
    process that should make it true has died) ends the wait at once.
    """
    deadline = time.monotonic() + timeout

    def holds_or_too_late(result: Any) -> bool:
        return bool(result) or time.monotonic() >= deadline

    poll = RetryResult(
        holds_or_too_late,
        max_tries=_tries(timeout, interval),
        delay=interval,
        backoff=1,
        logger=_DebugLog(log),
    )
    try:
        result = poll(check)()
    except BackoffFailed:
        result = None
    if not result:
        raise AssertionError(f"{what}: not within {timeout:.0f}s")
    return result


def answering(
    url: str,
    timeout: float,
    what: str,
    alive: Callable[[], None] = lambda: None,
    interval: float = 0.1,
) -> requests.Response:
    """The first 200 answer of GET url, retried while the service is not up yet.

    A refused or cut connection, a timeout or another status is transient until
    `timeout`; `alive()` is called before each try and may raise to stop at once.
    """
    deadline = time.monotonic() + timeout

    def get() -> requests.Response:
        alive()
        answer = requests.get(url, timeout=1)
        if answer.status_code != 200:
            raise requests.HTTPError(f"HTTP {answer.status_code}", response=answer)
        return answer

    def before_deadline(_error: Exception) -> bool:
        return time.monotonic() < deadline

    retrying = RetryErrors(
        requests.RequestException,
        error_predicate=before_deadline,
        max_tries=_tries(timeout, interval),
        delay=interval,
        backoff=1,
        logger=_DebugLog(log),
    )
    try:
        return retrying(get)()
    except requests.RequestException as error:
        raise AssertionError(f"{what}: no answer within {timeout:.0f}s ({error})") from None
