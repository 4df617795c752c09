"""Typed values the client takes and returns, and their JSON shapes on the wire."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from metering_client.errors import ApiError

Number = int | float
T = TypeVar("T")


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


# -- webhooks and alerts (issue 14) ---------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a long list (a delivery log, an alert's triggers), newest first;
    `next_cursor` asks for the next page, None on the last one."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the service sends signed webhooks. `event_types` None means every type.
    `secret` (`whsec_...`) is only known in the answer of a create or a rotation."""

    id: str
    url: str
    description: str
    event_types: tuple[str, ...] | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime | None
    updated_at: datetime | None
    secret: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> WebhookEndpoint:
        types = body.get("eventTypes")
        return cls(
            id=body["id"],
            url=body["url"],
            description=body.get("description") or "",
            event_types=None if types is None else tuple(types),
            enabled=bool(body.get("enabled", True)),
            disabled_reason=body.get("disabledReason"),
            created_at=_time(body.get("createdAt")),
            updated_at=_time(body.get("updatedAt")),
            secret=body.get("secret"),
        )


@dataclass(frozen=True)
class WebhookAttempt:
    """One try to deliver a message: the receiver's status (None when it never answered:
    timeout, refused or reset connection), how long it took, and what went wrong."""

    at: datetime | None
    status_code: int | None
    latency_ms: int | float | None
    error: str | None
    response_body: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> WebhookAttempt:
        return cls(
            at=_time(body.get("at")),
            status_code=body.get("statusCode"),
            latency_ms=body.get("latencyMs"),
            error=body.get("error"),
            response_body=body.get("responseBody") or "",
        )


@dataclass(frozen=True)
class WebhookMessage:
    """One message to one endpoint and its delivery log. `id` is the `webhook-id` header
    of every attempt; `payload` is the delivered body (`{type, timestamp, data}`);
    `status` is `pending`, `delivered` or `failed`."""

    id: str
    endpoint_id: str
    event_type: str
    status: str
    payload: Mapping[str, Any]
    created_at: datetime | None
    next_attempt_at: datetime | None
    attempt_count: int
    attempts: tuple[WebhookAttempt, ...]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> WebhookMessage:
        attempts = tuple(WebhookAttempt.from_json(a) for a in body.get("attempts") or ())
        return cls(
            id=body["id"],
            endpoint_id=body["endpointId"],
            event_type=body["eventType"],
            status=body["status"],
            payload=dict(body.get("payload") or {}),
            created_at=_time(body.get("createdAt")),
            next_attempt_at=_time(body.get("nextAttemptAt")),
            attempt_count=int(body.get("attemptCount", len(attempts))),
            attempts=attempts,
        )


#: An alert's scope: "user" (each user), "org" (the meter's total) or {"userId": "..."}.
AlertScope = str | Mapping[str, str]


@dataclass(frozen=True)
class Alert:
    """A rule: tell me (`alert.triggered`) when a subject's usage of a meter in the
    period reaches each threshold."""

    id: str
    name: str
    meter_id: str
    thresholds: tuple[int, ...]
    scope: AlertScope
    period: str
    time_zone: str
    filter: Mapping[str, str]
    notify_on_resolve: bool
    archived: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Alert:
        scope = body["scope"]
        return cls(
            id=body["id"],
            name=body["name"],
            meter_id=body["meterId"],
            thresholds=tuple(int(t) for t in body["thresholds"]),
            scope=dict(scope) if isinstance(scope, Mapping) else scope,
            period=body["period"],
            time_zone=body.get("timeZone") or "UTC",
            filter=dict(body.get("filter") or {}),
            notify_on_resolve=bool(body.get("notifyOnResolve", False)),
            archived=bool(body.get("archived", False)),
            created_at=_time(body.get("createdAt")),
            updated_at=_time(body.get("updatedAt")),
        )


@dataclass(frozen=True)
class AlertTrigger:
    """A threshold crossed (`alert.triggered`) or left again (`alert.resolved`) by a
    subject (`user_id` None for the org's total) in one period; `message_id` is the
    `webhook-id` of the message that announces it."""

    id: str
    alert_id: str
    type: str
    meter_id: str
    user_id: str | None
    threshold: int
    value: Number | None
    period_start: datetime | None
    period_end: datetime | None
    at: datetime | None
    message_id: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AlertTrigger:
        return cls(
            id=body["id"],
            alert_id=body["alertId"],
            type=body["type"],
            meter_id=body["meterId"],
            user_id=body.get("userId"),
            threshold=int(body["threshold"]),
            value=exact_value(body.get("value")),
            period_start=_time(body.get("periodStart")),
            period_end=_time(body.get("periodEnd")),
            at=_time(body.get("at")),
            message_id=body.get("messageId"),
        )


# -- issue 16: the org's API keys -----------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """One of the org's API keys. `secret` (`mk_...`) is only known in the answer of a
    create; a listed key has its `status` (`active`, `expired` or `revoked`) and times."""

    prefix: str
    scopes: tuple[str, ...]
    name: str | None = None
    status: str = "active"
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_by: str | None = None
    secret: str | None = None

    @property
    def id(self) -> str:
        """What identifies the key: its prefix."""
        return self.prefix

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ApiKey:
        return cls(
            prefix=body.get("prefix") or body["keyPrefix"],
            scopes=tuple(body.get("scopes") or ()),
            name=body.get("name"),
            status=body.get("status") or "active",
            created_at=_time(body.get("createdAt")),
            expires_at=_time(body.get("expiresAt")),
            last_used_at=_time(body.get("lastUsedAt")),
            revoked_at=_time(body.get("revokedAt")),
            created_by=body.get("createdBy"),
            secret=body.get("apiKey"),
        )


# -- issue 16, customer portal ---------------------------------------------------------


@dataclass(frozen=True)
class PortalToken:
    """A customer portal token: give `token` to one end customer's browser, e.g. as
    `https://metering.example/portal#token=...`; it reads that user's usage only."""

    token: str
    expires_at: datetime
    user_id: str
    meter_ids: tuple[str, ...] | None  # None: all the org's active meters

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PortalToken:
        expires_at = _time(body["expiresAt"])
        assert expires_at is not None  # the service always sends it
        meters = body.get("meterIds")
        return cls(
            token=body["token"],
            expires_at=expires_at,
            user_id=body["userId"],
            meter_ids=tuple(meters) if meters is not None else None,
        )


