"""The service's OpenAPI 3 document, built with apispec from the app itself.

Paths and methods come from the app's URL map, summaries and descriptions from
the views' docstrings, bodies, query strings and answers from the marshmallow
schemas (through apispec's marshmallow plugin), and the rest from what each view
declares where its route is declared (`app.api.declare`, kept as an
`app.openapi.operations.Operation` on the view). The document is built once per
app, on first use, so it reflects the app's configuration (the batch limit) and
every blueprint.
"""

from __future__ import annotations

import inspect
import re
from importlib import metadata

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from marshmallow import fields as ma_fields

from app.openapi.operations import (
    ADMIN_TOKEN,
    API_KEY,
    PORTAL_TOKEN,
    ConfiguredBody,
    Operation,
    operation_of,
)
from app.schemas import fields as custom_fields
from app.schemas import responses, webhook_events

OPENAPI_VERSION = "3.1.0"
TITLE = "metering"
DESCRIPTION = (
    "Usage metering for multi-tenant products: meters, exactly-once usage events and "
    "exact summaries. Every tenant call carries an org API key as `Authorization: Bearer "
    "mk_...`; the admin API takes the operator's token the same way. Every error answers "
    'with one envelope: `{"error": {"type": "api-error", "message", "code", '
    '"param"}}`. Every answer reports its Datastore work in `X-Datastore-Usage`.'
)
#: Methods Flask adds by itself; the document leaves them out.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
USAGE_HEADER = "X-Datastore-Usage"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


RETRY_AFTER = "Retry-After"

#: Each error status: its shared response's name, and when the service answers it.
ERROR_STATUSES = {
    400: (
        "BadRequest",
        "The body or query string breaks a rule; `param` names the field "
        "and `errors` lists every problem. Nothing was changed.",
    ),
    401: ("Unauthorized", "The credentials are missing, unknown or revoked."),
    403: (
        "Forbidden",
        "The API key lacks the scope this operation needs (`param` is `scope`; the "
        "message names it). Nothing was changed.",
    ),
    404: ("NotFound", "The addressed resource does not exist for the caller."),
    409: ("Conflict", "The request contradicts stored state; nothing was changed."),
    429: (
        "TooManyRequests",
        "The org is over its request rate limit or has spent its "
        "budget of Datastore reads for the minute, or the caller's "
        "address sent too many missing or invalid keys; retry after "
        "the `Retry-After` header's seconds. Nothing was changed.",
    ),
    413: ("PayloadTooLarge", "The request body is larger than the configured limit."),
    503: (
        "Unavailable",
        "The Datastore is unavailable (`unavailable`), or the request ran "
        "out of its deadline (`deadline_exceeded`); retry after the "
        "`Retry-After` header's seconds. Nothing was half-written.",
    ),
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
    # issue 14, webhooks
    "webhooks": "Signed webhooks (Standard Webhooks): endpoints, their message log, and the "
    "event types (each one's body under the document's top-level `webhooks`).",
    # issue 16, keys
    "keys": "The org's own API keys (scope keys:write): each holds scopes and may expire; "
    "a key creates keys with at most its own scopes and expiry.",
    "openmeter": "OpenMeter's API, the part its SDKs use (docs/openmeter.md): CloudEvents "
    "ingestion and meters, answered by the same engine; errors are RFC 7807 problems.",
    # issue 16, customer portal
    "portal": "The customer portal: tokens with which one end customer reads their own "
    "usage (from a browser, at the origins the org allows), and the org's portal settings.",
}

#: OpenMeter's error shape (RFC 7807), what every error under /api/v1 answers with:
#: our envelope's code, param and listed problems travel as `extensions`.
PROBLEM = "Problem"
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "extensions": {"type": "object"},
    },
}

#: Path parameters, by the name the Flask rule gives them.
PATH_PARAMETERS = {
    "meter_id": "The meter's public id.",
    "id_or_slug": "The meter's public id or its slug (its event name).",
    "group_by_key": "One of the meter's groupBy keys.",
    "name": "The org's name.",
    "prefix": "The key's public prefix: its first 12 characters.",
    # issue 14, webhooks
    "endpoint_id": "The webhook endpoint's public id.",
    "message_id": "The message's id (its webhook-id header).",
}


class UndocumentedRoute(LookupError):
    """Raised when the app has a route whose view declares no operation (`app.api.declare`)."""


