"""The event types a webhook endpoint can subscribe to, each with its payload's schema.

One list for the API's validation (`eventTypes`), `GET /v1/webhooks/event-types` and the
OpenAPI document (its top-level `webhooks`). The `data` schemas are JSON Schema (OpenAPI
3.1); `meter.*` carry the meter exactly as the meter API answers it (the `Meter` component).
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_ALERT_DATA: dict[str, Any] = {
    "type": "object",
    "required": [
        "alertId",
        "meterId",
        "userId",
        "threshold",
        "value",
        "periodStart",
        "periodEnd",
    ],
    "properties": {
        "alertId": {"type": "string"},
        "meterId": {"type": "string"},
        "userId": {"type": ["string", "null"], "description": "null for an org-wide rule"},
        "threshold": {"type": "integer"},
        "value": {"type": ["integer", "number", "string"]},
        "periodStart": _TIME,
        "periodEnd": _TIME,
    },
}
METER_REF = {"$ref": "#/components/schemas/Meter"}
_METER = METER_REF

EVENT_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "alert.triggered": (
        "A subject's usage in a period reached an alert rule's threshold (once per rule, "
        "subject, period and threshold).",
        {
            **_ALERT_DATA,
            "required": [*_ALERT_DATA["required"], "triggeredAt"],
            "properties": {**_ALERT_DATA["properties"], "triggeredAt": _TIME},
        },
    ),
    "alert.resolved": (
        "A cancellation brought a subject's usage back below a triggered threshold "
        "(rules with notifyOnResolve).",
        {
            **_ALERT_DATA,
            "required": [*_ALERT_DATA["required"], "resolvedAt"],
            "properties": {**_ALERT_DATA["properties"], "resolvedAt": _TIME},
        },
    ),
    "meter.created": ("A meter was created; data is the meter.", _METER),
    "meter.updated": ("A meter was changed; data is the meter after the change.", _METER),
    "meter.archived": ("A meter was archived; data is the archived meter.", _METER),
    "webhook.test": (
        "A test message, sent on request (POST /v1/webhooks/endpoints/{id}/test).",
        {
            "type": "object",
            "required": ["endpointId", "message"],
            "properties": {"endpointId": {"type": "string"}, "message": {"type": "string"}},
        },
    ),
}


def envelope(data_schema: dict) -> dict:
    """The schema of a delivered body carrying `data_schema`."""
    return {
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {"type": {"type": "string"}, "timestamp": _TIME, "data": data_schema},
    }


def listed() -> list[dict]:
    """The event types as `GET /v1/webhooks/event-types` answers them."""
    return [
        {"type": name, "description": description, "schema": envelope(schema)}
        for name, (description, schema) in EVENT_TYPES.items()
    ]


def openapi_webhooks() -> dict:
    """The OpenAPI 3.1 top-level `webhooks`: one POST per event type, its body's schema."""
    return {
        name: {
            "post": {
                "summary": description,
                "operationId": f"webhook_{name.replace('.', '_')}",
                "tags": ["webhooks"],
                "parameters": [
                    {"name": header, "in": "header", "required": True, "schema": {"type": "string"}}
                    for header in ("webhook-id", "webhook-timestamp", "webhook-signature")
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": envelope(schema)}},
                },
                "responses": {"2XX": {"description": "Delivered; anything else is retried."}},
            }
        }
        for name, (description, schema) in EVENT_TYPES.items()
    }
