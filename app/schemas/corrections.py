"""Shapes of the corrections (issue 17): cancel by range, amend, correction records."""

from __future__ import annotations

import functools

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas import BoundedSchema, format_time
from app.schemas.events import CancelTarget, exact_value
from app.schemas.fields import (
    BoundedDict,
    BoundedList,
    Int64,
    PeriodBound,
    Rfc3339,
    indexed_string,
)
from app.schemas.responses import ExactValue, ListedEvent, Time

MAX_FILTER_NAMES, MAX_FILTER_VALUES, MAX_VALUE = 16, 20, 200
MAX_CORRECTIONS_PAGE, DEFAULT_CORRECTIONS_PAGE = 100, 25


class DimensionValues(fields.Field):
    """One dimension value, or a list of them (any of which matches); loaded as a list."""

    def __init__(self, **kwargs):
        one = {"type": "string", "maxLength": MAX_VALUE}
        kwargs.setdefault(
            "metadata",
            {
                "anyOf": [
                    one,
                    {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_FILTER_VALUES},
                ]
            },
        )
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= MAX_FILTER_VALUES
            or not all(isinstance(v, str) and len(v) <= MAX_VALUE for v in values)
        ):
            raise ValidationError(
                f"must be a string, or a list of 1 to {MAX_FILTER_VALUES} strings, "
                f"of at most {MAX_VALUE} characters"
            )
        return values

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class RangeCancel(BoundedSchema):
    """The range form of POST /v1/billing/meter-events/cancel (`events` absent)."""

    meterId = indexed_string(200, metadata={"description": "range form: the meter"})
    periodStart = PeriodBound(
        metadata={"description": "range form: first event timestamp cancelled (inclusive)"}
    )
    periodEnd = PeriodBound(
        end_of_day=True,
        metadata={
            "description": "range form: end of the range (exclusive; a date: its day included)"
        },
    )
    userId = indexed_string(500, metadata={"description": "range form: only this user's events"})
    filter = BoundedDict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=DimensionValues(),
        validate=validate.Length(
            max=MAX_FILTER_NAMES, error=f"may name at most {MAX_FILTER_NAMES} dimensions"
        ),
        metadata={
            "description": "range form: only events whose dimension NAME has the value (or "
            "one of the values) given"
        },
    )
    dryRun = fields.Boolean(
        metadata={
            "description": "range form: answer how many events and how much value would be "
            "cancelled, and change nothing"
        }
    )

    cursor = fields.String(
        validate=validate.Length(min=1, max=2000),
        metadata={
            "description": "range form with dryRun: the `cursor` of a partial dry run's "
            "answer, to go on with it"
        },
    )

    @validates_schema
    def _one_form(self, data, **_):
        ranged = {
            "meterId", "periodStart", "periodEnd", "userId", "filter", "dryRun", "cursor"
        } & set(data)  # fmt: skip
        if "cursor" in data and not data.get("dryRun"):
            raise ValidationError("cursor goes on with a dry run: give dryRun true", "cursor")
        if data.get("events") is not None:
            if ranged:
                raise ValidationError(
                    "give events, or a range (meterId, periodStart, periodEnd), not both",
                    sorted(ranged)[0],
                )
            return
        if not ranged:
            raise ValidationError(
                "give events, or a range: meterId, periodStart and periodEnd", "events"
            )
        for name in ("meterId", "periodStart", "periodEnd"):
            if name not in data:
                raise ValidationError(
                    f"give events, or {name} with the other fields of a range", name
                )
        if data["periodEnd"] <= data["periodStart"]:
            raise ValidationError("periodEnd must be after periodStart", "periodEnd")


@functools.lru_cache(maxsize=8)
def cancel_schema(max_events: int) -> Schema:
    """Body of POST /v1/billing/meter-events/cancel: `{"events": [...]}` (1 to
    `max_events` targets), or a range."""

    class Cancel(RangeCancel):
        events = BoundedList(
            fields.Nested(CancelTarget),
            validate=validate.Length(
                min=1, max=max_events, error=f"must hold 1 to {max_events} events"
            ),
            metadata={"description": "batch form: the events to cancel, by id or idempotency key"},
        )

    return Cancel()


class AmendBody(BoundedSchema):
    """Body of POST /v1/billing/meter-events/<id>/amend: what changes."""

    value = Int64(metadata={"description": "the new value"})
    dimensions = BoundedDict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.String(validate=validate.Length(max=MAX_VALUE)),
        validate=validate.Length(max=16, error="may hold at most 16 dimensions"),
        metadata={"description": "the new dimensions, all of them (they replace the old ones)"},
    )
    timestamp = Rfc3339(
        metadata={"description": "the new timestamp; within the live window, as when recording"}
    )

    @validates_schema
    def _changes_something(self, data, **_):
        if not data:
            raise ValidationError("give value, dimensions or timestamp", "value")


class CorrectionsQuery(BoundedSchema):
    """Query string of GET /v1/billing/meter-events/corrections."""

    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_CORRECTIONS_PAGE))
    cursor = fields.String(validate=validate.Length(min=1, max=1000))


