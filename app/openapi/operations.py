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

from dataclasses import dataclass, field
from typing import Callable

from marshmallow import Schema

from app.config import Config
from app.schemas import responses
from app.schemas.admin import OrgCreate, OrgDeleteQuery
from app.schemas.event_log import EventListQuery
from app.schemas.events import SummaryQuery, batch_schema, cancel_schema
from app.schemas.meters import ListQuery, MeterCreate, MeterUpdate

#: Security requirement names (components.securitySchemes).
API_KEY, ADMIN_TOKEN = "apiKey", "adminToken"

#: Each error status: its shared response's name, and when the service answers it.
ERROR_STATUSES = {
    400: ("BadRequest", "The body or query string breaks a rule; `param` names the field "
                        "and `errors` lists every problem. Nothing was changed."),
    401: ("Unauthorized", "The credentials are missing, unknown or revoked."),
    404: ("NotFound", "The addressed resource does not exist for the caller."),
    409: ("Conflict", "The request contradicts stored state; nothing was changed."),
    429: ("TooManyRequests", "The org is over its request rate limit or has spent its "
                             "budget of Datastore reads for the minute, or the caller's "
                             "address sent too many missing or invalid keys; retry after "
                             "the `Retry-After` header's seconds. Nothing was changed."),
    413: ("PayloadTooLarge", "The request body is larger than the configured limit."),
    503: ("Unavailable", "The Datastore is unavailable (`unavailable`), or the request ran "
                         "out of its deadline (`deadline_exceeded`); retry after the "
                         "`Retry-After` header's seconds. Nothing was half-written."),
}

#: `filter[NAME]=VALUE` of the summary: an object in deepObject style.
SUMMARY_FILTER = {
    "name": "filter",
    "in": "query",
    "style": "deepObject",
    "explode": True,
    "schema": {"type": "object", "additionalProperties": {"type": "string"},
               "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": r"^[^\[\]]*$"}},
    "description": "Only events whose `userId` or dimension NAME has the VALUE, written "
                   "`filter[NAME]=VALUE`. Repeat one NAME to accept any of several values; "
                   "filters on different names must all hold. NAME must be `userId` or a "
                   "dimension of the meter.",
}

