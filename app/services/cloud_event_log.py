"""What a tenant sees of its CloudEvents: `GET /api/v1/events`, OpenMeter's event list.

Two sources, newest first. Events that were stored are read back from each meter's
`meter-event` entities whose idempotency key says they came as CloudEvents (it holds
their `source` and `id`, `cloud_events.idempotency`); an event that fed several meters
is listed once, its `data` rebuilt from what its meters stored (the value at each
meter's `valueProperty`, each dimension at its path): the service keeps usage, not
payloads. Events that were refused (with their batch) or conflicted are kept as they
were sent, with the reason as `validationError` (`CloudEventProblem`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from google.api_core import exceptions as core_exceptions
from google.cloud import ndb
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app.core import jsonpath
from app.errors import ValidationFailed
from app.models import Meter, MeterEvent, utcnow
from app.models.cloud_event_problem import MAX_EVENT_TEXT, CloudEventProblem
from app.schemas.fields import parse_rfc3339
from app.services import mappings
from app.services import meters as meter_service

log = logging.getLogger(__name__)

#: Without `from`, the list covers this much (OpenMeter's default).
DEFAULT_SPAN = timedelta(hours=72)
MAX_LIMIT = 100


def _number(value: Any) -> Any:
    """A number the body held as a Decimal (`cloud_events.load_json`), as JSON writes it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _text(event: Any) -> str:
    text = json.dumps(event, default=_number, separators=(",", ":"))
    return text[:MAX_EVENT_TEXT]


def _put(entities: list[CloudEventProblem]) -> None:
    """Store log entries; a failure is logged, never turned into the request's error
    (the usage outcome, stored or refused, is already decided)."""
    try:
        ndb.put_multi(entities)
    except core_exceptions.GoogleAPICallError as exc:
        log.warning("could not keep %d CloudEvent problems: %s", len(entities), exc)


def refused(items: list[Any], problems: list[dict[str, Any]], now: datetime) -> None:
    """Keep every event of a refused batch with its problems (or the batch's)."""
    by_index: dict[int, list[str]] = {}
    for problem in problems:
        if problem.get("index") is not None:
            by_index.setdefault(problem["index"], []).append(problem["message"])
    first = problems[0]["message"]
    _put(
        [
            CloudEventProblem(
                ingested_at=now,
                outcome="refused",
                error="\n".join(by_index.get(index, []))
                or f"not stored: its batch was refused ({first})",
                event_json=_text(item),
            )
            for index, item in enumerate(items)
        ]
    )


def conflicted(conflicts: list[tuple[Any, Any]], now: datetime) -> None:
    """Keep each event whose (source, id) a meter already holds with another payload."""
    _put(
        [
            CloudEventProblem(
                ingested_at=now,
                outcome="conflict",
                error=f"conflict: meter {draft.meter.event_name} already holds an event with "
                f"source {event.source!r} and id {event.id!r} and another payload; this one "
                "was not counted",
                event_json=_text(event.attributes),
            )
            for event, draft in conflicts
        ]
    )


def unmetered(events: list[Any], now: datetime) -> None:
    """Keep each valid event that no active meter consumes: accepted (as OpenMeter does,
    so emitters may send types before their meter exists) and listed, never counted."""
    _put(
        [
            CloudEventProblem(
                ingested_at=now,
                outcome="unmetered",
                error=f"no active meter consumes events of type {event.type!r}: accepted "
                "and not counted (create a meter with this eventType first)",
                event_json=_text(event.attributes),
            )
            for event in events
        ]
    )


# -- the list --------------------------------------------------------------------------


def _time(args: MultiDict[str, str], name: str) -> datetime | None:
    if name not in args:
        return None
    try:
        return parse_rfc3339(args[name])
    except ValidationError as exc:
        raise ValidationFailed(f"{name} {exc.messages[0]}", param=name) from None


def _source_and_id(idempotency: str) -> tuple[str, str] | None:
    """(source, id) of a CloudEvent's idempotency key `ce:<len>:<source>:<id>`."""
    if not idempotency.startswith("ce:"):
        return None
    length, _, rest = idempotency[3:].partition(":")
    if not length.isdigit() or len(rest) <= int(length) or rest[int(length)] != ":":
        return None
    return rest[: int(length)], rest[int(length) + 1 :]


def _put_path(data: dict[str, Any], path: str | None, value: Any) -> None:
    if not path:
        return
    keys = jsonpath.parse(path)
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            return
    data[keys[-1]] = value


