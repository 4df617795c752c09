"""Shapes of the alert rule endpoints (issue 14): requests and answers."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate

from app.schemas import BoundedSchema
from app.schemas.fields import BoundedDict, BoundedList, TimeZone, indexed_string
from app.schemas.responses import Time

MAX_THRESHOLDS = 10
THRESHOLD_MAX = (1 << 63) - 1
PERIODS = ("day", "month")


class Threshold(fields.Integer):
    """A positive JSON integer (not a float, string or boolean) that fits int64."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a positive integer")
        if not 1 <= value <= THRESHOLD_MAX:
            raise ValidationError("must be a positive integer that fits int64")
        return value


class JsonBoolean(fields.Boolean):
    """A JSON true or false (not a string or number that reads as one)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


def _thresholds(**kwargs) -> BoundedList:
    return BoundedList(
        Threshold(),
        validate=validate.Length(
            min=1, max=MAX_THRESHOLDS, error=f"must list 1 to {MAX_THRESHOLDS} thresholds"
        ),
        metadata={"description": "1 to 10 positive integers; stored sorted, without repeats"},
        **kwargs,
    )


class Scope(fields.Field):
    """`"user"` (each user), `"org"` (the meter's total) or `{"userId": "..."}` (one user);
    loaded as ("user" | "org" | "one", user id or None)."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "metadata",
            {
                "description": "user (each user separately), org (all users together) or "
                '{"userId": "..."} (one user)',
                "oneOf": [
                    {"type": "string", "enum": ["user", "org"]},
                    {
                        "type": "object",
                        "properties": {"userId": {"type": "string", "minLength": 1}},
                        "required": ["userId"],
                        "additionalProperties": False,
                    },
                ],
            },
        )
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("user", "org"):
            return value, None
        if isinstance(value, dict) and set(value) == {"userId"}:
            user = value["userId"]
            if isinstance(user, str) and 1 <= len(user) <= 200 and len(user.encode()) <= 1500:
                return "one", user
            raise ValidationError("userId must be a string of 1 to 200 characters")
        raise ValidationError('must be "user", "org" or {"userId": "..."}')

    def _serialize(self, value, attr, obj, **kwargs):
        return value


def _filter() -> BoundedDict:
    return BoundedDict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.String(validate=validate.Length(max=200)),
        validate=validate.Length(max=16, error="may name at most 16 dimensions"),
        metadata={"description": "dimension values the events must have, as in summaries"},
    )


class _SortedThresholds:
    @post_load
    def _sorted(self, data, **_):
        if "thresholds" in data:
            data["thresholds"] = sorted(set(data["thresholds"]))
        return data


class AlertCreate(_SortedThresholds, BoundedSchema):
    """Body of POST /v1/billing/alerts."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    meterId = indexed_string(200, required=True, metadata={"description": "the meter's id"})
    thresholds = _thresholds(required=True)
    scope = Scope(required=True)
    period = fields.String(
        required=True, validate=validate.OneOf(PERIODS, error="must be day or month")
    )
    timeZone = TimeZone(metadata={"description": "IANA zone of the calendar periods; UTC"})
    filter = _filter()
    notifyOnResolve = JsonBoolean(
        metadata={"description": "also announce alert.resolved (default false)"}
    )

    @post_load
    def _defaults(self, data, **_):
        data.setdefault("timeZone", "UTC")
        data.setdefault("filter", {})
        data.setdefault("notifyOnResolve", False)
        return data


class AlertUpdate(_SortedThresholds, BoundedSchema):
    """Body of PATCH /v1/billing/alerts/<id>; every field optional."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    thresholds = _thresholds()
    notifyOnResolve = JsonBoolean()
    filter = _filter()


class AlertListQuery(BoundedSchema):
    """Query string of GET /v1/billing/alerts."""

    limit = fields.Integer(validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=validate.Length(max=1000))
    includeArchived = fields.Boolean(metadata={"description": "list archived rules too"})


class TriggerListQuery(BoundedSchema):
    """Query string of GET /v1/billing/alerts/<id>/triggers."""

    limit = fields.Integer(validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=validate.Length(max=1000))


# -- answers ---------------------------------------------------------------------


class _RuleScope(fields.Field):
    def _serialize(self, value, attr, obj, **kwargs):
        return {"userId": obj.scope_user} if value == "one" else value


class Alert(Schema):
    """An alert rule as every alert endpoint returns it."""

    id = fields.String(required=True, attribute="id_")
    name = fields.String(required=True)
    meterId = fields.String(required=True, attribute="meter_id")
    thresholds = fields.List(fields.Integer(), required=True)
    scope = _RuleScope(required=True, metadata=Scope().metadata)
    period = fields.String(required=True, validate=validate.OneOf(PERIODS))
    timeZone = fields.String(required=True, attribute="time_zone")
    filter = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    notifyOnResolve = fields.Boolean(required=True, attribute="notify_on_resolve")
    archived = fields.Boolean(required=True, attribute="deleted")
    createdAt = Time(required=True, attribute="created_at")
    updatedAt = Time(required=True, attribute="updated_at")


class AlertPage(Schema):
    """One page of alert rules, in a stable order."""

    alerts = fields.List(fields.Nested(Alert), required=True)
    count = fields.Integer(required=True)
    nextCursor = fields.String(required=True, allow_none=True)


class _Exact(fields.Field):
    """A stored decimal string written as a JSON number while exact in a double, else
    as the string of its digits (like a summary's value)."""

    def _serialize(self, value, attr, obj, **kwargs):
        number = int(value)
        return number if abs(number) <= (1 << 53) - 1 else str(number)


class Trigger(Schema):
    """One crossing or resolution of an alert rule."""

    id = fields.String(required=True, attribute="trigger_id")
    alertId = fields.String(required=True, attribute="alert_id")
    type = fields.String(
        required=True, validate=validate.OneOf(("alert.triggered", "alert.resolved"))
    )
    meterId = fields.String(required=True, attribute="meter_id")
    userId = fields.String(required=True, allow_none=True, attribute="user_id")
    threshold = fields.Integer(required=True)
    value = _Exact(required=True, metadata={"oneOf": [{"type": "integer"}, {"type": "string"}]})
    periodStart = Time(required=True, attribute="period_start")
    periodEnd = Time(required=True, attribute="period_end")
    at = Time(required=True)
    messageId = fields.String(required=True, attribute="message_id")


class TriggerPage(Schema):
    """One page of a rule's triggers, newest first."""

    triggers = fields.List(fields.Nested(Trigger), required=True)
    count = fields.Integer(required=True)
    nextCursor = fields.String(required=True, allow_none=True)
