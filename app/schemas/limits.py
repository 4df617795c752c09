"""Shapes of the usage limit endpoints (issue 16): requests and answers."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.schemas import BoundedSchema
from app.schemas.alerts import PERIODS, JsonBoolean
from app.schemas.events import MAX_INDEXED_TEXT, MAX_METER_ID
from app.schemas.fields import TimeZone, identifier, indexed_string
from app.schemas.responses import Time

LIMIT_MAX = (1 << 63) - 1


class LimitValue(fields.Integer):
    """A JSON integer from 0 to int64's maximum (not a float, string or boolean)."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "metadata", {"description": "the most the user may use in a period (0 to 2^63-1)"}
        )
        super().__init__(strict=True, validate=validate.Range(min=0, max=LIMIT_MAX), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer from 0 to 2^63-1")
        return super()._deserialize(value, attr, data, **kwargs)


def _user_id(description: str, **kwargs) -> fields.String:
    return indexed_string(MAX_INDEXED_TEXT, metadata={"description": description}, **kwargs)


class LimitCreate(BoundedSchema):
    """Body of POST /v1/billing/limits."""

    meterId = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_METER_ID),
        metadata={"description": "a sum, count, max or unique_count meter"},
    )
    limit = LimitValue(required=True)
    period = fields.String(
        required=True, validate=validate.OneOf(PERIODS, error="must be day or month")
    )
    timeZone = TimeZone(metadata={"description": "IANA zone of the calendar periods; UTC"})
    userId = _user_id("one user's override; without it, the default of every user")

    @post_load
    def _defaults(self, data, **_):
        data.setdefault("timeZone", "UTC")
        return data


class LimitUpdate(BoundedSchema):
    """Body of PATCH /v1/billing/limits/<id>."""

    limit = LimitValue(required=True)


class LimitListQuery(BoundedSchema):
    """Query string of GET /v1/billing/limits."""

    limit = fields.Integer(validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=validate.Length(max=1000))
    meterId = fields.String(
        validate=validate.Length(min=1, max=MAX_METER_ID),
        metadata={"description": "only this meter's limits"},
    )


class LimitCheckQuery(BoundedSchema):
    """Query string of GET /v1/billing/limits/check."""

    meterId = fields.String(
        validate=validate.Length(min=1, max=MAX_METER_ID),
        metadata={"description": "the meter's id; or give eventName"},
    )
    eventName = identifier(metadata={"description": "an active meter's eventName; or meterId"})
    userId = _user_id("whose usage to check", required=True)

    @validates_schema
    def _one_meter(self, data, **_):
        if ("meterId" in data) == ("eventName" in data):
            raise ValidationError("give meterId or eventName, not both", field_name="meterId")


# -- answers ---------------------------------------------------------------------


class _Exact(fields.Field):
    """An integer written as a JSON number while exact in a double, else as the string
    of its digits (like a summary's value)."""

    def _serialize(self, value, attr, obj, **kwargs):
        number = int(value)
        return number if abs(number) <= (1 << 53) - 1 else str(number)


def _exact(description: str) -> _Exact:
    return _Exact(
        required=True,
        metadata={
            "description": description,
            "oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}],
        },
    )


class Limit(Schema):
    """A usage limit as every limit endpoint returns it."""

    id = fields.String(required=True, attribute="id_")
    meterId = fields.String(required=True, attribute="meter_id")
    userId = fields.String(
        required=True,
        allow_none=True,
        attribute="user_id",
        metadata={"description": "null: the default of every user without an override"},
    )
    limit = _exact("the most a user may use in a period")
    period = fields.String(required=True, validate=validate.OneOf(PERIODS))
    timeZone = fields.String(required=True, attribute="time_zone")
    createdAt = Time(required=True, attribute="created_at")
    updatedAt = Time(required=True, attribute="updated_at")


class LimitPage(Schema):
    """One page of limits, in a stable order."""

    limits = fields.List(fields.Nested(Limit), required=True)
    count = fields.Integer(required=True)
    nextCursor = fields.String(required=True, allow_none=True)


class LimitCheck(Schema):
    """Whether the user is still within the limit that applies this period."""

    allowed = fields.Boolean(required=True, metadata={"description": "used < limit"})
    used = _exact("the user's value of the meter this period")
    limit = _exact("the limit that applies (the user's override, else the default)")
    remaining = _exact("limit - used, at least 0")
    limitId = fields.String(required=True, attribute="limit_id")
    userId = fields.String(required=True, attribute="user_id")
    periodStart = Time(required=True, attribute="period_start")
    periodEnd = Time(required=True, attribute="period_end")
    resetsAt = Time(
        required=True, attribute="resets_at", metadata={"description": "when a new period starts"}
    )
    asOf = Time(
        required=True,
        attribute="as_of",
        metadata={"description": "every batch answered before this instant is counted"},
    )


class Percentage(fields.Integer):
    """A JSON integer from 1 to 1000 (not a float, string or boolean)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, validate=validate.Range(min=1, max=1000), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer from 1 to 1000")
        return super()._deserialize(value, attr, data, **kwargs)


class LimitAlertCreate(BoundedSchema):
    """Body of POST /v1/billing/limits/<id>/alerts: an alert rule at percentages of the
    limit (resolved to thresholds when the rule is created)."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    percentages = fields.List(
        Percentage(),
        required=True,
        validate=validate.Length(min=1, max=10, error="must list 1 to 10 percentages"),
        metadata={"description": "1 to 10 percentages of the limit (1 to 1000), e.g. [80, 100]"},
    )
    notifyOnResolve = JsonBoolean(
        metadata={"description": "also announce alert.resolved (default false)"}
    )
