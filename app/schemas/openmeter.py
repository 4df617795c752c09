"""OpenMeter's shapes, as JSON schemas for the OpenAPI document (`app.api.openmeter`).

The views build these answers by hand (`app.services.openmeter`) in OpenMeter's own
shapes, which its SDK parses; these schemas describe them (and what the views accept)
to our document, so schemathesis holds the answers to them like every other route's.
"""

from __future__ import annotations

from typing import Any

from app.core.aggregation import AGGREGATION_TYPES

_TIME = {"type": "string", "format": "date-time"}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
#: OpenMeter's names of our aggregations, in AGGREGATION_TYPES' order (LATEST is `last`).
OPENMETER_AGGREGATIONS = [
    "LATEST" if name == "last" else name.upper() for name in AGGREGATION_TYPES
]
WINDOW_SIZES = ["MINUTE", "HOUR", "DAY", "MONTH"]
SLUG = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9]+(?:_[a-z0-9]+)*$"}

METER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "slug", "name", "aggregation", "eventType", "createdAt", "updatedAt"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "slug": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "aggregation": {"type": "string", "enum": OPENMETER_AGGREGATIONS},
        "eventType": {"type": "string"},
        "valueProperty": {"type": "string"},
        "groupBy": _STRINGS,
        "eventFrom": _TIME,
        "metadata": _STRINGS,
        "createdAt": _TIME,
        "updatedAt": _TIME,
        "deletedAt": _TIME,
    },
}
METERS: dict[str, Any] = {"type": "array", "items": METER}
SUBJECTS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
QUERY_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": False,
    "properties": {
        "from": _TIME,
        "to": _TIME,
        "windowSize": {"type": "string", "enum": WINDOW_SIZES},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["value", "windowStart", "windowEnd", "subject", "groupBy"],
                "additionalProperties": False,
                "properties": {
                    "value": {"type": "number"},
                    "windowStart": _TIME,
                    "windowEnd": _TIME,
                    "subject": {"type": ["string", "null"]},
                    "groupBy": _STRINGS,
                },
            },
        },
    },
}

_PATH = {"type": "string", "minLength": 2, "maxLength": 200, "pattern": "^\\$"}
METER_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["slug", "aggregation", "eventType"],
    "additionalProperties": False,
    "properties": {
        "slug": SLUG,
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 1024},
        "metadata": _STRINGS,
        "aggregation": {"type": "string", "enum": OPENMETER_AGGREGATIONS},
        "eventType": {"type": "string", "minLength": 1, "maxLength": 200},
        "eventFrom": _TIME,
        "valueProperty": _PATH,
        "groupBy": {"type": "object", "additionalProperties": _PATH, "maxProperties": 15},
    },
}
METER_UPDATE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: METER_CREATE["properties"][name]
        for name in ("name", "description", "metadata", "groupBy")
    },
}
EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "source", "specversion", "type", "subject"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "specversion": {"type": "string", "enum": ["1.0"]},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "time": {"type": ["string", "null"], "format": "date-time"},
        "datacontenttype": {"type": ["string", "null"], "enum": ["application/json", None]},
        "data": {"type": ["object", "null"]},
    },
}
EVENTS_BODY: dict[str, Any] = {
    "application/cloudevents+json": {"schema": EVENT},
    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": EVENT}},
    "application/json": {"schema": {"anyOf": [EVENT, {"type": "array", "items": EVENT}]}},
}


def query_parameter(
    name: str, schema: dict[str, Any], description: str, **more: Any
) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description, **more}


PERIOD = (
    query_parameter("from", _TIME, "Start of the period (inclusive), RFC 3339."),
    query_parameter("to", _TIME, "End of the period (exclusive), RFC 3339."),
)
QUERY_PARAMETERS = (
    *PERIOD,
    query_parameter("clientId", {"type": "string", "minLength": 1, "maxLength": 36}, "Ignored."),
    query_parameter(
        "windowSize",
        {"type": "string", "enum": WINDOW_SIZES},
        "Windows of the answer; MINUTE reads raw events of at most 24 hours.",
    ),
    query_parameter(
        "windowTimeZone", {"type": "string"}, "The IANA zone windows follow (default UTC)."
    ),
    query_parameter(
        "subject",
        {"type": "array", "items": {"type": "string"}},
        "Only these subjects (and group by subject).",
        style="form",
        explode=True,
    ),
    query_parameter(
        "groupBy",
        {"type": "array", "items": {"type": "string"}},
        "subject or the meter's groupBy keys.",
        style="form",
        explode=True,
    ),
    query_parameter(
        "filterGroupBy",
        _STRINGS,
        "filterGroupBy[KEY]=VALUE: only events whose dimension KEY has VALUE.",
        style="deepObject",
        explode=True,
    ),
)
LIST_PARAMETERS = (
    query_parameter("page", {"type": "integer", "minimum": 1}, "Checked, not applied."),
    query_parameter(
        "pageSize", {"type": "integer", "minimum": 1, "maximum": 1000}, "Checked, not applied."
    ),
    query_parameter("order", {"type": "string", "enum": ["ASC", "DESC"]}, "Sort order."),
    query_parameter(
        "orderBy",
        {"type": "string", "enum": ["key", "name", "aggregation", "createdAt", "updatedAt"]},
        "Sort key (default createdAt).",
    ),
    query_parameter(
        "includeDeleted",
        {"type": "boolean"},
        "Archived meters too.",
    ),
)
INGESTED_EVENTS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["event", "ingestedAt", "storedAt"],
        "additionalProperties": False,
        "properties": {
            "event": {"type": "object"},
            "validationError": {"type": "string"},
            "ingestedAt": _TIME,
            "storedAt": _TIME,
        },
    },
}
EVENT_LIST_PARAMETERS = (
    *PERIOD,
    query_parameter("clientId", {"type": "string", "minLength": 1, "maxLength": 36}, "Ignored."),
    query_parameter("ingestedAtFrom", _TIME, "Ingested at or after."),
    query_parameter("ingestedAtTo", _TIME, "Ingested before."),
    query_parameter("id", {"type": "string"}, "Events whose id contains this."),
    query_parameter("subject", {"type": "string"}, "Events whose subject contains this."),
    query_parameter("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "At most (100)."),
)
QUERY_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "clientId": {"type": "string", "minLength": 1, "maxLength": 36},
        "from": _TIME,
        "to": _TIME,
        "windowSize": {"type": "string", "enum": WINDOW_SIZES},
        "windowTimeZone": {"type": "string"},
        "subject": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "groupBy": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "filterGroupBy": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
