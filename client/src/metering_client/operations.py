"""The service's API as I/O-free operations (see `protocol`): meters, summaries, events,
webhook endpoints and alert rules.

Every operation retries what may succeed on a second try (network errors, 429,
5xx) up to the policy's deadline. Creating a meter is the one call that is not
naturally idempotent: when a retried create is refused because the event name
is taken, the first attempt most likely succeeded unseen, so the meter that
now holds the name is returned if it matches what was asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

from metering_client.protocol import EVENTS_PATH, Action, Answer, Send, call
from metering_client.retry import Reply, RetryPolicy
from metering_client.types import (
    Alert,
    AlertScope,
    AlertTrigger,
    Amendment,
    ApiKey,
    CancelOutcome,
    CancelPreview,
    Correction,
    Event,
    EventOutcome,
    LimitCheck,
    Meter,
    Page,
    PortalToken,
    Summary,
    UsageLimit,
    WebhookEndpoint,
    WebhookMessage,
    period_bound,
)

METERS_PATH = "/v1/billing/meters"
MAX_BATCH = 100
T = TypeVar("T")
#: An I/O-free operation: yields what to do, gets the reply, returns its result.
Op = Generator[Action, Reply | None, T]


def _call(
    policy: RetryPolicy, method: str, path: str, *, params: Any = None, json: Any = None
) -> Op[Answer]:
    answer = yield from call(Send(method, path, params=params, json=json), policy, policy.deadline)
    return answer


def create_meter(policy: RetryPolicy, body: dict[str, Any]) -> Op[Meter]:
    answer = yield from _call(policy, "POST", METERS_PATH, json=body)
    if answer.status == 409 and answer.retried:
        for meter in (yield from list_meters(policy)):
            if meter.event_name == body["eventName"] and meter.name == body["name"]:
                return meter
    return Meter.from_json(answer.ok())


def list_meters(policy: RetryPolicy, page_size: int = 100) -> Op[list[Meter]]:
    meters: list[Meter] = []
    cursor = None
    while True:
        params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
        page = (yield from _call(policy, "GET", METERS_PATH, params=params)).ok()
        meters += [Meter.from_json(m) for m in page["meters"]]
        cursor = page.get("nextCursor")
        if not cursor:
            return meters


def get_meter(policy: RetryPolicy, meter_id: str) -> Op[Meter]:
    answer = yield from _call(policy, "GET", f"{METERS_PATH}/{meter_id}")
    return Meter.from_json(answer.ok())


def update_meter(policy: RetryPolicy, meter_id: str, changes: dict[str, Any]) -> Op[Meter]:
    answer = yield from _call(policy, "PATCH", f"{METERS_PATH}/{meter_id}", json=changes)
    return Meter.from_json(answer.ok())


def archive_meter(policy: RetryPolicy, meter_id: str) -> Op[Meter]:
    answer = yield from _call(policy, "DELETE", f"{METERS_PATH}/{meter_id}")
    return Meter.from_json(answer.ok())


class SummaryOptions(TypedDict, total=False):
    """What a summary may ask besides its meter: the keyword arguments of `summary` and
    `summary_pages` in both clients, declared once."""

    user_id: str | None
    period_start: datetime | date | str | None
    period_end: datetime | date | str | None
    window_size: str | None
    time_zone: str | None
    group_by: Sequence[str]
    filters: Mapping[str, str | Iterable[str]] | None
    limit: int | None
    cursor: str | None
    order_by: str | None


def summary_params(meter_id: str, **options: Unpack[SummaryOptions]) -> list[tuple[str, str]]:
    """The summary's query string; repeated names for groupBy and multi-valued filters."""
    params = [("meterId", meter_id)]
    start, end, limit = options.get("period_start"), options.get("period_end"), options.get("limit")
    optional = {
        "userId": options.get("user_id"),
        "windowSize": options.get("window_size"),
        "timeZone": options.get("time_zone"),
        "periodStart": None if start is None else period_bound(start),
        "periodEnd": None if end is None else period_bound(end),
        "limit": None if limit is None else str(limit),
        "cursor": options.get("cursor"),
        "orderBy": options.get("order_by"),
    }
    params += [(name, value) for name, value in optional.items() if value is not None]
    params += [("groupBy", name) for name in options.get("group_by", ())]
    for name, values in (options.get("filters") or {}).items():
        for value in [values] if isinstance(values, str) else values:
            params.append((f"filter[{name}]", value))
    return params