def build(app) -> dict:
    """The OpenAPI document of `app`, as a JSON-ready dict."""
    spec = _new_spec()
    rules, seen = [], set()
    for rule in app.url_map.iter_rules():
        # Static files are no operations; `/x` and `/x/` of one view are one operation.
        canonical = (rule.endpoint, rule.rule.rstrip("/") or "/")
        if rule.endpoint.rpartition(".")[2] != "static" and canonical not in seen:
            seen.add(canonical)
            rules.append(rule)
    operations = {rule.endpoint: operation_of(app.view_functions[rule.endpoint]) for rule in rules}
    missing = sorted(
        endpoint
        for endpoint, operation in operations.items()
        if operation is None or operation.tag is None or not operation.success
    )
    if missing:
        raise UndocumentedRoute(
            "routes whose views declare no operation (app.api.declare): " + ", ".join(missing)
        )
    _add_configured_bodies(spec, operations.values(), app.config["METERING"])
    for rule in sorted(rules, key=lambda r: r.rule):
        operation = operations[rule.endpoint]
        methods = sorted(rule.methods - IMPLICIT_METHODS)
        spec.path(
            path=openapi_path(rule.rule),
            operations={
                method.lower(): _operation(
                    rule,
                    method,
                    # mypy: every route declares its operation (tests/test_openapi.py)
                    operation,  # type: ignore[arg-type]
                    app.view_functions[rule.endpoint],
                )
                for method in methods
            },
        )
    built = spec.to_dict()
    built["webhooks"] = webhook_events.openapi_webhooks()  # issue 14: the event types
    return built


def openapi_path(flask_rule: str) -> str:
    """`/v1/billing/meters/<meter_id>` as OpenAPI writes it: `/v1/billing/meters/{meter_id}`."""
    return _RULE_ARGUMENT.sub(r"{\1}", flask_rule)


def _schema_name(schema) -> str:
    return resolve_schema_cls(schema).__name__  # type: ignore[union-attr]  # one class


