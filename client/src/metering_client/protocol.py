"""The client's logic without I/O: what to send, when to wait, what an answer means.

Each operation is a generator that yields actions, `Send` (an HTTP request;
the driver sends back the `httpx.Response`, or the `httpx.HTTPError` it got) and
`Pause` (wait that long), and returns its result. The sync client and the async
client drive the same generators, so retries and batch handling exist once.

`deliver` is the heart of exactly-once recording. Every event carries its
idempotency key on every attempt, so re-sending a batch that the service stored
but whose answer was lost gives `duplicate` answers, never a second copy. The
service validates a batch whole and stores nothing when one event is bad: the
events its error names are handed back as rejected, and the rest are re-sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from metering_client.errors import ApiError, ServiceUnreachable
from metering_client.retry import Reply, RetryPolicy, describe, is_retryable, retry_after
from metering_client.types import Event, EventOutcome, Rejection

EVENTS_PATH = "/v1/billing/meter-events"
DELIVERED = ("created", "duplicate")


@dataclass(frozen=True)
class Send:
    method: str
    path: str
    params: Any = None
    json: Any = None


@dataclass(frozen=True)
class Pause:
    seconds: float
    reason: str  # what failed, for logs and BufferFull's message


Action = Send | Pause


@dataclass(frozen=True)
class Answer:
    """A final (not retried) answer: its status, JSON body, and whether it took retries."""

    status: int
    body: Any
    retried: bool

    def ok(self) -> Any:
        """The body of a 2xx answer; ApiError from the envelope otherwise."""
        if 200 <= self.status < 300:
            return self.body
        raise ApiError.from_body(self.status, self.body, f"HTTP {self.status}")


def _json(response: httpx.Response) -> tuple[bool, Any]:
    try:
        return True, response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False, None


def _final(reply: Reply) -> Answer | None:
    """The answer in `reply`, or None when it must be retried (a 2xx that is not JSON too)."""
    if is_retryable(reply):
        return None
    assert isinstance(reply, httpx.Response)
    parsed, body = _json(reply)
    if 200 <= reply.status_code < 300 and not parsed:
        return None  # cut or garbled on the way: the same request again is safe
    return Answer(reply.status_code, body, retried=False)


def call(
    request: Send,
    policy: RetryPolicy,
    deadline: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Action, Reply | None, Answer]:
    """Send `request` until it gets a final answer; `deadline` None retries forever.

    Raises ApiError (the last 429/5xx) or ServiceUnreachable (the last network
    error) when the deadline would pass before the next attempt.
    """
    started, failures = clock(), 0
    while True:
        reply = yield request
        answer = _final(reply) if reply is not None else None
        if answer is not None:
            return Answer(answer.status, answer.body, retried=failures > 0)
        failures += 1
        # mypy: a failed attempt always leaves a reply
        wait = policy.delay(failures, retry_after(reply))  # type: ignore[arg-type]
        if deadline is not None and clock() + wait - started > deadline:
            raise _gave_up(reply, failures)
        # mypy: a failed attempt always leaves a reply
        yield Pause(wait, describe(reply))  # type: ignore[arg-type]


def _gave_up(reply: Reply | None, attempts: int) -> Exception:
    if isinstance(reply, httpx.Response):
        parsed, body = _json(reply)
        return ApiError.from_body(
            reply.status_code,
            body if parsed else None,
            f"HTTP {reply.status_code} after {attempts} attempts",
        )
    # mypy: a failed attempt always leaves a reply
    return ServiceUnreachable(f"no answer after {attempts} attempts: {describe(reply)}")  # type: ignore[arg-type]


# -- batches of events ---------------------------------------------------------------


@dataclass
class BatchResult:
    delivered: list[tuple[Event, EventOutcome]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


_EVENT_PARAM = re.compile(r"^events\[(\d+)\]")


def _problems_by_event(error: ApiError, size: int) -> dict[int, list[dict[str, Any]]]:
    """The problems of `error` that name one event of a batch of `size`, by index."""
    problems = error.errors or [{"param": error.param, "message": error.message}]
    named: dict[int, list[dict[str, Any]]] = {}
    for problem in problems:
        match = _EVENT_PARAM.match(str(problem.get("param") or ""))
        if match and int(match.group(1)) < size:
            named.setdefault(int(match.group(1)), []).append(problem)
    return named


def _event_error(status: int, error: ApiError, problems: list[dict[str, Any]]) -> ApiError:
    messages = "; ".join(str(p.get("message")) for p in problems)
    return ApiError(
        status, messages, code=error.code, param=problems[0].get("param"), errors=problems
    )


def _conflict(event: Event, outcome: EventOutcome) -> Rejection:
    return Rejection(
        event,
        ApiError(
            409,
            f"idempotency key {event.idempotency_key!r} was recorded before with a different "
            f"payload (event {outcome.id}); this event was not stored",
            code="conflict",
        ),
    )


def _settle(part: list[Event], body: Any, result: BatchResult) -> bool:
    """Record a 201 answer's outcomes; False when the answer does not fit the batch."""
    answers = body.get("events") if isinstance(body, dict) else None
    if (
        not isinstance(answers, list)
        or len(answers) != len(part)
        or not all(isinstance(answer, dict) for answer in answers)
    ):
        return False
    for event, answer in zip(part, answers):
        outcome = EventOutcome(str(answer.get("id")), str(answer.get("status")))
        if outcome.status in DELIVERED:
            result.delivered.append((event, outcome))
        else:
            result.rejected.append(_conflict(event, outcome))
    return True


def _split_refused(
    part: list[Event], answer: Answer, parts: list[list[Event]], result: BatchResult
) -> None:
    """A refused batch: reject the events the error names, send the rest again."""
    error = ApiError.from_body(answer.status, answer.body, f"HTTP {answer.status}")
    named = _problems_by_event(error, len(part))
    if named:
        for index, problems in sorted(named.items()):
            result.rejected.append(
                Rejection(part[index], _event_error(answer.status, error, problems))
            )
        rest = [e for i, e in enumerate(part) if i not in named]
        if rest:
            parts.append(rest)
    elif len(part) > 1 and answer.status in (400, 413):
        middle = len(part) // 2  # no event named: halve until the bad one stands alone
        parts += [part[middle:], part[:middle]]
    else:
        result.rejected += [Rejection(event, error) for event in part]


def deliver(
    events: list[Event], policy: RetryPolicy, deadline: float | None = None
) -> Generator[Action, Reply | None, BatchResult]:
    """Send a batch until every event is stored (or was before) or refused.

    Network errors, 429 and 5xx are retried with the same events and keys. A
    refused batch stored nothing; its named events are rejected and the rest sent
    again. A batch too large for the service (413) is halved.
    """
    result = BatchResult()
    parts = [list(events)]
    while parts:
        part = parts.pop()
        request = Send("POST", EVENTS_PATH, json={"events": [e.to_json() for e in part]})
        answer = yield from call(request, policy, deadline)
        if 200 <= answer.status < 300 and _settle(part, answer.body, result):
            continue
        if 200 <= answer.status < 300:  # an answer that does not match what was sent
            parts.append(part)
            yield Pause(policy.delay(1), "an answer that did not match the batch")
            continue
        _split_refused(part, answer, parts, result)
    return result