# -- issue 17, export ------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedEvent:
    """One stored event as an export streams it (`export_events`), with its `status`
    (`active` or `cancelled`) and idempotency key ("" when it was recorded without)."""

    id: str
    event_name: str
    user_id: str
    value: int
    timestamp: datetime
    idempotency: str
    dimensions: dict[str, str]
    metadata: dict[str, Any]
    status: str
    #: The event this one replaced (an amendment's replacement), or None.
    amends: str | None = None
    #: The event that replaced this one (an amended, cancelled event), or None.
    amended_by: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ExportedEvent:
        return cls(
            id=body["id"],
            event_name=body["eventName"],
            user_id=body["userId"],
            value=int(body["value"]),
            timestamp=datetime.fromisoformat(body["timestamp"]),
            idempotency=body.get("idempotency") or "",
            dimensions=dict(body.get("dimensions") or {}),
            metadata=dict(body.get("metadata") or {}),
            status=body["status"],
            amends=body.get("amends"),
            amended_by=body.get("amendedBy"),
        )


# -- issue 16: usage limits ----------------------------------------------------------


@dataclass(frozen=True)
class UsageLimit:
    """At most `limit` of a meter's value per calendar `period` in `time_zone`, for one
    user (`user_id`) or, with `user_id` None, for every user without an override."""

    id: str
    meter_id: str
    user_id: str | None
    limit: int
    period: str
    time_zone: str
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> UsageLimit:
        return cls(
            id=body["id"],
            meter_id=body["meterId"],
            user_id=body.get("userId"),
            limit=int(body["limit"]),
            period=body["period"],
            time_zone=body["timeZone"],
            created_at=_time(body.get("createdAt")),
            updated_at=_time(body.get("updatedAt")),
        )


# -- issue 17, corrections -----------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    """A correction record: a range cancel (its progress) or an amendment; who (`key_prefix`),
    when, what, how many events and how much value it cancelled."""

    id: str
    type: str  # cancel_range | amend
    status: str  # running | complete
    meter_id: str
    user_id: str | None
    period_start: datetime | None
    period_end: datetime | None
    filter: dict[str, list[str]]
    event_id: str | None
    replacement_id: str | None
    key_prefix: str
    created_at: datetime | None
    completed_at: datetime | None
    passes: int
    scanned: int
    cancelled: int
    value: int
    expired: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Correction:
        return cls(
            id=data["id"],
            type=data["type"],
            status=data["status"],
            meter_id=data["meterId"],
            user_id=data.get("userId"),
            period_start=_time(data.get("periodStart")),
            period_end=_time(data.get("periodEnd")),
            filter=dict(data.get("filter") or {}),
            event_id=data.get("eventId"),
            replacement_id=data.get("replacementId"),
            key_prefix=data.get("keyPrefix", ""),
            created_at=_time(data.get("createdAt")),
            completed_at=_time(data.get("completedAt")),
            passes=data.get("passes", 1),
            scanned=data.get("scanned", 0),
            cancelled=data["cancelled"],
            value=int(exact_value(data.get("value")) or 0),
            expired=data.get("expired", 0),
        )


@dataclass(frozen=True)
class LimitCheck:
    """A user's usage this period against the limit that applies: `allowed` is
    `used < limit`; every batch answered before `as_of` is counted."""

    allowed: bool
    used: int
    limit: int
    remaining: int
    limit_id: str
    user_id: str
    period_start: datetime | None
    period_end: datetime | None
    resets_at: datetime | None
    as_of: datetime | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> LimitCheck:
        return cls(
            allowed=bool(body["allowed"]),
            used=int(body["used"]),
            limit=int(body["limit"]),
            remaining=int(body["remaining"]),
            limit_id=body["limitId"],
            user_id=body["userId"],
            period_start=_time(body.get("periodStart")),
            period_end=_time(body.get("periodEnd")),
            resets_at=_time(body.get("resetsAt")),
            as_of=_time(body.get("asOf")),
        )


@dataclass(frozen=True)
class CancelPreview:
    """What a range cancel would cancel now (a dry run): events, their value, and the
    matching events it would leave because they are older than the cancellation window."""

    events: int
    value: int
    expired: int
    scanned: int
    #: "rollups": the range's recent part was counted from rollups; "events": read
    source: str = "events"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CancelPreview:
        return cls(
            events=data["events"],
            value=int(exact_value(data.get("value")) or 0),
            expired=data.get("expired", 0),
            scanned=data.get("scanned", 0),
            source=data.get("source", "events"),
        )


@dataclass(frozen=True)
class Amendment:
    """An amend's outcome: `created`, or `duplicate` for a retry of the same change; the
    original (now cancelled) and its replacement as the event log lists them."""

    status: str
    original_id: str
    replacement_id: str
    correction_id: str
    original: dict[str, Any]
    replacement: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Amendment:
        return cls(
            status=data["status"],
            original_id=data["original"]["id"],
            replacement_id=data["replacement"]["id"],
            correction_id=data["correctionId"],
            original=data["original"],
            replacement=data["replacement"],
        )
