"""Typed values the client takes and returns, and their JSON shapes on the wire."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from metering_client.errors import ApiError

Number = int | float


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a `Z`."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def period_bound(value: datetime | date | str) -> str:
    """A summary period bound: aware datetime, date (`YYYY-MM-DD`) or text as given."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def exact_value(wire: Any) -> Number | None:
    """A summary value as the caller gets it: always an int for integers. The service sends
    integers beyond 2**53 - 1 in size as strings of their exact digits (so that readers
    holding numbers as doubles lose nothing); Python's int holds any of them exactly."""
    if isinstance(wire, str):
        return int(wire)
    return wire  # type: ignore[no-any-return]  # JSON: a number is int or float


@dataclass(frozen=True)
class Event:
    """One usage event, with the idempotency key every send of it carries."""

    user_id: str
    idempotency_key: str
    timestamp: str
    event_name: str | None = None
    meter_id: str | None = None
    value: int | None = None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        user_id: str,
        event_name: str | None = None,
        meter_id: str | None = None,
        value: int | None = None,
        timestamp: datetime | str | None = None,
        dimensions: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """An event checked for what the client can check alone; stamped now by default.

        Raises ValueError for a missing user or meter, a non-integer value or a
        naive datetime. A key is generated when none is given.
        """
        if not user_id or not isinstance(user_id, str):
            raise ValueError("user_id must be a non-empty string")
        if bool(event_name) == bool(meter_id):
            raise ValueError("name the meter by event_name or meter_id (exactly one)")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"value must be an integer, not {value!r}")
        if idempotency_key is not None and not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        when = timestamp if timestamp is not None else datetime.now(UTC)
        return cls(
            user_id=user_id,
            event_name=event_name,
            meter_id=meter_id,
            value=value,
            timestamp=rfc3339(when) if isinstance(when, datetime) else when,
            dimensions=dict(dimensions or {}),
            metadata=dict(metadata or {}),
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "userId": self.user_id,
            "idempotency": self.idempotency_key,
            "timestamp": self.timestamp,
        }
        if self.event_name:
            body["eventName"] = self.event_name
        else:
            body["meterId"] = self.meter_id
        if self.value is not None:
            body["value"] = self.value
        if self.dimensions:
            body["dimensions"] = dict(self.dimensions)
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


@dataclass(frozen=True)
class EventOutcome:
    """What the service did with one event: `created`, `duplicate` or `conflict`."""

    id: str
    status: str


@dataclass(frozen=True)
class Rejection:
    """An event the service refused, with its error; retrying it as is cannot succeed."""

    event: Event
    error: ApiError


@dataclass(frozen=True)
class CancelOutcome:
    """`cancelled`, `already_cancelled`, `not_found` or `expired`; id when one is known."""

    id: str | None
    status: str


@dataclass(frozen=True)
class Meter:
    id: str
    name: str
    event_name: str
    aggregation_type: str
    currency: str
    dimensions: tuple[str, ...]
    metadata: Mapping[str, Any]
    status: str
    unique_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Meter:
        return cls(
            id=body["id"],
            name=body["name"],
            event_name=body["eventName"],
            aggregation_type=body["aggregationType"],
            currency=body["currency"],
            dimensions=tuple(body.get("dimensions") or ()),
            metadata=dict(body.get("metadata") or {}),
            status=body.get("status", "active"),
            unique_by=body.get("uniqueBy"),
            created_at=_time(body.get("createdAt")),
            updated_at=_time(body.get("updatedAt")),
        )


@dataclass(frozen=True)
class Window:
    """One (window, group) of a summary; window bounds in the summary's time zone. `value` is
    an int (exact at any size) or, for avg, a float; None when there is nothing to show."""

    window_start: datetime | None
    window_end: datetime | None
    value: Number | None
    event_count: int
    group_by: Mapping[str, str]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Window:
        return cls(
            window_start=_time(body.get("windowStart")),
            window_end=_time(body.get("windowEnd")),
            value=exact_value(body.get("value")),
            event_count=body["eventCount"],
            group_by=dict(body.get("groupBy") or {}),
        )


@dataclass(frozen=True)
class Summary:
    """A meter's aggregated usage; `windows` is None unless windows or groups were asked.
    Grouped by userId, `windows` holds one page of users (see `summary_pages`).
    `value` is an int (exact at any size: sums past int64 included) or, for avg, a float."""

    meter_id: str
    meter_name: str
    user_id: str
    aggregation_type: str
    value: Number | None
    event_count: int
    period_start: datetime | None
    period_end: datetime | None
    windows: list[Window] | None
    #: Grouped by userId: the cursor of the next page of users, None on the last page.
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Summary:
        windows = body.get("windows")
        return cls(
            meter_id=body["meterId"],
            meter_name=body["meterName"],
            user_id=body.get("userId") or "",
            aggregation_type=body["aggregationType"],
            value=exact_value(body.get("value")),
            event_count=body["eventCount"],
            period_start=_time(body.get("periodStart")),
            period_end=_time(body.get("periodEnd")),
            windows=None if windows is None else [Window.from_json(w) for w in windows],
            next_cursor=body.get("nextCursor"),
        )
