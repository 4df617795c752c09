"""Streaming export (issue 17): what the sync and async clients share, without I/O.

`GET /v1/billing/meter-events/export` streams NDJSON: one event a line, then a trailer
line `{"export": {"complete", "count", "cursor"}}`. The cursor of a resumed export is the
`id` of the last event received, so `ExportProgress` remembers it as lines arrive and,
whenever an answer ends without a complete trailer (a dropped connection, a cut or
garbled line, an answer stopped by the service's time bound), the next request asks for
the events after it: each event is yielded once, none is skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from metering_client.errors import ApiError, ServiceUnreachable
from metering_client.retry import Reply, RetryPolicy, describe, is_retryable, retry_after
from metering_client.types import ExportedEvent, period_bound

EXPORT_PATH = "/v1/billing/meter-events/export"


class AnswerCut(Exception):
    """An answer ended, or held a line, that is not a whole export line."""


@dataclass
class ExportProgress:
    """One export across its answers: what to ask next, what was received, when to give up."""

    params: dict[str, str]
    policy: RetryPolicy
    last_id: str | None = None
    finished: bool = False
    failures: int = 0
    _since_progress: float = 0.0
    _trailer_seen: bool = False

    @classmethod
    def start(
        cls,
        meter_id: str,
        policy: RetryPolicy,
        *,
        period_start: datetime | date | str | None = None,
        period_end: datetime | date | str | None = None,
        user_id: str | None = None,
        include_cancelled: bool = False,
        cursor: str | None = None,
    ) -> ExportProgress:
        params = {"meterId": meter_id, "format": "ndjson"}
        if period_start is not None:
            params["periodStart"] = period_bound(period_start)
        if period_end is not None:
            params["periodEnd"] = period_bound(period_end)
        if user_id is not None:
            params["userId"] = user_id
        if include_cancelled:
            params["includeCancelled"] = "true"
        progress = cls(params, policy, last_id=cursor)
        progress._since_progress = time.monotonic()
        return progress

    def request_params(self) -> dict[str, str]:
        """The query of the next answer: after the last event received, if any."""
        self._trailer_seen = False
        if self.last_id is None:
            return dict(self.params)
        return {**self.params, "cursor": self.last_id}

    def take(self, line: str) -> ExportedEvent | None:
        """The event of one line (None for the trailer or a blank line); AnswerCut for a
        line that is not a whole export line."""
        if not line.strip():
            return None
        try:
            body = json.loads(line)
        except ValueError:
            raise AnswerCut("an export line is not JSON") from None
        if not isinstance(body, dict):
            raise AnswerCut("an export line is not an object")
        if set(body) == {"export"}:
            trailer = body["export"]
            self._trailer_seen = True
            if trailer.get("complete"):
                self.finished = True
            elif trailer.get("cursor"):
                self.last_id = trailer["cursor"]
            return None
        try:
            event = ExportedEvent.from_json(body)
        except (KeyError, TypeError, ValueError):
            raise AnswerCut("an export line is not an event") from None
        self.last_id = event.id
        self.failures = 0
        self._since_progress = time.monotonic()
        return event

    def answer_ended(self) -> None:
        """An answer's body ended: AnswerCut unless its trailer came (then the export is
        finished, or goes on from the trailer's cursor)."""
        if not self._trailer_seen:
            raise AnswerCut("the answer ended before its trailer")

    def failed(self, reply: Reply | AnswerCut) -> float:
        """The seconds to wait before asking again after `reply` (an error answer, a
        network error or a cut answer); raises when it must not be retried, or when no
        event arrived for longer than the policy's deadline."""
        if not isinstance(reply, AnswerCut | Exception) and not is_retryable(reply):
            raise _api_error(reply)
        self.failures += 1
        if time.monotonic() - self._since_progress > self.policy.deadline:
            if isinstance(reply, Exception):
                raise ServiceUnreachable(f"export stalled: {_describe(reply)}")
            raise _api_error(reply)
        after = None if isinstance(reply, AnswerCut) else retry_after(reply)
        return self.policy.delay(self.failures, after)


def _describe(reply: Reply | AnswerCut) -> str:
    return str(reply) if isinstance(reply, AnswerCut) else describe(reply)


def _api_error(response: Any) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return ApiError.from_body(response.status_code, body, f"HTTP {response.status_code}")
