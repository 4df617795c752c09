"""Shapes of the customer portal endpoints (issue 16): tokens, settings, and what a
token reads."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.core.portal import DEFAULT_LIFE_SECONDS, MAX_LIFE_SECONDS, MAX_METERS, MAX_ORIGINS
from app.schemas import BoundedSchema
from app.schemas.events import MAX_METER_ID, SummaryQuery
from app.schemas.fields import BoundedList, indexed_string
from app.schemas.responses import Time

#: Shortest life a token may be given.
MIN_LIFE_SECONDS = 60


class PortalTokenCreate(BoundedSchema):
    """Body of POST /v1/portal/tokens."""

    userId = indexed_string(500, required=True, metadata={"description": "the end customer"})
    meterIds = BoundedList(
        fields.String(validate=validate.Length(min=1, max=MAX_METER_ID)),
        validate=validate.Length(
            min=1, max=MAX_METERS, error=f"must list 1 to {MAX_METERS} meter ids"
        ),
        metadata={"description": "the meters it may read; all the org's active meters if left out"},
    )
    expiresIn = fields.Integer(
        strict=True,
        load_default=DEFAULT_LIFE_SECONDS,
        validate=validate.Range(min=MIN_LIFE_SECONDS, max=MAX_LIFE_SECONDS),
        metadata={
            "description": f"seconds, {MIN_LIFE_SECONDS} to {MAX_LIFE_SECONDS} (24 h); "
            f"default {DEFAULT_LIFE_SECONDS}"
        },
    )


class PortalTokenIssued(Schema):
    """A new portal token: give it to the end customer's browser (e.g. /portal#token=...)."""

    token = fields.String(required=True, metadata={"description": "pt_... (url-safe)"})
    expiresAt = Time(required=True)
    userId = fields.String(required=True)
    meterIds = fields.List(
        fields.String(), required=True, allow_none=True, metadata={"description": "null: all"}
    )


class PortalRevoke(BoundedSchema):
    """Body of POST /v1/portal/tokens/revoke."""

    userId = indexed_string(
        500, metadata={"description": "revoke this user's tokens only; all the org's if left out"}
    )


class PortalRevoked(Schema):
    """Tokens issued before `revokedBefore` (of the user, or of the whole org) are refused,
    in every process within METERING_PORTAL_POLICY_CACHE_SECONDS (2 by default)."""

    revokedBefore = Time(required=True)
    userId = fields.String(required=True, allow_none=True)


class PortalSettings(BoundedSchema):
    """The org's portal settings: the browser origins allowed to call the portal API."""

    allowedOrigins = BoundedList(
        fields.String(validate=validate.Length(min=1, max=300)),
        required=True,
        validate=validate.Length(max=MAX_ORIGINS, error=f"may list at most {MAX_ORIGINS} origins"),
        metadata={
            "description": "exact origins, scheme://host[:port], e.g. https://app.example.com"
        },
    )


class PortalMeter(Schema):
    """A meter as a portal token sees it: what it measures, nothing of the tenant's."""

    id = fields.String(required=True, attribute="id_")
    name = fields.String(required=True)
    aggregationType = fields.String(required=True, attribute="aggregation_type")
    dimensions = fields.List(fields.String(), required=True)
    unit = fields.Method(
        "_unit",
        required=True,
        allow_none=True,
        metadata={"type": "string", "description": "the meter's metadata.unit, if a string"},
    )

    @staticmethod
    def _unit(meter) -> str | None:
        unit = (meter.metadata or {}).get("unit")
        return unit if isinstance(unit, str) else None


class PortalMeterList(Schema):
    """The meters a portal token may read."""

    userId = fields.String(required=True)
    meters = fields.List(fields.Nested(PortalMeter), required=True)
    expiresAt = Time(required=True)


class PortalSummaryQuery(SummaryQuery):
    """Query string of the portal's summary: the meter is the path's, the user always the
    token's (naming another one is a 404)."""

    userId = indexed_string(
        500, metadata={"description": "the token's user, the only one it reads (another: 404)"}
    )

    class Meta:
        exclude = ("meterId", "limit", "cursor", "orderBy")
