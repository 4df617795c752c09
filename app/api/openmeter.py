"""OpenMeter's HTTP API, the part its SDKs use: /api/v1/events and /api/v1/meters.

Tenants that run OpenMeter's SDKs switch by changing the base URL and the token (our
org API key, sent as `Authorization: Bearer`). Answers have OpenMeter's shapes and
status codes (201 on create, 204 on ingest and delete); every error under /api/v1,
whoever raised it (a view, authentication, the rate limiter, routing), is rewritten from
our envelope into RFC 7807 problem+json, OpenMeter's error shape, keeping our `code`,
`param` and listed problems as extensions. What OpenMeter serves and we do not answers
501 (a known OpenMeter path) or 404, both as problems. docs/openmeter.md lists both.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, request
from werkzeug.http import HTTP_STATUS_CODES

from app import tenancy
from app.api import requests
from app.api.declare import TENANT_ERRORS, scope
from app.openapi.operations import API_KEY, Answer, declared
from app.schemas import openmeter as shapes
from app.services import cloud_event_log, cloud_events, mappings, openmeter

blueprint = Blueprint("openmeter", __name__, url_prefix="/api/v1")
blueprint.before_request(tenancy.require_org)
PREFIX = "/api/v1"


def described(
    status: int,
    description: str,
    shape: dict | str,
    errors: tuple[int, ...] = (400, 404),
    *,
    parameters: tuple[dict, ...] = (),
    raw_body: dict | None = None,
):
    """Declare an OpenMeter operation for the document: its answer (a JSON schema, or ""
    for none), its errors as problems, its query parameters and body."""

    def decorate(view):
        operation = declared(view)
        operation.tag, operation.security, operation.problems = "openmeter", API_KEY, True
        operation.success[status] = Answer(description, shape)
        operation.errors = tuple(sorted({*TENANT_ERRORS, *errors}))
        operation.parameters, operation.raw_body = parameters, raw_body
        return view

    return decorate


#: OpenMeter's paths (first segment after /api/v1) that exist there and not here.
NOT_SERVED = (
    "subjects",
    "customers",
    "features",
    "entitlements",
    "grants",
    "plans",
    "addons",
    "subscriptions",
    "billing",
    "apps",
    "marketplace",
    "notification",
    "portal",
    "debug",
    "info",
    "progress",
)


@blueprint.post("/events")
@scope("events:write")
@described(204, "Stored (or already stored).", "", (400,), raw_body=shapes.EVENTS_BODY)
def ingest_events():
    """Ingest CloudEvents: structured, batched or binary; 204, or a problem and nothing
    written."""
    config = current_app.config["METERING"]
    headers = {name.lower(): value for name, value in request.headers.items()}
    # The body read as every body is: 413 past the limit, chunked bodies included.
    raw = requests._raw_body()
    items = cloud_events.read_request(request.content_type, headers, raw)
    cloud_events.record(items, config)
    return "", 204


@blueprint.get("/events")
@scope("usage:read")
@described(
    200,
    "Recent CloudEvents: stored, refused, conflicting.",
    shapes.INGESTED_EVENTS,
    (400,),
    parameters=shapes.EVENT_LIST_PARAMETERS,
)
def list_events():
    """OpenMeter's listEvents: recent events, with why one was refused or not counted."""
    return cloud_event_log.recent(request.args)


@blueprint.get("/meters")
@scope("meters:read")
@described(200, "The meters.", shapes.METERS, (400,), parameters=shapes.LIST_PARAMETERS)
def list_meters():
    """OpenMeter's listMeters: a bare array."""
    return openmeter.list_meters(request.args)


@blueprint.post("/meters")
@scope("meters:write")
@described(
    201,
    "The new meter.",
    shapes.METER,
    (400, 409),
    raw_body={"application/json": {"schema": shapes.METER_CREATE}},
)
def create_meter():
    """OpenMeter's createMeter: 201 with the meter."""
    meter, mapping = openmeter.create(requests.json_body())
    return openmeter.meter_json(meter, mapping), 201


@blueprint.get("/meters/<id_or_slug>")
@scope("meters:read")
@described(200, "The meter.", shapes.METER)
def get_meter(id_or_slug):
    """OpenMeter's getMeter, by id (archived too) or slug (active only)."""
    meter = openmeter.find(id_or_slug)
    return openmeter.meter_json(meter, mappings.mapping_of(meter))


