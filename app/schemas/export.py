"""Shape of the export endpoint: GET /v1/billing/meter-events/export (issue 17)."""

from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from app.schemas import BoundedSchema
from app.schemas.fields import PeriodBound, indexed_string

#: An event's public id, the only cursor an export takes (generous: ids are ~30 chars).
MAX_EXPORT_CURSOR = 200


class ExportQuery(BoundedSchema):
    """Query string: a meter, a period, a format; optionally one user, cancelled events
    too, and the cursor of a resumed export."""

    meterId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    periodStart = PeriodBound(
        metadata={
            "description": "RFC 3339 timestamp or YYYY-MM-DD; inclusive; default: the "
            "meter's first event"
        }
    )
    periodEnd = PeriodBound(
        end_of_day=True,
        metadata={
            "description": "RFC 3339 timestamp (exclusive) or YYYY-MM-DD (that whole day "
            "included); default: no end"
        },
    )
    format = fields.String(
        validate=validate.OneOf(("ndjson", "csv")),
        metadata={"description": "`ndjson` (default) or `csv`"},
    )
    userId = indexed_string(500, metadata={"description": "one user's events only"})
    includeCancelled = fields.Boolean(
        metadata={"description": "export cancelled events too (their `status` says so)"}
    )
    cursor = fields.String(
        validate=validate.Length(min=1, max=MAX_EXPORT_CURSOR),
        metadata={
            "description": "resume an interrupted export: the `id` of the last event "
            "received, with the same other parameters"
        },
    )

    @validates_schema
    def _ordered(self, data, **_):
        start, end = data.get("periodStart"), data.get("periodEnd")
        if start and end and end <= start:
            raise ValidationError("periodEnd must be after periodStart", "periodEnd")