def summary(policy: RetryPolicy, params: list[tuple[str, str]]) -> Op[Summary]:
    answer = yield from _call(policy, "GET", f"{EVENTS_PATH}/summary", params=params)
    return Summary.from_json(answer.ok())


def next_page_params(params: list[tuple[str, str]], page: Summary) -> list[tuple[str, str]] | None:
    """The query string of the page after `page` (same query, its `nextCursor`), or None
    when `page` was the last one."""
    if page.next_cursor is None:
        return None
    return [(name, value) for name, value in params if name != "cursor"] + [
        ("cursor", page.next_cursor)
    ]


def send_events(policy: RetryPolicy, events: Sequence[Event]) -> Op[list[EventOutcome]]:
    """Send events now, 100 a request; raises ApiError when the service refuses a batch."""
    outcomes: list[EventOutcome] = []
    for start in range(0, len(events), MAX_BATCH):
        chunk = events[start : start + MAX_BATCH]
        answer = yield from _call(
            policy, "POST", EVENTS_PATH, json={"events": [e.to_json() for e in chunk]}
        )
        outcomes += [EventOutcome(o["id"], o["status"]) for o in answer.ok()["events"]]
    return outcomes


def cancel_events(
    policy: RetryPolicy, targets: Sequence[dict[str, str]]
) -> Op[list[CancelOutcome]]:
    """Cancel events, 100 a request. A retried cancel may answer `already_cancelled`."""
    outcomes: list[CancelOutcome] = []
    for start in range(0, len(targets), MAX_BATCH):
        answer = yield from _call(
            policy,
            "POST",
            f"{EVENTS_PATH}/cancel",
            json={"events": list(targets[start : start + MAX_BATCH])},
        )
        outcomes += [CancelOutcome(o.get("id"), o["status"]) for o in answer.ok()["events"]]
    return outcomes


def cancel_targets(
    ids: Iterable[str] = (),
    idempotency_keys: Iterable[str] = (),
    *,
    event_name: str | None = None,
    meter_id: str | None = None,
) -> list[dict[str, str]]:
    """Cancel targets by event id, or by idempotency key with the meter named once."""
    targets = [{"id": event_id} for event_id in ids]
    keys = list(idempotency_keys)
    if keys and bool(event_name) == bool(meter_id):
        raise ValueError("cancelling by idempotency key needs event_name or meter_id (exactly one)")
    meter: dict[str, Any] = {"eventName": event_name} if event_name else {"meterId": meter_id}
    return targets + [{**meter, "idempotency": key} for key in keys]


def meter_body(
    name: str,
    event_name: str,
    *,
    aggregation_type: str | None,
    currency: str | None,
    dimensions: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    unique_by: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "eventName": event_name}
    optional = {
        "aggregationType": aggregation_type,
        "currency": currency,
        "dimensions": None if dimensions is None else list(dimensions),
        "metadata": None if metadata is None else dict(metadata),
        "uniqueBy": unique_by,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def meter_changes(**changes: Any) -> dict[str, Any]:
    """PATCH body from snake_case keyword arguments, leaving out those not given."""
    names = {
        "name": "name",
        "event_name": "eventName",
        "aggregation_type": "aggregationType",
        "dimensions": "dimensions",
        "metadata": "metadata",
        "unique_by": "uniqueBy",
    }
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"unknown meter fields: {', '.join(sorted(unknown))}")
    body = {names[key]: value for key, value in changes.items() if value is not None}
    if "dimensions" in body:
        body["dimensions"] = list(body["dimensions"])
    return body


# -- webhook endpoints and their delivery log (issue 14) ------------------------------

ENDPOINTS_PATH = "/v1/webhooks/endpoints"
ALERTS_PATH = "/v1/billing/alerts"
#: How far apart (seconds) the service's clock may stamp two attempts of one create.
CLOCK_SLACK = 2.0


