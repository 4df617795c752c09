"""Shapes of the meter endpoints."""

from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validate, validates

from app.models.meter import AGGREGATION_TYPES
from app.schemas import BoundedSchema
from app.schemas.alerts import JsonBoolean
from app.schemas.fields import BoundedList, FullMatch, JsonObject, identifier

MAX_DIMENSIONS = 16


class _Lower(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


def _aggregation() -> fields.String:
    return _Lower(
        validate=validate.OneOf(
            AGGREGATION_TYPES, error="must be one of " + ", ".join(AGGREGATION_TYPES)
        ),
        metadata={"description": "how events add up (default sum)"},
    )


def _dimensions() -> fields.List:
    return BoundedList(
        identifier(max_length=64),
        validate=validate.Length(
            max=MAX_DIMENSIONS, error=f"may list at most {MAX_DIMENSIONS} names"
        ),
        metadata={"description": "the dimension names events may carry; unique, not userId"},
    )


def _unique_by() -> fields.String:
    return identifier(
        max_length=64,
        metadata={
            "description": "unique_count meters only (and required by them): userId or a "
            "declared dimension"
        },
    )


def _allow_backfill() -> fields.Boolean:
    """issue 17: whether imports with backfill may add events older than the live window."""
    return JsonBoolean(
        metadata={
            "description": "let `events import --backfill` (or the import endpoint with "
            "backfill=true and the events:backfill scope) add events older than the live "
            "window; default false"
        },
    )


class _DimensionNames:
    @validates("dimensions")
    def _unique(self, value, **_):
        if len(set(value)) != len(value):
            raise ValidationError("names must be unique")
        if "userId" in value:
            raise ValidationError("userId is always available and cannot be a dimension")


class MeterCreate(_DimensionNames, BoundedSchema):
    """Body of POST /v1/billing/meters."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    eventName = identifier(
        required=True,
        metadata={
            "description": "what events name the meter by; unique among the org's active meters"
        },
    )
    aggregationType = _aggregation()
    currency = _Lower(validate=FullMatch(r"^[a-z]{3}$", error="must be a 3-letter ISO code"))
    dimensions = _dimensions()
    metadata = JsonObject()
    uniqueBy = _unique_by()
    allowBackfill = _allow_backfill()

    @post_load
    def _defaults(self, data, **_):
        data.setdefault("aggregationType", "sum")
        data.setdefault("currency", "usd")
        data.setdefault("dimensions", [])
        data.setdefault("metadata", {})
        return data


class MeterUpdate(_DimensionNames, BoundedSchema):
    """Body of PATCH /v1/billing/meters/<id>; every field optional."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    eventName = identifier()
    aggregationType = _aggregation()
    dimensions = _dimensions()
    metadata = JsonObject()
    uniqueBy = _unique_by()
    allowBackfill = _allow_backfill()


class ListQuery(BoundedSchema):
    """Query string of list endpoints: a page size and an opaque cursor."""

    limit = fields.Integer(
        validate=validate.Range(min=1, max=500), metadata={"description": "page size (default 50)"}
    )
    cursor = fields.String(
        validate=validate.Length(max=1000),
        metadata={"description": "the nextCursor of the previous page"},
    )
