"""Meters of the caller's org: /v1/billing/meters."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.declare import (
    TENANT_ERRORS,
    arguments,
    body,
    link,
    link_with_body,
    operation,
    other_responses,
    response,
    scope,
)
from app.schemas import responses
from app.schemas.meters import ListQuery, MeterCreate, MeterUpdate
from app.services import meters

blueprint = Blueprint("meters", __name__, url_prefix="/v1/billing/meters")
blueprint.before_request(tenancy.require_org)
tenant = operation("meters", errors=TENANT_ERRORS)


#: What a client can call next with a new meter's id.
METER_LINKS = {
    "GetMeter": link("meters.get_meter", "Get the new meter.", meter_id="$response.body#/id"),
    "UpdateMeter": link("meters.update_meter", "Change it.", meter_id="$response.body#/id"),
    "ArchiveMeter": link("meters.archive_meter", "Archive it.", meter_id="$response.body#/id"),
    "Summarize": link("meter_events.get_summary", "Read its usage.", meterId="$response.body#/id"),
    "RecordEvent": link_with_body(
        "meter_events.record_events",
        "Record an event for it.",
        {"events": [{"meterId": "$response.body#/id", "userId": "user-1", "value": 1}]},
    ),
}


@blueprint.post("")
@scope("meters:write")
@tenant
@body(MeterCreate)
@response(responses.Meter, 201, "The new meter.", links=METER_LINKS)
@other_responses(400, 409)
def create_meter(fields):
    """Create a meter."""
    return meters.create_meter(fields)


@blueprint.get("")
@scope("meters:read")
@tenant
@arguments(ListQuery)
@response(responses.MeterPage, 200, "A page of meters.")
@other_responses(400)
def list_meters(args):
    """List the org's meters, a page at a time."""
    config = current_app.config["METERING"]
    page, next_cursor = meters.list_meters(
        args.get("limit", config.default_page_size), args.get("cursor")
    )
    return {"meters": page, "count": len(page), "nextCursor": next_cursor}


@blueprint.get("/<meter_id>")
@scope("meters:read")
@tenant
@response(responses.Meter, 200, "The meter.")
@other_responses(404)
def get_meter(meter_id):
    """Get one meter."""
    return meters.get_meter(meter_id)


@blueprint.patch("/<meter_id>")
@scope("meters:write")
@tenant
@body(MeterUpdate)
@response(responses.Meter, 200, "The changed meter.")
@other_responses(400, 404, 409)
def update_meter(changes, meter_id):
    """Change a meter's name or metadata (and its shape while it has no events)."""
    return meters.update_meter(meter_id, changes)


@blueprint.delete("/<meter_id>")
@scope("meters:write")
@tenant
@response(responses.Meter, 200, "The archived meter.")
@other_responses(404)
def archive_meter(meter_id):
    """Archive a meter: no new events, history kept."""
    return meters.archive_meter(meter_id)
