"""Shapes of the meter-event endpoints."""

from __future__ import annotations

import functools

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas import BoundedSchema, format_time
from app.schemas.fields import (
    BoundedDict,
    BoundedList,
    Int64,
    JsonObject,
    PeriodBound,
    Rfc3339,
    TimeZone,
    fits_index,
    identifier,
    indexed_string,
)

#: The most users a page of a breakdown by user (or a top list) may ask for.
MAX_BREAKDOWN_LIMIT = 1000
#: `orderBy`: ascending or descending by each user's value of the period.
ORDERS = ("value", "-value")
#: A page cursor: the sealed last userId (1500 bytes at most) in url-safe base64.
MAX_CURSOR = 2100
MAX_DIMENSION_VALUE = 200
MAX_DIMENSIONS, MAX_DIMENSION_NAME = 16, 64
MAX_METER_ID, MAX_INDEXED_TEXT = 200, 500  # characters; indexed text also fits 1500 bytes
#: The window sizes, for the document; the rule itself is the engine's (`SummaryRequest`).
WINDOW_SIZES = ("hour", "day", "month")


class EventIn(BoundedSchema):
    """One event of a batch; the meter is named by `meterId` or `eventName`."""

    meterId = fields.String(
        validate=validate.Length(min=1, max=MAX_METER_ID),
        metadata={"description": "the meter's id; or give eventName"},
    )
    eventName = identifier(metadata={"description": "an active meter's eventName; or give meterId"})
    userId = indexed_string(
        MAX_INDEXED_TEXT,
        required=True,
        metadata={"description": "whose usage this is (at most 1500 bytes as UTF-8)"},
    )
    value = Int64(metadata={"description": "required except by count meters"})
    timestamp = Rfc3339(
        metadata={
            "description": "when it happened (default: now); at most "
            "5 minutes ahead and 35 days back, by default"
        }
    )
    idempotency = fields.String(
        validate=[validate.Length(max=MAX_INDEXED_TEXT), fits_index],
        metadata={"description": "unique per meter: a retry with the same key is stored once"},
    )
    dimensions = BoundedDict(
        keys=fields.String(validate=validate.Length(min=1, max=MAX_DIMENSION_NAME)),
        values=fields.String(validate=validate.Length(max=MAX_DIMENSION_VALUE)),
        validate=validate.Length(
            max=MAX_DIMENSIONS, error=f"may hold at most {MAX_DIMENSIONS} dimensions"
        ),
    )
    metadata = JsonObject()

    @validates_schema
    def _names_a_meter(self, data, **_):
        if not data.get("meterId") and not data.get("eventName"):
            raise ValidationError("meterId or eventName is required", "meterId")
        if data.get("meterId") and data.get("eventName"):
            raise ValidationError("give meterId or eventName, not both", "eventName")


class CancelTarget(BoundedSchema):
    """One event to cancel: by `id`, or by its meter and idempotency key."""

    id = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "the event's id, given alone"},
    )
    meterId = fields.String(validate=validate.Length(min=1, max=200))
    eventName = identifier()
    idempotency = fields.String(
        validate=[validate.Length(min=1, max=500), fits_index],
        metadata={"description": "with meterId or eventName"},
    )

    @validates_schema
    def _names_one_event(self, data, **_):
        if data.get("id"):
            if set(data) - {"id"}:
                raise ValidationError("give id alone, or a meter and an idempotency key", "id")
            return
        if not data.get("idempotency"):
            raise ValidationError("id, or idempotency with meterId or eventName, is required", "id")
        if bool(data.get("meterId")) == bool(data.get("eventName")):
            raise ValidationError("give meterId or eventName with idempotency", "meterId")


def _events_of(item: type[Schema], max_events: int) -> Schema:
    """A body `{"events": [item, ...]}` of 1 to `max_events` items."""

    class Batch(BoundedSchema):
        events = BoundedList(
            fields.Nested(item),
            required=True,
            validate=validate.Length(
                min=1, max=max_events, error=f"must hold 1 to {max_events} events"
            ),
        )

    return Batch()