def _new_spec() -> APISpec:
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title=TITLE,
        version=metadata.version("metering"),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": DESCRIPTION},
    )
    plugin.map_to_openapi_type(custom_fields.Int64, "integer", "int64")
    plugin.map_to_openapi_type(custom_fields.Rfc3339, "string", "date-time")
    plugin.map_to_openapi_type(custom_fields.PeriodBound, "string", None)
    assert plugin.converter is not None  # set by APISpec(plugins=...) just above
    plugin.converter.add_attribute_function(_object_sizes)
    plugin.converter.add_attribute_function(_key_rules)
    plugin.converter.add_attribute_function(_date_or_time)
    plugin.converter.add_attribute_function(_int64_range)
    plugin.converter.add_attribute_function(_exact_value)
    for name, description in TAGS.items():
        spec.tag({"name": name, "description": description})
    spec.components.security_scheme(
        API_KEY,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "An org API key (`mk_...`), from the admin API or `metering orgs "
            "create`. It opens that org's data only.",
        },
    )
    spec.components.security_scheme(
        ADMIN_TOKEN,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator's token (`METERING_ADMIN_TOKEN`); without it set, "
            "the admin API answers 404.",
        },
    )
    spec.components.security_scheme(  # issue 16, customer portal
        PORTAL_TOKEN,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "A customer portal token (`pt_...`, from POST /v1/portal/tokens): "
            "one end customer's usage of some meters, read-only, for up to 24 hours.",
        },
    )
    spec.components.header(
        USAGE_HEADER,
        {
            "description": "The Datastore work the request cost: `rpcs=N; read=N; written=N`.",
            "schema": {"type": "string"},
        },
    )
    spec.components.header(
        RETRY_AFTER,
        {
            "description": "Seconds to wait before sending again.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    )
    spec.components.schema("Error", schema=responses.Error)
    spec.components.schema(PROBLEM, PROBLEM_SCHEMA)
    for status, (name, description) in ERROR_STATUSES.items():
        headers = {USAGE_HEADER: USAGE_HEADER}
        if status in (429, 503):
            headers[RETRY_AFTER] = RETRY_AFTER
        spec.components.response(
            name,
            {
                "description": description,
                "content": {"application/json": {"schema": "Error"}},
                "headers": headers,
            },
        )
        # The same answers under /api/v1 (OpenMeter's API), as RFC 7807 problems.
        spec.components.response(
            PROBLEM + name,
            {
                "description": description,
                "content": {"application/problem+json": {"schema": PROBLEM}},
                "headers": headers,
            },
        )
    return spec


def _add_configured_bodies(spec: APISpec, operations, config) -> None:
    """Bodies whose schema depends on the configuration, as named components."""
    bodies = {
        operation.body.name: operation.body
        for operation in operations
        if isinstance(operation.body, ConfiguredBody)
    }
    for body in bodies.values():
        spec.components.schema(body.name, schema=body.build(config))


def _object_sizes(_converter, field, ret: dict, **_) -> dict:
    """apispec writes a Length rule of a Dict as maxLength; an object's is maxProperties."""
    if not isinstance(field, ma_fields.Dict):
        return {}
    return {
        size: ret.pop(length)
        for length, size in (("minLength", "minProperties"), ("maxLength", "maxProperties"))
        if length in ret
    }


def _key_rules(converter, field, **_) -> dict:
    """The rules a Dict sets on its keys (dimension names), as propertyNames."""
    keys = getattr(field, "key_field", None)
    if not isinstance(field, ma_fields.Dict) or keys is None:
        return {}
    rules = {
        name: value
        for name, value in converter.field2property(keys).items()
        if name in ("minLength", "maxLength", "pattern")
    }
    return {"propertyNames": rules} if rules else {}


def _int64_range(_converter, field, **_) -> dict:
    """An Int64 is a JSON integer written without a fraction (1, not 1.0) that fits int64."""
    if not isinstance(field, custom_fields.Int64):
        return {}
    return {
        "minimum": custom_fields.INT64_MIN,
        "maximum": custom_fields.INT64_MAX,
        "description": (
            field.metadata.get("description", "") + " (a JSON integer "
            "without a fraction: 1, not 1.0)"
        ).strip(),
    }


def _exact_value(_converter, field, **_) -> dict:
    """A summary value: a number, or an exact decimal string past doubles' exact range."""
    return field.openapi() if isinstance(field, responses.ExactValue) else {}


def _date_or_time(_converter, field, **_) -> dict:
    """A period bound is an RFC 3339 timestamp or a date."""
    if not isinstance(field, custom_fields.PeriodBound):
        return {}
    return {"anyOf": [{"format": "date-time"}, {"format": "date"}]}


def _security(operation: Operation) -> list[dict]:
    """Who may call: the scheme, and for an API key the scope it must hold (OpenAPI 3.1
    lets a non-OAuth requirement list the roles it needs)."""
    if not operation.security:
        return []
    return [{operation.security: [operation.scope] if operation.scope else []}]


def _operation(rule, method: str, operation: Operation, view) -> dict:
    summary, _, description = (inspect.getdoc(view) or "").partition("\n")
    answer = {
        "operationId": f"{rule.endpoint}"
        + ("" if len(rule.methods - IMPLICIT_METHODS) == 1 else f".{method.lower()}"),
        "tags": [operation.tag],
        "summary": summary.strip(),
        "security": _security(operation),
        "parameters": _parameters(rule, operation),
        "responses": _responses(operation),
    }
    if description.strip():
        answer["description"] = description.strip()
    if operation.raw_body is not None:
        answer["requestBody"] = {"required": True, "content": operation.raw_body}
    if operation.body is not None:
        answer["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": _body_schema(operation.body)}},
        }
    return answer


def _body_schema(body):
    return body.name if isinstance(body, ConfiguredBody) else body


def _parameters(rule, operation: Operation) -> list:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMETERS.get(name, ""),
            "schema": {"type": "string", "minLength": 1},
        }
        for name in _RULE_ARGUMENT.findall(rule.rule)
    ]
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    parameters.extend(dict(parameter) for parameter in operation.parameters)
    return parameters


def _responses(operation: Operation) -> dict:
    answers: dict[str, dict] = {}
    for status, answer in operation.success.items():
        shape = answer.shape
        if isinstance(shape, dict):
            content: dict[str, dict] = {"application/json": {"schema": shape}}
        elif isinstance(shape, tuple):  # issue 17: streamed text in several formats
            content = {media: {"schema": {"type": "string"}} for media in shape}
        elif isinstance(shape, str):
            content = (
                {shape: {"schema": {"type": "object" if "json" in shape else "string"}}}
                if shape
                else {}
            )
        else:
            content = {"application/json": {"schema": shape}}
        answers[str(status)] = {
            "description": answer.description,
            "headers": {USAGE_HEADER: USAGE_HEADER},
        }
        if content:
            answers[str(status)]["content"] = content
        if answer.links:
            answers[str(status)]["links"] = answer.links
    errors = {*operation.errors, 413, *((503,) if operation.datastore else ())}
    for status in sorted(errors):
        name = ERROR_STATUSES[status][0]
        # mypy: an error's answer object, as ERROR_STATUSES writes it
        answers[str(status)] = PROBLEM + name if operation.problems else name  # type: ignore[assignment]
    return answers
