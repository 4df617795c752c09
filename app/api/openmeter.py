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

from flask import Blueprint, current_app, request
from werkzeug.http import HTTP_STATUS_CODES

from app import tenancy
from app.errors import ApiError, NotFound
from app.services import cloud_events, mappings, openmeter

blueprint = Blueprint("openmeter", __name__, url_prefix="/api/v1")
blueprint.before_request(tenancy.require_org)
PREFIX = "/api/v1"


class NotServed(ApiError):
    """An OpenMeter endpoint this service does not serve (501)."""

    status = 501
    code = "not_implemented"


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
def ingest_events():
    """Ingest CloudEvents: structured, batched or binary; 204, or a problem and nothing
    written."""
    config = current_app.config["METERING"]
    headers = {name.lower(): value for name, value in request.headers.items()}
    items = cloud_events.read_request(request.content_type, headers, request.get_data())
    cloud_events.record(items, config)
    return "", 204


@blueprint.get("/meters")
def list_meters():
    """OpenMeter's listMeters: a bare array."""
    return openmeter.list_meters(request.args)


@blueprint.post("/meters")
def create_meter():
    """OpenMeter's createMeter: 201 with the meter."""
    meter, mapping = openmeter.create(request.get_json(silent=True))
    return openmeter.meter_json(meter, mapping), 201


@blueprint.get("/meters/<id_or_slug>")
def get_meter(id_or_slug):
    """OpenMeter's getMeter, by id (archived too) or slug (active only)."""
    meter = openmeter.find(id_or_slug)
    return openmeter.meter_json(meter, mappings.mapping_of(meter))


@blueprint.put("/meters/<id_or_slug>")
def update_meter(id_or_slug):
    """OpenMeter's updateMeter: name, description, metadata, groupBy replaced."""
    meter, mapping = openmeter.update(id_or_slug, request.get_json(silent=True))
    return openmeter.meter_json(meter, mapping)


@blueprint.delete("/meters/<id_or_slug>")
def delete_meter(id_or_slug):
    """OpenMeter's deleteMeter: archive, 204."""
    openmeter.archive(id_or_slug)
    return "", 204


@blueprint.get("/meters/<id_or_slug>/query")
def query_meter(id_or_slug):
    """OpenMeter's queryMeter, answered by the native summary."""
    return openmeter.query(id_or_slug, request.args)


@blueprint.get("/meters/<id_or_slug>/subjects")
def list_subjects(id_or_slug):
    """OpenMeter's listMeterSubjects."""
    return openmeter.subjects(id_or_slug, request.args)


@blueprint.route(
    "/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
)
def not_served(rest):
    """Anything else under /api/v1: 501 for OpenMeter's other endpoints, 404 otherwise."""
    first = rest.split("/", 1)[0]
    parts = rest.strip("/").split("/")
    if first in NOT_SERVED or (first == "meters" and len(parts) >= 3):
        raise NotServed(f"{request.method} {request.path} is not served by this service")
    raise NotFound(f"no such endpoint: {request.method} {request.path}")


@blueprint.after_app_request
def as_problem(response):
    """Rewrite an error envelope under /api/v1 into problem+json (RFC 7807)."""
    if response.status_code < 400 or not (
        request.path == PREFIX or request.path.startswith(PREFIX + "/")
    ):
        return response
    body = response.get_json(silent=True) if response.is_json else None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return response
    status = response.status_code
    problem = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": error.get("message", ""),
        "instance": request.path,
    }
    extensions = {name: error[name] for name in ("code", "param") if name in error}
    listed = error.get("errors") or ([error] if error.get("param") else [])
    if listed:
        extensions["validationErrors"] = [
            {"code": error.get("code", "validation_error"), **item} for item in listed
        ]
        extensions["validationErrors"] = [
            {k: v for k, v in item.items() if k != "type"}
            for item in extensions["validationErrors"]
        ]
    problem["extensions"] = extensions
    response.set_data(json.dumps(problem))
    response.mimetype = "application/problem+json"
    return response