class Filters:
    """`GET /api/v1/events`'s query, checked."""

    def __init__(self, args: MultiDict[str, str]):
        allowed = {"clientId", "ingestedAtFrom", "ingestedAtTo", "id", "subject", "from", "to"}
        for name in args:
            if name == "customerId":
                raise ValidationFailed("customerId: customers are not served", param=name)
            if name not in allowed | {"limit"}:
                raise ValidationFailed(f"unknown query parameter {name}", param=name)
        limit = args.get("limit", str(MAX_LIMIT))
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be from 1 to {MAX_LIMIT}", param="limit")
        self.limit = int(limit)
        now = utcnow()
        self.start = _time(args, "from") or now - DEFAULT_SPAN
        self.end = _time(args, "to")
        self.ingested_from = _time(args, "ingestedAtFrom")
        self.ingested_to = _time(args, "ingestedAtTo")
        self.id = args.get("id")
        self.subject = args.get("subject")

    def keeps(self, event: dict[str, Any], ingested: datetime, moment: datetime | None) -> bool:
        return (
            (self.id is None or self.id in str(event.get("id", "")))
            and (self.subject is None or self.subject in str(event.get("subject", "")))
            and (self.ingested_from is None or ingested >= self.ingested_from)
            and (self.ingested_to is None or ingested < self.ingested_to)
            and (moment is None or moment >= self.start)
            and (moment is None or self.end is None or moment < self.end)
        )


def _format(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _stored(filters: Filters) -> list[tuple[datetime, dict[str, Any]]]:
    """Stored CloudEvents, newest first per meter, merged by (source, id)."""
    found: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}
    meters: list[Meter] = meter_service.all_meters()
    for meter, mapping in zip(meters, mappings.mappings_of(meters)):
        conditions = [MeterEvent.meter_id == meter.id_, MeterEvent.timestamp >= filters.start]
        if filters.end is not None:
            conditions.append(MeterEvent.timestamp < filters.end)
        query = MeterEvent.query_org(*conditions).order(-MeterEvent.timestamp)
        for stored in query.fetch(filters.limit):
            named = _source_and_id(stored.idempotency or "")
            if named is None:
                continue
            ingested = stored.created_at or stored.timestamp
            _, entry = found.setdefault(
                named,
                (
                    ingested,
                    {
                        "event": {
                            "id": named[1],
                            "source": named[0],
                            "specversion": "1.0",
                            "type": mapping.event_type,
                            "subject": stored.user_id,
                            "time": _format(stored.timestamp),
                            "data": {},
                        },
                        "ingestedAt": _format(ingested),
                        "storedAt": _format(ingested),
                    },
                ),
            )
            data = entry["event"]["data"]
            if meter.aggregation_type != "count" and mapping.value_property:
                value = stored.dimensions.get(meter.unique_by) if meter.unique_by else stored.value
                _put_path(data, mapping.value_property, value)
            for name, path in mapping.group_by.items():
                if name in stored.dimensions:
                    _put_path(data, path, stored.dimensions[name])
    return [
        (ingested, entry)
        for ingested, entry in found.values()
        if filters.keeps(entry["event"], ingested, None)
    ]


def _problems(filters: Filters) -> list[tuple[datetime, dict[str, Any]]]:
    query = CloudEventProblem.query(CloudEventProblem.ingested_at >= filters.start).order(
        -CloudEventProblem.ingested_at
    )
    listed = []
    for entry in query.fetch(filters.limit):
        try:
            event = json.loads(entry.event_json or "null")
        except ValueError:  # cut at MAX_EVENT_TEXT
            event = {"data": None, "truncated": entry.event_json}
        if not isinstance(event, dict):
            event = {"sent": event}
        if not filters.keeps(event, entry.ingested_at, None):
            continue
        stamp = _format(entry.ingested_at)
        listed.append(
            (
                entry.ingested_at,
                {
                    "event": event,
                    "validationError": entry.error,
                    "ingestedAt": stamp,
                    "storedAt": stamp,
                },
            )
        )
    return listed


def recent(args: MultiDict[str, str]) -> list[dict[str, Any]]:
    """The org's recent CloudEvents, stored, refused and conflicting, newest first."""
    filters = Filters(args)
    listed = _stored(filters) + _problems(filters)
    listed.sort(key=lambda pair: pair[0], reverse=True)
    return [entry for _, entry in listed[: filters.limit]]
