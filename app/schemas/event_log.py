"""Shapes of the recent-events endpoint: GET /v1/billing/meter-events?meterId=..."""

from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from app.schemas import BoundedSchema
from app.schemas.fields import fits_index, indexed_string

MAX_EVENTS_PAGE = 100
DEFAULT_EVENTS_PAGE = 25


class EventListQuery(BoundedSchema):
    """Query string: a meter, optionally one user or one idempotency key, a page."""

    meterId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    userId = indexed_string(500)
    idempotency = fields.String(validate=[validate.Length(min=1, max=500), fits_index])
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_EVENTS_PAGE))
    cursor = fields.String(validate=validate.Length(min=1, max=1000))

    @validates_schema
    def _one_search(self, data, **_):
        if data.get("idempotency") and data.get("cursor"):
            raise ValidationError("an idempotency key names one event: no cursor", "cursor")
