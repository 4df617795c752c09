"""What the OpenAPI document says about each endpoint, keyed by Flask endpoint name.

The routes themselves come from the app's URL map, and each operation's summary
and description from its view's docstring; this table adds what a route cannot
tell: who may call it, its body and query shapes, and every status it answers
with. `app.openapi.document` refuses to build a document for an app with a route
that has no entry here, so a new endpoint cannot go undocumented.

Every endpoint can answer 413 (a body over the limit is refused before routing)
and, when it touches the Datastore, 503; the document adds those itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from marshmallow import Schema

from app.config import Config
from app.schemas import responses
from app.schemas.admin import OrgCreate
from app.schemas.events import SummaryQuery, batch_schema, cancel_schema
from app.schemas.meters import ListQuery, MeterCreate, MeterUpdate

#: Security requirement names (components.securitySchemes).
API_KEY, ADMIN_TOKEN = "apiKey", "adminToken"

#: The description of each error status, and when the service answers it.
ERROR_STATUSES = {
    400: "The body or query string breaks a rule; `param` names the field and `errors` "
         "lists every problem. Nothing was changed.",
    401: "The credentials are missing, unknown or revoked.",
    404: "The addressed resource does not exist for the caller.",
    409: "The request contradicts stored state; nothing was changed.",
    413: "The request body is larger than the configured limit.",
    503: "The Datastore is unavailable; retry later.",
}

#: `filter[NAME]=VALUE` of the summary: an object in deepObject style.
SUMMARY_FILTER = {
    "name": "filter",
    "in": "query",
    "style": "deepObject",
    "explode": True,
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
    "description": "Only events whose `userId` or dimension NAME has the VALUE, written "
                   "`filter[NAME]=VALUE`. Repeat one NAME to accept any of several values; "
                   "filters on different names must all hold. NAME is 1 to 64 characters "
                   "without brackets and must be `userId` or a dimension of the meter.",
}

#: Path parameters, by the name the Flask rule gives them.
PATH_PARAMETERS = {
    "meter_id": "The meter's public id.",
    "name": "The org's name.",
    "prefix": "The key's public prefix: its first 12 characters.",
}


@dataclass(frozen=True)
class ConfiguredBody:
    """A body schema that depends on the configuration (e.g. the batch limit)."""

    name: str
    build: Callable[[Config], Schema]


@dataclass(frozen=True)
class Operation:
    """What one endpoint takes and answers, beyond its route and docstring."""

    tag: str
    #: status of a success -> (description, response schema, or a media type for non-JSON).
    success: dict[int, tuple[str, type[Schema] | str]]
    #: error statuses the endpoint answers besides 413 and 503.
    errors: tuple[int, ...] = ()
    #: API_KEY, ADMIN_TOKEN or None for an open endpoint.
    security: str | None = API_KEY
    #: the JSON body's schema, or how to build it from the configuration.
    body: type[Schema] | ConfiguredBody | None = None
    #: the query string's schema.
    query: type[Schema] | None = None
    #: parameters no schema field describes.
    parameters: tuple[dict, ...] = ()
    #: whether the endpoint touches the Datastore (and so can answer 503).
    datastore: bool = True


_TENANT_ERRORS = (401,)
_ADMIN_ERRORS = (401, 404)

OPERATIONS: dict[str, Operation] = {
    "health.healthz": Operation(
        "health", {200: ("The process is up.", responses.Health)},
        security=None, datastore=False),
    "openapi.openapi_json": Operation(
        "documentation", {200: ("This document.", "application/json")},
        security=None, datastore=False),
    "openapi.docs": Operation(
        "documentation", {200: ("The reference page.", "text/html")},
        security=None, datastore=False),

    "meters.create_meter": Operation(
        "meters", {201: ("The new meter.", responses.Meter)},
        errors=(400, *_TENANT_ERRORS, 409), body=MeterCreate),
    "meters.list_meters": Operation(
        "meters", {200: ("A page of meters.", responses.MeterPage)},
        errors=(400, *_TENANT_ERRORS), query=ListQuery),
    "meters.get_meter": Operation(
        "meters", {200: ("The meter.", responses.Meter)},
        errors=(*_TENANT_ERRORS, 404)),
    "meters.update_meter": Operation(
        "meters", {200: ("The changed meter.", responses.Meter)},
        errors=(400, *_TENANT_ERRORS, 404, 409), body=MeterUpdate),
    "meters.archive_meter": Operation(
        "meters", {200: ("The archived meter.", responses.Meter)},
        errors=(*_TENANT_ERRORS, 404)),

    "meter_events.record_events": Operation(
        "meter events", {201: ("One outcome per event, in order.", responses.RecordResult)},
        errors=(400, *_TENANT_ERRORS),
        body=ConfiguredBody("EventBatch", lambda config: batch_schema(config.max_batch_events))),
    "meter_events.cancel_events": Operation(
        "meter events", {200: ("One outcome per target, in order.", responses.CancelResult)},
        errors=(400, *_TENANT_ERRORS),
        body=ConfiguredBody("CancelBatch",
                            lambda config: cancel_schema(config.max_batch_events))),
    "meter_events.get_summary": Operation(
        "meter events", {200: ("The summary.", responses.Summary)},
        errors=(400, *_TENANT_ERRORS, 404), query=SummaryQuery,
        parameters=(SUMMARY_FILTER,)),

    "admin.create_org": Operation(
        "admin", {201: ("The org and its first key.", responses.IssuedKey)},
        errors=(400, *_ADMIN_ERRORS, 409), security=ADMIN_TOKEN, body=OrgCreate),
    "admin.list_keys": Operation(
        "admin", {200: ("The org's keys.", responses.KeyList)},
        errors=_ADMIN_ERRORS, security=ADMIN_TOKEN),
    "admin.create_key": Operation(
        "admin", {201: ("The org and its new key.", responses.IssuedKey)},
        errors=_ADMIN_ERRORS, security=ADMIN_TOKEN),
    "admin.revoke_key": Operation(
        "admin", {200: ("How many keys were revoked.", responses.Revoked)},
        errors=(400, *_ADMIN_ERRORS), security=ADMIN_TOKEN),
}