def _all_pages(
    policy: RetryPolicy, path: str, key: str, params: dict[str, Any]
) -> Op[list[dict[str, Any]]]:
    """Every item of a paged list (`{key: [...], "nextCursor"}`), page after page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (yield from _call(policy, "GET", path, params={**params, **_cursor(cursor)})).ok()
        items += page[key]
        cursor = page.get("nextCursor")
        if not cursor:
            return items


def _cursor(cursor: str | None) -> dict[str, str]:
    return {"cursor": cursor} if cursor else {}


def _page_params(limit: int | None, cursor: str | None, **more: Any) -> dict[str, Any]:
    params = {"limit": limit, **more, **_cursor(cursor)}
    return {name: value for name, value in params.items() if value is not None}


class _Created(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime | None: ...


C = TypeVar("C", bound=_Created)


def _twins_of_a_retried_create(
    made: list[C], kept: C, same: Callable[[C], bool], seconds: float
) -> list[C]:
    """What an earlier attempt of a retried create made: the same fields as what the
    create answered, stamped no earlier than the call's duration before it.

    The service has no idempotency key for these creates, so an attempt whose answer was
    lost on the way and was sent again leaves two endpoints (each signing with its own
    secret, one that nobody knows) or two rules (every crossing announced twice).
    """
    if kept.created_at is None:
        return []
    earliest = kept.created_at - timedelta(seconds=seconds + CLOCK_SLACK)
    return [
        thing
        for thing in made
        if thing.id != kept.id
        and thing.created_at is not None
        and earliest <= thing.created_at <= kept.created_at
        and same(thing)
    ]


def create_webhook_endpoint(policy: RetryPolicy, body: dict[str, Any]) -> Op[WebhookEndpoint]:
    """Create an endpoint; the answer carries its secret, shown once. When the create had
    to be retried, endpoints an earlier attempt made unseen are deleted."""
    started = time.monotonic()
    answer = yield from _call(policy, "POST", ENDPOINTS_PATH, json=body)
    endpoint = WebhookEndpoint.from_json(answer.ok())
    if answer.retried:
        twins = _twins_of_a_retried_create(
            (yield from list_webhook_endpoints(policy)),
            endpoint,
            lambda other: (
                (other.url, other.description, other.event_types)
                == (endpoint.url, endpoint.description, endpoint.event_types)
            ),
            time.monotonic() - started,
        )
        for twin in twins:
            yield from _call(policy, "DELETE", f"{ENDPOINTS_PATH}/{twin.id}")
    return endpoint


def list_webhook_endpoints(policy: RetryPolicy, page_size: int = 100) -> Op[list[WebhookEndpoint]]:
    items = yield from _all_pages(policy, ENDPOINTS_PATH, "endpoints", {"limit": page_size})
    return [WebhookEndpoint.from_json(item) for item in items]


def get_webhook_endpoint(policy: RetryPolicy, endpoint_id: str) -> Op[WebhookEndpoint]:
    answer = yield from _call(policy, "GET", f"{ENDPOINTS_PATH}/{endpoint_id}")
    return WebhookEndpoint.from_json(answer.ok())


def update_webhook_endpoint(
    policy: RetryPolicy, endpoint_id: str, changes: dict[str, Any]
) -> Op[WebhookEndpoint]:
    answer = yield from _call(policy, "PATCH", f"{ENDPOINTS_PATH}/{endpoint_id}", json=changes)
    return WebhookEndpoint.from_json(answer.ok())


def delete_webhook_endpoint(policy: RetryPolicy, endpoint_id: str) -> Op[WebhookEndpoint | None]:
    """Delete an endpoint: its answer, or None when a retry found it already deleted (the
    first attempt did it, its answer lost)."""
    answer = yield from _call(policy, "DELETE", f"{ENDPOINTS_PATH}/{endpoint_id}")
    if answer.status == 404 and answer.retried:
        return None
    return WebhookEndpoint.from_json(answer.ok())


def rotate_webhook_secret(policy: RetryPolicy, endpoint_id: str) -> Op[WebhookEndpoint]:
    answer = yield from _call(policy, "POST", f"{ENDPOINTS_PATH}/{endpoint_id}/rotate-secret")
    return WebhookEndpoint.from_json(answer.ok())


def list_webhook_messages(
    policy: RetryPolicy,
    endpoint_id: str,
    *,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Op[Page[WebhookMessage]]:
    params = _page_params(limit, cursor, status=status)
    page = (
        yield from _call(policy, "GET", f"{ENDPOINTS_PATH}/{endpoint_id}/messages", params=params)
    ).ok()
    return Page([WebhookMessage.from_json(m) for m in page["messages"]], page.get("nextCursor"))


def retry_webhook_message(
    policy: RetryPolicy, endpoint_id: str, message_id: str
) -> Op[WebhookMessage]:
    path = f"{ENDPOINTS_PATH}/{endpoint_id}/messages/{message_id}/retry"
    return WebhookMessage.from_json((yield from _call(policy, "POST", path)).ok())


def send_test_webhook(policy: RetryPolicy, endpoint_id: str) -> Op[WebhookMessage]:
    path = f"{ENDPOINTS_PATH}/{endpoint_id}/test"
    return WebhookMessage.from_json((yield from _call(policy, "POST", path)).ok())


def endpoint_body(
    url: str, *, description: str | None, event_types: Sequence[str] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if description is not None:
        body["description"] = description
    if event_types is not None:
        body["eventTypes"] = list(event_types)
    return body


def endpoint_changes(**changes: Any) -> dict[str, Any]:
    """PATCH body of an endpoint from snake_case keyword arguments, leaving out those not
    given; `event_types=ALL_EVENT_TYPES` (None on the wire) subscribes to every type."""
    body = _changes(
        changes,
        {
            "url": "url",
            "description": "description",
            "event_types": "eventTypes",
            "enabled": "enabled",
        },
    )
    if "eventTypes" in body:
        types = body["eventTypes"]
        body["eventTypes"] = None if types is ALL_EVENT_TYPES else list(types)
    return body


class _AllEventTypes:
    def __repr__(self) -> str:
        return "ALL_EVENT_TYPES"


#: `update_webhook_endpoint(..., event_types=ALL_EVENT_TYPES)`: subscribe to every type.
ALL_EVENT_TYPES: Any = _AllEventTypes()


def _changes(given: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A PATCH body from snake_case keyword arguments: those given and not None, renamed."""
    unknown = set(given) - set(names)
    if unknown:
        raise TypeError(f"unknown fields: {', '.join(sorted(unknown))}")
    return {names[key]: value for key, value in given.items() if value is not None}


