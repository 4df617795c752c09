"""Shapes of the meter-event endpoints."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas import format_time
from app.schemas.fields import (Int64, JsonObject, PeriodBound, Rfc3339, fits_index,
                                identifier, indexed_string)

MAX_DIMENSION_VALUE = 200


class EventIn(Schema):
    """One event of a batch; the meter is named by `meterId` or `eventName`."""

    meterId = fields.String(validate=validate.Length(min=1, max=200))
    eventName = identifier()
    userId = indexed_string(500, required=True)
    value = Int64()
    timestamp = Rfc3339()
    idempotency = fields.String(validate=[validate.Length(max=500), fits_index])
    dimensions = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.String(validate=validate.Length(max=MAX_DIMENSION_VALUE)),
        validate=validate.Length(max=16, error="may hold at most 16 dimensions"),
    )
    metadata = JsonObject()

    @validates_schema
    def _names_a_meter(self, data, **_):
        if not data.get("meterId") and not data.get("eventName"):
            raise ValidationError("meterId or eventName is required", "meterId")
        if data.get("meterId") and data.get("eventName"):
            raise ValidationError("give meterId or eventName, not both", "eventName")


def batch_schema(max_events: int) -> Schema:
    """Body of POST /v1/billing/meter-events, for the configured batch limit."""

    class Batch(Schema):
        events = fields.List(
            fields.Nested(EventIn), required=True,
            validate=validate.Length(min=1, max=max_events,
                                     error=f"must hold 1 to {max_events} events"))

    return Batch()


class SummaryQuery(Schema):
    """Query string of GET /v1/billing/meter-events/summary."""

    meterId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    userId = indexed_string(500)
    periodStart = PeriodBound()
    periodEnd = PeriodBound(end_of_day=True)

    @validates_schema
    def _ordered(self, data, **_):
        start, end = data.get("periodStart"), data.get("periodEnd")
        if start and end and end <= start:
            raise ValidationError("periodEnd must be after periodStart", "periodEnd")


def summary_json(summary) -> dict:
    """The public representation of a summary."""
    return {
        "meterId": summary.meter.id_,
        "meterName": summary.meter.name,
        "userId": summary.user_id or "",
        "aggregationType": summary.meter.aggregation_type,
        "value": summary.value,
        "eventCount": summary.event_count,
        "periodStart": format_time(summary.period_start),
        "periodEnd": format_time(summary.period_end),
    }