#: The document's sections, in order, with what each is for.
TAGS = {
    "meters": "What an org measures: each meter names its events and how they add up.",
    "meter events": "Usage: recorded exactly once, cancelled for audit, summarized exactly.",
    "admin": "The operator's API: orgs and their API keys.",
    "health": "Whether the process is up and its Datastore answers.",
    "operations": "Periodic work, called by App Engine's cron (or with the admin token).",
    "dashboard": "The usage dashboard: a page for people, calling the API above.",
    "documentation": "This description of the API.",
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
    #: OpenAPI links of the success answer: what a client can call next with its values.
    links: dict[str, dict] = field(default_factory=dict)


def _link(operation_id: str, description: str, **parameters: str) -> dict:
    return {"operationId": operation_id, "description": description, "parameters": parameters}


#: A link's body is a whole, valid body: fuzzers (schemathesis) are told to send it as
#: it is rather than merge generated fields into it.
_AS_IS = {"x-schemathesis": {"merge_body": False}}

_METER_LINKS = {
    "GetMeter": _link("meters.get_meter", "Get the new meter.", meter_id="$response.body#/id"),
    "UpdateMeter": _link("meters.update_meter", "Change it.", meter_id="$response.body#/id"),
    "ArchiveMeter": _link("meters.archive_meter", "Archive it.", meter_id="$response.body#/id"),
    "Summarize": _link("meter_events.get_summary", "Read its usage.",
                       meterId="$response.body#/id"),
    "RecordEvent": {"operationId": "meter_events.record_events",
                    "description": "Record an event for it.",
                    "requestBody": {"events": [{"meterId": "$response.body#/id",
                                                "userId": "user-1", "value": 1}]}, **_AS_IS},
}
_EVENT_LINKS = {
    "CancelEvent": {"operationId": "meter_events.cancel_events",
                    "description": "Cancel the first event of the batch.",
                    "requestBody": {"events": [{"id": "$response.body#/events/0/id"}]},
                    **_AS_IS},
}
_KEY_LINKS = {
    "ListKeys": _link("admin.list_keys", "List the org's keys.", name="$response.body#/name"),
    "CreateKey": _link("admin.create_key", "Issue another key.", name="$response.body#/name"),
    "RevokeKey": _link("admin.revoke_key", "Revoke this key.", name="$response.body#/name",
                       prefix="$response.body#/keyPrefix"),
}

_TENANT_ERRORS = (401, 429)
_ADMIN_ERRORS = (401, 404, 429)  # 429: too many wrong tokens from one address

OPERATIONS: dict[str, Operation] = {
    "health.healthz": Operation(
        "health", {200: ("The process is up.", responses.Health)},
        security=None, datastore=False),
    "health.readyz": Operation(
        "health", {200: ("The process is up and its Datastore answers.", responses.Ready)},
        security=None),
    "cron.compact": Operation(
        "operations", {200: ("What the call compacted.", responses.CompactionRun)},
        errors=(401, 429), security=ADMIN_TOKEN),
    "dashboard.page": Operation(
        "dashboard", {200: ("The dashboard's page.", "text/html")},
        security=None, datastore=False),
    "openapi.openapi_json": Operation(
        "documentation", {200: ("This document.", "application/json")},
        security=None, datastore=False),
    "openapi.docs": Operation(
        "documentation", {200: ("The reference page.", "text/html")},
        security=None, datastore=False),

    "meters.create_meter": Operation(
        "meters", {201: ("The new meter.", responses.Meter)},
        errors=(400, *_TENANT_ERRORS, 409), body=MeterCreate, links=_METER_LINKS),
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
        errors=(400, *_TENANT_ERRORS), links=_EVENT_LINKS,
        body=ConfiguredBody("EventBatch", lambda config: batch_schema(config.max_batch_events))),
    "meter_events.cancel_events": Operation(
        "meter events", {200: ("One outcome per target, in order.", responses.CancelResult)},
        errors=(400, *_TENANT_ERRORS),
        body=ConfiguredBody("CancelBatch",
                            lambda config: cancel_schema(config.max_batch_events))),
    "event_log.list_events": Operation(
        "meter events", {200: ("A page of the meter's events, newest first.",
                               responses.EventPage)},
        errors=(400, *_TENANT_ERRORS, 404), query=EventListQuery),
    "meter_events.get_summary": Operation(
        "meter events", {200: ("The summary.", responses.Summary)},
        errors=(400, *_TENANT_ERRORS, 404), query=SummaryQuery,
        parameters=(SUMMARY_FILTER,)),

    "admin.create_org": Operation(
        "admin", {201: ("The org and its first key.", responses.IssuedKey)},
        errors=(400, *_ADMIN_ERRORS, 409), security=ADMIN_TOKEN, body=OrgCreate,
        links=_KEY_LINKS),
    "admin.delete_org": Operation(
        "admin", {200: ("The archived org, and what this call purged.", responses.OrgArchived)},
        errors=(400, *_ADMIN_ERRORS, 409), security=ADMIN_TOKEN, query=OrgDeleteQuery),
    "admin.list_keys": Operation(
        "admin", {200: ("The org's keys.", responses.KeyList)},
        errors=_ADMIN_ERRORS, security=ADMIN_TOKEN),
    "admin.create_key": Operation(
        "admin", {201: ("The org and its new key.", responses.IssuedKey)},
        errors=_ADMIN_ERRORS, security=ADMIN_TOKEN, links=_KEY_LINKS),
    "admin.revoke_key": Operation(
        "admin", {200: ("How many keys were revoked.", responses.Revoked)},
        errors=(400, *_ADMIN_ERRORS), security=ADMIN_TOKEN),
}
