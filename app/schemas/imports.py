"""Shapes of the bulk import endpoint (issue 17): its query string and its answer."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas import BoundedSchema

#: The body's media types, for the document: NDJSON (native events or CloudEvents) or CSV,
#: either one gzip-compressed (recognised by its magic bytes).
IMPORT_BODY = {
    media: {
        "schema": {
            "type": "string",
            "description": "NDJSON of native events or CloudEvents, or CSV with a header "
            "(eventName or meterId, userId, value, timestamp, idempotency, dimensions.NAME, "
            "metadata.NAME, metadata as a JSON object); plain or gzip",
        }
    }
    for media in ("application/x-ndjson", "text/csv", "application/gzip")
}


class ImportQuery(BoundedSchema):
    """Query string of POST /v1/billing/meter-events/import."""

    backfill = fields.Boolean(
        metadata={
            "description": "accept events older than the live window into meters with "
            "allowBackfill; needs the events:backfill scope"
        }
    )
    dryRun = fields.Boolean(
        metadata={"description": "validate and say what would be created, duplicate, conflict"}
    )
    skipInvalid = fields.Boolean(
        metadata={"description": "store the good records, count and list the bad ones"}
    )
    meter = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "record every native event into this meter (id or event name)"},
    )
    format = fields.String(validate=validate.OneOf(("auto", "ndjson", "csv")))


class ImportProblem(Schema):
    line = fields.Integer(required=True)
    field = fields.String(required=True, metadata={"description": "empty for the whole line"})
    message = fields.String(required=True)


class ImportResult(Schema):
    """What an import stored (or, dry, would store)."""

    dryRun = fields.Boolean(required=True)
    records = fields.Integer(required=True, metadata={"description": "records read"})
    created = fields.Integer(required=True)
    duplicate = fields.Integer(required=True)
    conflict = fields.Integer(required=True)
    rejected = fields.Integer(required=True, metadata={"description": "bad records skipped"})
    skipped = fields.Integer(
        required=True, metadata={"description": "cancelled events of an export, not imported"}
    )
    backfilled = fields.Integer(
        required=True, metadata={"description": "created events older than the live window"}
    )
    errorCount = fields.Integer(required=True)
    errors = fields.List(
        fields.Nested(ImportProblem),
        required=True,
        metadata={"description": "the first 100 problems, by line"},
    )