@functools.lru_cache(maxsize=8)  # a schema class per request cost more than a 1-event load
def batch_schema(max_events: int) -> Schema:
    """Body of POST /v1/billing/meter-events, for the configured batch limit."""
    return _events_of(EventIn, max_events)


class SummaryQuery(BoundedSchema):
    """Query string of GET /v1/billing/meter-events/summary (after `filter[...]` is split off)."""

    meterId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    userId = indexed_string(
        500, metadata={"description": "one user's usage; all users' when left out"}
    )
    periodStart = PeriodBound(
        metadata={"description": "RFC 3339 timestamp or YYYY-MM-DD (midnight UTC); inclusive"}
    )
    periodEnd = PeriodBound(
        end_of_day=True,
        metadata={
            "description": "RFC 3339 timestamp (exclusive) or YYYY-MM-DD (that whole day "
            "included); default: now"
        },
    )
    windowSize = fields.String(metadata={"enum": list(WINDOW_SIZES)})
    timeZone = TimeZone(
        metadata={
            "description": "IANA name in which windows are cut, such as Asia/Kolkata; default UTC"
        }
    )
    groupBy = BoundedList(
        fields.String(validate=validate.Length(min=1, max=64)),
        metadata={
            "description": "userId or a dimension of the meter; repeat for several",
            "uniqueItems": True,
        },
        validate=validate.Length(max=8, error="may name at most 8 fields"),
    )
    limit = fields.Integer(
        validate=validate.Range(min=1, max=MAX_BREAKDOWN_LIMIT),
        metadata={
            "description": "with groupBy userId: users per page (default 100); "
            "with orderBy: how many top users (default 100)"
        },
    )
    cursor = fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR),
        metadata={
            "description": "with groupBy userId: the previous page's `nextCursor`; valid "
            "only for the same meter, period, windowSize, timeZone, groupBy and filters"
        },
    )
    orderBy = fields.String(
        validate=validate.OneOf(ORDERS),
        metadata={
            "description": "top users: `-value` the largest first, `value` the smallest "
            "first (ties by userId); only with groupBy=userId alone and no windowSize"
        },
    )

    # The window sizes and distinct groupBy names are the engine's rules
    # (`SummaryRequest`), answered 400 by `app.services.summary`; the edge keeps what
    # only a tenant's request can get wrong: an empty period, windows without a start.
    @validates_schema
    def _ordered(self, data, **_):
        start, end = data.get("periodStart"), data.get("periodEnd")
        if start and end and end <= start:
            raise ValidationError("periodEnd must be after periodStart", "periodEnd")
        if data.get("windowSize") and not start:
            raise ValidationError("periodStart is required with windowSize", "periodStart")


def _local_time(moment) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


#: The largest integer a JSON reader holding numbers as doubles (JavaScript) keeps exact.
MAX_SAFE_INTEGER = (1 << 53) - 1


def exact_value(value):
    """A summary value on the wire: an integer as a JSON number while a double holds it
    exactly (|v| <= 2**53 - 1), else as a string of its exact decimal digits; an average
    (float) or null as it is."""
    if value.__class__ is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return str(value)
    return value


def summary_json(summary) -> dict:
    """The public representation of a summary; windows when windows or groups were asked.
    Built by hand on the summary's hot path; `responses.Summary` describes it."""
    answer = {
        "meterId": summary.meter.id_,
        "meterName": summary.meter.name,
        "userId": summary.user_id or "",
        "aggregationType": summary.meter.aggregation_type,
        "value": exact_value(summary.value),
        "eventCount": summary.event_count,
        "periodStart": format_time(summary.period_start),
        "periodEnd": format_time(summary.period_end),
    }
    if summary.grouped:
        answer["windows"] = [
            {
                "windowStart": _local_time(w.window_start),
                "windowEnd": _local_time(w.window_end),
                "value": exact_value(w.value),
                "eventCount": w.event_count,
                "groupBy": w.group_by,
            }
            for w in summary.result.windows
        ]
    if summary.paged:
        answer["nextCursor"] = summary.next_cursor
    return answer
