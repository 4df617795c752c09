"""The service's API as I/O-free operations (see `protocol`): meters, summaries, events.

Every operation retries what may succeed on a second try (network errors, 429,
5xx) up to the policy's deadline. Creating a meter is the one call that is not
naturally idempotent: when a retried create is refused because the event name
is taken, the first attempt most likely succeeded unseen, so the meter that
now holds the name is returned if it matches what was asked.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypedDict, TypeVar, Unpack

from metering_client.protocol import EVENTS_PATH, Action, Answer, Send, call
from metering_client.retry import Reply, RetryPolicy
from metering_client.types import CancelOutcome, Event, EventOutcome, Meter, Summary, period_bound

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
