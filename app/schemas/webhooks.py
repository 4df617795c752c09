"""Shapes of the webhook endpoints: requests (validated, the bad field named) and answers."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate, validates

from app.schemas import BoundedSchema
from app.schemas.fields import BoundedList
from app.schemas.responses import Time, _next_cursor
from app.schemas.webhook_events import EVENT_TYPES

MAX_URL_LENGTH = 2000
MAX_DESCRIPTION_LENGTH = 500
STATUSES = ("pending", "delivered", "failed")


class Url(fields.String):
    """An absolute http(s) URL (whether the service may call it is checked by the service:
    it depends on the deployment)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValidationError("must be an absolute http or https URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("must be an absolute http or https URL")
        return text


def _url(**kwargs) -> Url:
    return Url(
        validate=validate.Length(max=MAX_URL_LENGTH),
        metadata={"description": "where messages are POSTed; https in production"},
        **kwargs,
    )


def _event_types() -> fields.List:
    return BoundedList(
        fields.String(
            validate=validate.OneOf(EVENT_TYPES, error="must be one of " + ", ".join(EVENT_TYPES))
        ),
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        allow_none=True,
        metadata={"description": "event types sent to the endpoint; null or absent: all"},
    )


class _UniqueEventTypes:
    @validates("eventTypes")
    def _unique(self, value, **_):
        if value is not None and len(set(value)) != len(value):
            raise ValidationError("event types must be unique")


class EndpointCreate(_UniqueEventTypes, BoundedSchema):
    """Body of POST /v1/webhooks/endpoints."""

    url = _url(required=True)
    description = fields.String(validate=validate.Length(max=MAX_DESCRIPTION_LENGTH))
    eventTypes = _event_types()


class EndpointUpdate(_UniqueEventTypes, BoundedSchema):
    """Body of PATCH /v1/webhooks/endpoints/<id>; every field optional."""

    url = _url()
    description = fields.String(validate=validate.Length(max=MAX_DESCRIPTION_LENGTH))
    eventTypes = _event_types()
    enabled = fields.Boolean(
        metadata={"description": "false stops deliveries (messages wait); true resumes them"}
    )


class EndpointListQuery(BoundedSchema):
    """Query string of the endpoint list."""

    limit = fields.Integer(validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=validate.Length(max=1000))


class MessageListQuery(EndpointListQuery):
    """Query string of an endpoint's message log."""

    status = fields.String(
        validate=validate.OneOf(STATUSES, error="must be one of " + ", ".join(STATUSES))
    )


class _EventTypesOrNull(fields.List):
    def _serialize(self, value, attr, obj, **kwargs):
        return list(value) if value else None


class Endpoint(Schema):
    """A webhook endpoint, without its secret."""

    id = fields.String(required=True, attribute="id_")
    url = fields.String(required=True)
    description = fields.String(required=True)
    eventTypes = _EventTypesOrNull(
        fields.String(),
        required=True,
        allow_none=True,
        attribute="event_types",
        metadata={"description": "null: every event type"},
    )
    enabled = fields.Boolean(required=True)
    disabledReason = fields.String(
        required=True,
        allow_none=True,
        attribute="disabled_reason",
        metadata={"description": "why the service disabled the endpoint, if it did"},
    )
    createdAt = Time(required=True, attribute="created_at")
    updatedAt = Time(required=True, attribute="updated_at")


class EndpointWithSecret(Endpoint):
    """A new endpoint, or one whose secret was rotated: the secret is shown this once."""

    secret = fields.String(
        required=True,
        attribute="revealed_secret",
        metadata={"description": "whsec_...: verify deliveries with it; shown only now"},
    )


class EndpointPage(Schema):
    """One page of endpoints (in key order, stable across pages)."""

    endpoints = fields.List(fields.Nested(Endpoint), required=True)
    count = fields.Integer(required=True)
    nextCursor = _next_cursor()


class Attempt(Schema):
    """One delivery attempt."""

    at = fields.String(required=True, metadata={"format": "date-time"})
    statusCode = fields.Integer(required=True, allow_none=True)
    latencyMs = fields.Integer(required=True)
    error = fields.String(required=True, allow_none=True)
    responseBody = fields.String(
        required=True, metadata={"description": "the first KiB of the answer"}
    )


class _Payload(fields.Dict):
    def _serialize(self, value, attr, obj, **kwargs):
        return json.loads(value)


class Message(Schema):
    """One message of an endpoint and its delivery log."""

    id = fields.String(
        required=True, attribute="message_id", metadata={"description": "the webhook-id"}
    )
    endpointId = fields.String(required=True, attribute="endpoint_id")
    eventType = fields.String(required=True, attribute="event_type")
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    payload = _Payload(
        required=True,
        attribute="body",
        metadata={"description": "the delivered body: {type, timestamp, data}"},
    )
    createdAt = Time(required=True, attribute="created_at")
    nextAttemptAt = Time(required=True, allow_none=True, attribute="next_attempt_at")
    attemptCount = fields.Integer(required=True, attribute="attempt_count")
    attempts = fields.List(
        fields.Nested(Attempt),
        required=True,
        metadata={"description": "the last 20 attempts, oldest first"},
    )


class MessagePage(Schema):
    """One page of an endpoint's messages, newest first."""

    messages = fields.List(fields.Nested(Message), required=True)
    count = fields.Integer(required=True)
    nextCursor = _next_cursor()


class EventType(Schema):
    """An event type and the schema of its delivered body."""

    type = fields.String(required=True)
    description = fields.String(required=True)
    schema = fields.Dict(required=True, metadata={"description": "JSON Schema of the body"})


class EventTypeList(Schema):
    """Every event type an endpoint can subscribe to."""

    eventTypes = fields.List(fields.Nested(EventType), required=True)


class DeliveryRun(Schema):
    """What one bounded delivery call did (GET /v1/cron/deliver)."""

    orgs = fields.Integer(required=True, metadata={"description": "orgs with endpoints or rules"})
    evaluated = fields.Integer(required=True, metadata={"description": "alert feeds applied"})
    sent = fields.Integer(required=True, metadata={"description": "messages attempted"})
    delivered = fields.Integer(required=True, metadata={"description": "attempts answered 2xx"})
    undelivered = fields.Integer(
        required=True, metadata={"description": "attempts that failed (retried later)"}
    )
    complete = fields.Boolean(
        required=True,
        metadata={"description": "false when an org had more due than the budget, or failed"},
    )
    failed = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "orgs whose delivery failed (logged); the others went on"},
    )