# -- alert rules and their triggers (issue 14) ---------------------------------------


def create_alert(policy: RetryPolicy, body: dict[str, Any]) -> Op[Alert]:
    """Create an alert rule. When the create had to be retried, identical rules an
    earlier attempt made unseen are archived, so that no crossing is announced twice."""
    started = time.monotonic()
    answer = yield from _call(policy, "POST", ALERTS_PATH, json=body)
    alert = Alert.from_json(answer.ok())
    if answer.retried:
        twins = _twins_of_a_retried_create(
            (yield from list_alerts(policy)),
            alert,
            lambda other: _same_rule(other, alert),
            time.monotonic() - started,
        )
        for twin in twins:
            yield from _call(policy, "DELETE", f"{ALERTS_PATH}/{twin.id}")
    return alert


def _same_rule(one: Alert, other: Alert) -> bool:
    def bare(alert: Alert) -> Alert:
        return replace(alert, id="", created_at=None, updated_at=None)

    return bare(one) == bare(other)


def list_alerts(
    policy: RetryPolicy, *, include_archived: bool = False, page_size: int = 100
) -> Op[list[Alert]]:
    params: dict[str, Any] = {"limit": page_size}
    if include_archived:
        params["includeArchived"] = "true"
    items = yield from _all_pages(policy, ALERTS_PATH, "alerts", params)
    return [Alert.from_json(item) for item in items]


def get_alert(policy: RetryPolicy, alert_id: str) -> Op[Alert]:
    return Alert.from_json((yield from _call(policy, "GET", f"{ALERTS_PATH}/{alert_id}")).ok())


def update_alert(policy: RetryPolicy, alert_id: str, changes: dict[str, Any]) -> Op[Alert]:
    answer = yield from _call(policy, "PATCH", f"{ALERTS_PATH}/{alert_id}", json=changes)
    return Alert.from_json(answer.ok())