# -- answers -----------------------------------------------------------------------


class _Counts(Schema):
    cancelled = fields.Integer(required=True, metadata={"description": "events cancelled"})
    value = ExactValue(metadata={"description": "the sum of their values"})
    expired = fields.Integer(
        required=True,
        metadata={"description": "matching events left: recorded before the cancellation window"},
    )
    scanned = fields.Integer(required=True, metadata={"description": "events of the range read"})


class Correction(_Counts):
    """A correction record: who, when, what, how many, how much."""

    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(("cancel_range", "amend")))
    status = fields.String(
        required=True,
        validate=validate.OneOf(("running", "complete")),
        metadata={"description": "running: repeat the cancel request to go on"},
    )
    meterId = fields.String(required=True)
    userId = fields.String(required=True, allow_none=True)
    periodStart = Time(required=True, allow_none=True)
    periodEnd = Time(required=True, allow_none=True)
    filter = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True)
    eventId = fields.String(
        required=True, allow_none=True, metadata={"description": "amend: the original"}
    )
    replacementId = fields.String(
        required=True, allow_none=True, metadata={"description": "amend: its replacement"}
    )
    keyPrefix = fields.String(
        required=True, metadata={"description": "who: the first characters of the API key"}
    )
    createdAt = Time(required=True)
    updatedAt = Time(required=True)
    completedAt = Time(required=True, allow_none=True)
    passes = fields.Integer(
        required=True,
        metadata={"description": "runs over the range: a complete one run again starts another"},
    )


class RangeCancelResult(Correction):
    """Answer of the range form: the record, and what this request did."""

    thisRequest = fields.Nested(_Counts, required=True)


class CancelPreview(Schema):
    """Answer of the range form with dryRun: what a run would cancel now."""

    dryRun = fields.Boolean(required=True)
    meterId = fields.String(required=True)
    events = fields.Integer(required=True, metadata={"description": "events it would cancel"})
    value = ExactValue(metadata={"description": "the sum of their values"})
    expired = fields.Integer(
        required=True, metadata={"description": "matching events it would leave (too old)"}
    )
    scanned = fields.Integer(
        required=True, metadata={"description": "events read one by one (not from rollups)"}
    )
    complete = fields.Boolean(
        required=True,
        metadata={
            "description": "false: the figures cover part of the range; send the same "
            "body with `cursor` to go on (the figures then add up)"
        },
    )
    cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "where a partial dry run goes on"}
    )
    source = fields.String(
        required=True,
        validate=validate.OneOf(("rollups", "events")),
        metadata={
            "description": "rollups: the range's recent part was counted from rollups (cost "
            "by days, not events); events: every event was read"
        },
    )


class AmendResult(Schema):
    """Answer of POST /v1/billing/meter-events/<id>/amend."""

    status = fields.String(
        required=True,
        validate=validate.OneOf(("created", "duplicate")),
        metadata={"description": "duplicate: a retry of the same amendment, nothing changed"},
    )
    original = fields.Nested(ListedEvent, required=True)
    replacement = fields.Nested(ListedEvent, required=True)
    correctionId = fields.String(required=True)


class CorrectionPage(Schema):
    """A page of the org's correction records, newest first."""

    corrections = fields.List(fields.Nested(Correction), required=True)
    count = fields.Integer(required=True)
    nextCursor = fields.String(required=True, allow_none=True)


# -- to JSON -----------------------------------------------------------------------


def _counts(events: int, value: int, expired: int, scanned: int) -> dict:
    return {
        "cancelled": events,
        "value": exact_value(value),
        "expired": expired,
        "scanned": scanned,
    }


def correction_json(record) -> dict:
    """A record as `Correction` shows it."""
    return {
        "id": record.id,
        "type": record.type,
        "status": record.status,
        "meterId": record.meter_id,
        "userId": record.user_id,
        "periodStart": format_time(record.period_start),
        "periodEnd": format_time(record.period_end),
        "filter": record.filter,
        "eventId": record.event_id,
        "replacementId": record.replacement_id,
        "keyPrefix": record.key_prefix,
        "createdAt": format_time(record.created_at),
        "updatedAt": format_time(record.updated_at),
        "completedAt": format_time(record.completed_at),
        "passes": record.passes,
        **_counts(record.cancelled, record.value, record.expired, record.scanned),
    }


def range_result_json(record, tally) -> dict:
    answer = correction_json(record)
    answer["thisRequest"] = _counts(tally.events, tally.value, tally.expired, tally.scanned)
    return answer


def preview_json(meter_id: str, preview) -> dict:
    """A `CancelPreview` of a `corrections.DryRun`."""
    tally = preview.tally
    return {
        "dryRun": True,
        "meterId": meter_id,
        "events": tally.events,
        "value": exact_value(tally.value),
        "expired": tally.expired,
        "scanned": tally.scanned,
        "complete": preview.complete,
        "cursor": preview.cursor,
        "source": preview.source,
    }