@blueprint.put("/meters/<id_or_slug>")
@scope("meters:write")
@described(
    200,
    "The changed meter.",
    shapes.METER,
    (400, 404, 409),
    raw_body={"application/json": {"schema": shapes.METER_UPDATE}},
)
def update_meter(id_or_slug):
    """OpenMeter's updateMeter: name, description, metadata, groupBy replaced."""
    meter, mapping = openmeter.update(id_or_slug, requests.json_body())
    return openmeter.meter_json(meter, mapping)


@blueprint.delete("/meters/<id_or_slug>")
@scope("meters:write")
@described(204, "Archived.", "", (404,))
def delete_meter(id_or_slug):
    """OpenMeter's deleteMeter: archive, 204."""
    openmeter.archive(id_or_slug)
    return "", 204


@blueprint.get("/meters/<id_or_slug>/query")
@scope("usage:read")
@described(200, "Its usage.", shapes.QUERY_RESULT, parameters=shapes.QUERY_PARAMETERS)
def query_meter(id_or_slug):
    """OpenMeter's queryMeter, answered by the native summary."""
    return openmeter.query(id_or_slug, request.args, current_app.config["METERING"])


@blueprint.post("/meters/<id_or_slug>/query")
@scope("usage:read")
@described(
    200,
    "Its usage.",
    shapes.QUERY_RESULT,
    raw_body={"application/json": {"schema": shapes.QUERY_REQUEST}},
)
def query_meter_post(id_or_slug):
    """OpenMeter's queryMeterPost: the same query, its parameters in a JSON body."""
    args = openmeter.query_body_args(requests.json_body())
    return openmeter.query(id_or_slug, args, current_app.config["METERING"])


@blueprint.get("/meters/<id_or_slug>/group-by/<group_by_key>/values")
@scope("usage:read")
@described(200, "The key's values.", shapes.SUBJECTS, parameters=shapes.PERIOD)
def list_group_by_values(id_or_slug, group_by_key):
    """OpenMeter's listMeterGroupByValues: the values one groupBy key took in [from, to)."""
    config = current_app.config["METERING"]
    return openmeter.group_by_values(id_or_slug, group_by_key, request.args, config)


@blueprint.get("/meters/<id_or_slug>/subjects")
@scope("usage:read")
@described(200, "Subjects with events.", shapes.SUBJECTS, parameters=shapes.PERIOD)
def list_subjects(id_or_slug):
    """OpenMeter's listMeterSubjects."""
    return openmeter.subjects(id_or_slug, request.args, current_app.config["METERING"])


def _unrouted() -> dict[str, str]:
    """The error of a path under /api/v1 that no route serves: 501 for a path of
    OpenMeter's API that this service does not serve, else 404."""
    parts = request.path[len(PREFIX) :].strip("/").split("/")
    if parts[0] in NOT_SERVED or (parts[0] == "meters" and len(parts) >= 3):
        return {
            "message": f"{request.method} {request.path} is an OpenMeter endpoint this "
            "service does not serve (docs/openmeter.md)",
            "code": "not_implemented",
        }
    return {"message": f"no such endpoint: {request.method} {request.path}", "code": "not_found"}


@blueprint.after_app_request
def as_problem(response):
    """Rewrite an error envelope under /api/v1 into problem+json (RFC 7807)."""
    if response.status_code < 400 or not (
        request.path == PREFIX or request.path.startswith(PREFIX + "/")
    ):
        return response
    body = response.get_json(silent=True) if response.is_json else None
    error: Any = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return response
    status = response.status_code
    if request.url_rule is None and status == 404:  # no route: OpenMeter's, or nobody's
        error = _unrouted()
        status = response.status_code = 501 if error["code"] == "not_implemented" else 404
    problem = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": error.get("message", ""),
        "instance": request.path,
    }
    extensions: dict[str, Any] = {name: error[name] for name in ("code", "param") if name in error}
    listed = error.get("errors") or ([error] if error.get("param") else [])
    if listed:  # OpenMeter's `validationErrors`: each with a code and a message
        code = error.get("code", "validation_error")
        extensions["validationErrors"] = [
            {"code": code, **{k: v for k, v in item.items() if k != "type"}} for item in listed
        ]
    problem["extensions"] = extensions
    response.set_data(json.dumps(problem))
    response.mimetype = "application/problem+json"
    return response