def archive_alert(policy: RetryPolicy, alert_id: str) -> Op[Alert]:
    return Alert.from_json((yield from _call(policy, "DELETE", f"{ALERTS_PATH}/{alert_id}")).ok())


def list_alert_triggers(
    policy: RetryPolicy, alert_id: str, *, limit: int | None = None, cursor: str | None = None
) -> Op[Page[AlertTrigger]]:
    params = _page_params(limit, cursor)
    page = (
        yield from _call(policy, "GET", f"{ALERTS_PATH}/{alert_id}/triggers", params=params)
    ).ok()
    return Page([AlertTrigger.from_json(t) for t in page["triggers"]], page.get("nextCursor"))


def alert_body(
    name: str,
    meter_id: str,
    thresholds: Sequence[int],
    *,
    scope: AlertScope,
    period: str,
    time_zone: str | None,
    filter: Mapping[str, str] | None,
    notify_on_resolve: bool | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "meterId": meter_id,
        "thresholds": list(thresholds),
        "scope": dict(scope) if isinstance(scope, Mapping) else scope,
        "period": period,
    }
    optional = {
        "timeZone": time_zone,
        "filter": None if filter is None else dict(filter),
        "notifyOnResolve": notify_on_resolve,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def alert_changes(**changes: Any) -> dict[str, Any]:
    """PATCH body of an alert rule from snake_case keyword arguments (those given)."""
    body = _changes(
        changes,
        {
            "name": "name",
            "thresholds": "thresholds",
            "filter": "filter",
            "notify_on_resolve": "notifyOnResolve",
        },
    )
    if "thresholds" in body:
        body["thresholds"] = list(body["thresholds"])
    if "filter" in body:
        body["filter"] = dict(body["filter"])
    return body


# -- issue 16: the org's API keys -----------------------------------------------------

KEYS_PATH = "/v1/keys"


def key_body(
    scopes: Sequence[str],
    *,
    expires_at: datetime | None = None,
    expires_in: timedelta | float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """POST /v1/keys's body from keyword arguments (`expires_in` a timedelta or seconds)."""
    body: dict[str, Any] = {"scopes": list(scopes)}
    if expires_at is not None:
        body["expiresAt"] = _rfc3339(expires_at)
    if expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        body["expiresIn"] = int(seconds)
    if name is not None:
        body["name"] = name
    return body


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("expires_at needs a time zone (e.g. datetime.now(UTC) + ...)")
    return moment.isoformat()


def create_key(policy: RetryPolicy, body: dict[str, Any]) -> Op[ApiKey]:
    """Create a key; its `secret` is in this answer only. When the create had to be
    retried, keys an earlier attempt made unseen (same scopes and name, made by the same
    key within the call) are revoked: nobody knows their secrets."""
    started = time.monotonic()
    answer = yield from _call(policy, "POST", KEYS_PATH, json=body)
    issued = ApiKey.from_json(answer.ok())
    if answer.retried:
        listed = yield from list_keys(policy)
        kept = next((key for key in listed if key.prefix == issued.prefix), None)
        if kept is not None:
            twins = _twins_of_a_retried_create(
                [key for key in listed if key.status == "active"],
                kept,
                lambda other: (
                    (other.scopes, other.name, other.created_by)
                    == (kept.scopes, kept.name, kept.created_by)
                ),
                time.monotonic() - started,
            )
            for twin in twins:
                yield from revoke_key(policy, twin.prefix)
    return issued


def list_keys(policy: RetryPolicy) -> Op[list[ApiKey]]:
    answer = yield from _call(policy, "GET", KEYS_PATH)
    return [ApiKey.from_json(item) for item in answer.ok()["keys"]]


def revoke_key(policy: RetryPolicy, prefix: str) -> Op[bool]:
    """Revoke a key by its prefix: True, or False when a retry found the first attempt
    had already revoked it (404)."""
    answer = yield from _call(policy, "DELETE", f"{KEYS_PATH}/{prefix}")
    if answer.status == 404 and answer.retried:
        return False
    answer.ok()
    return True


# -- customer portal (issue 16) ------------------------------------------------------

PORTAL_PATH = "/v1/portal"


def portal_token_body(
    user_id: str, meter_ids: Sequence[str] | None, expires_in: timedelta | int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"userId": user_id}
    if meter_ids is not None:
        body["meterIds"] = list(meter_ids)
    if expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        body["expiresIn"] = int(seconds)
    return body


def create_portal_token(policy: RetryPolicy, body: dict[str, Any]) -> Op[PortalToken]:
    """Issue a token (a retry at worst issues a second one, equally valid)."""
    answer = yield from _call(policy, "POST", f"{PORTAL_PATH}/tokens", json=body)
    return PortalToken.from_json(answer.ok())


def revoke_portal_tokens(policy: RetryPolicy, user_id: str | None = None) -> Op[datetime]:
    """Revoke the org's tokens (or one user's) issued until now; safe to retry."""
    body = {"userId": user_id} if user_id is not None else {}
    answer = yield from _call(policy, "POST", f"{PORTAL_PATH}/tokens/revoke", json=body)
    revoked = datetime.fromisoformat(answer.ok()["revokedBefore"].replace("Z", "+00:00"))
    return revoked


def set_portal_origins(policy: RetryPolicy, origins: Sequence[str]) -> Op[list[str]]:
    body = {"allowedOrigins": list(origins)}
    answer = yield from _call(policy, "PUT", f"{PORTAL_PATH}/settings", json=body)
    return list(answer.ok()["allowedOrigins"])


# -- usage limits and the limit check (issue 16) --------------------------------------

LIMITS_PATH = "/v1/billing/limits"


def limit_body(
    meter_id: str, limit: int, period: str, time_zone: str | None, user_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"meterId": meter_id, "limit": limit, "period": period}
    if time_zone is not None:
        body["timeZone"] = time_zone
    if user_id is not None:
        body["userId"] = user_id
    return body


def create_limit(policy: RetryPolicy, body: dict[str, Any]) -> Op[UsageLimit]:
    """Create a limit. A retried create that finds its (meter, user) taken (409) returns
    the stored limit when it is the one asked for (the first attempt landed)."""
    answer = yield from _call(policy, "POST", LIMITS_PATH, json=body)
    if answer.status == 409 and answer.retried:
        for found in (yield from list_limits(policy, meter_id=body["meterId"])):
            if found.user_id == body.get("userId") and found.limit == body["limit"]:
                return found
    return UsageLimit.from_json(answer.ok())


def list_limits(
    policy: RetryPolicy, *, meter_id: str | None = None, page_size: int = 100
) -> Op[list[UsageLimit]]:
    params: dict[str, Any] = {"limit": page_size}
    if meter_id:
        params["meterId"] = meter_id
    items = yield from _all_pages(policy, LIMITS_PATH, "limits", params)
    return [UsageLimit.from_json(item) for item in items]


def get_limit(policy: RetryPolicy, limit_id: str) -> Op[UsageLimit]:
    return UsageLimit.from_json((yield from _call(policy, "GET", f"{LIMITS_PATH}/{limit_id}")).ok())


def update_limit(policy: RetryPolicy, limit_id: str, limit: int) -> Op[UsageLimit]:
    answer = yield from _call(policy, "PATCH", f"{LIMITS_PATH}/{limit_id}", json={"limit": limit})
    return UsageLimit.from_json(answer.ok())


def delete_limit(policy: RetryPolicy, limit_id: str) -> Op[UsageLimit | None]:
    """Delete a limit; None when a retried delete finds it gone (the first one landed)."""
    answer = yield from _call(policy, "DELETE", f"{LIMITS_PATH}/{limit_id}")
    if answer.status == 404 and answer.retried:
        return None
    return UsageLimit.from_json(answer.ok())


def check_limit(
    policy: RetryPolicy, meter_id: str | None, event_name: str | None, user_id: str
) -> Op[LimitCheck]:
    if (meter_id is None) == (event_name is None):
        raise ValueError("give meter_id or event_name, not both")
    params = {"userId": user_id}
    params.update({"meterId": meter_id} if meter_id else {"eventName": event_name or ""})
    answer = yield from _call(policy, "GET", f"{LIMITS_PATH}/check", params=params)
    return LimitCheck.from_json(answer.ok())


class CheckCache:
    """The client's memory of recent limit checks: an answer is reused for `seconds`
    (0: never), so a hot request path asks the service about once a second per user.
    Thread-safe; bounded (the oldest half is dropped when full)."""

    MAX_ENTRIES = 10_000

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._answers: dict[tuple[str | None, str | None, str], tuple[float, LimitCheck]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str | None, str | None, str]) -> LimitCheck | None:
        if self.seconds <= 0:
            return None
        with self._lock:
            found = self._answers.get(key)
        if found is None or time.monotonic() - found[0] >= self.seconds:
            return None
        return found[1]

    def put(self, key: tuple[str | None, str | None, str], answer: LimitCheck) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._answers) >= self.MAX_ENTRIES:
                for old in list(self._answers)[: self.MAX_ENTRIES // 2]:
                    del self._answers[old]
            self._answers[key] = (time.monotonic(), answer)


# -- issue 17, corrections -----------------------------------------------------------------

CORRECTIONS_PATH = f"{EVENTS_PATH}/corrections"


def range_body(
    meter_id: str,
    period_start: datetime | date | str,
    period_end: datetime | date | str,
    *,
    user_id: str | None = None,
    filters: Mapping[str, str | Iterable[str]] | None = None,
) -> dict[str, Any]:
    """The range form of a cancel request."""
    body: dict[str, Any] = {
        "meterId": meter_id,
        "periodStart": period_bound(period_start),
        "periodEnd": period_bound(period_end),
    }
    if user_id is not None:
        body["userId"] = user_id
    if filters:
        body["filter"] = {
            name: [values] if isinstance(values, str) else list(values)
            for name, values in filters.items()
        }
    return body


def preview_cancel_range(policy: RetryPolicy, body: dict[str, Any]) -> Op[CancelPreview]:
    """A dry run, followed to its end: a partial answer (the range's old events are read
    one by one, within each request's budget) gives the cursor to go on with, and the
    last answer holds the whole range's figures."""
    cursor: str | None = None
    while True:
        request = {**body, "dryRun": True, **({"cursor": cursor} if cursor else {})}
        answer = yield from _call(policy, "POST", f"{EVENTS_PATH}/cancel", json=request)
        data = answer.ok()
        if data.get("complete", True) or not data.get("cursor"):
            return CancelPreview.from_json(data)
        cursor = data["cursor"]


def cancel_range(policy: RetryPolicy, body: dict[str, Any]) -> Op[Correction]:
    """Cancel every event of the range: the same request again while the service answers
    `running` (each continues where the last stopped; a retry never cancels twice)."""
    while True:
        answer = yield from _call(policy, "POST", f"{EVENTS_PATH}/cancel", json=body)
        correction = Correction.from_json(answer.ok())
        if correction.status == "complete":
            return correction


def amend_event(policy: RetryPolicy, event_id: str, changes: dict[str, Any]) -> Op[Amendment]:
    """Amend an event; a retried amend answers `duplicate` with the same replacement."""
    answer = yield from _call(policy, "POST", f"{EVENTS_PATH}/{event_id}/amend", json=changes)
    return Amendment.from_json(answer.ok())


def list_corrections(policy: RetryPolicy, page_size: int = 100) -> Op[list[Correction]]:
    found: list[Correction] = []
    cursor = None
    while True:
        params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
        page = (yield from _call(policy, "GET", CORRECTIONS_PATH, params=params)).ok()
        found += [Correction.from_json(c) for c in page["corrections"]]
        cursor = page.get("nextCursor")
        if not cursor:
            return found


def get_correction(policy: RetryPolicy, correction_id: str) -> Op[Correction]:
    answer = yield from _call(policy, "GET", f"{CORRECTIONS_PATH}/{correction_id}")
    return Correction.from_json(answer.ok())


def amend_changes(
    value: int | None, dimensions: Mapping[str, str] | None, timestamp: datetime | str | None
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if value is not None:
        changes["value"] = value
    if dimensions is not None:
        changes["dimensions"] = dict(dimensions)
    if timestamp is not None:
        changes["timestamp"] = period_bound(timestamp)
    return changes
