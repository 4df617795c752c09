"""Meters of the caller's org: /v1/billing/meters."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.declare import TENANT_ERRORS, arguments, body, operation, other_responses, response
from app.schemas import responses
from app.schemas.meters import ListQuery, MeterCreate, MeterUpdate
from app.services import meters

blueprint = Blueprint("meters", __name__, url_prefix="/v1/billing/meters")
blueprint.before_request(tenancy.require_org)
tenant = operation("meters", errors=TENANT_ERRORS)


def _link(operation_id: str, description: str, **parameters: str) -> dict:
    return {"operationId": operation_id, "description": description, "parameters": parameters}


#: What a client can call next with a new meter's id. A link's body is a whole, valid
#: body: fuzzers (schemathesis) are told to send it as it is rather than merge generated
#: fields into it.
METER_LINKS = {
    "GetMeter": _link("meters.get_meter", "Get the new meter.", meter_id="$response.body#/id"),
    "UpdateMeter": _link("meters.update_meter", "Change it.", meter_id="$response.body#/id"),
    "ArchiveMeter": _link("meters.archive_meter", "Archive it.", meter_id="$response.body#/id"),
    "Summarize": _link("meter_events.get_summary", "Read its usage.",
                       meterId="$response.body#/id"),
    "RecordEvent": {"operationId": "meter_events.record_events",
                    "description": "Record an event for it.",
                    "requestBody": {"events": [{"meterId": "$response.body#/id",
                                                "userId": "user-1", "value": 1}]},
                    "x-schemathesis": {"merge_body": False}},
}


@blueprint.post("")
@tenant
@body(MeterCreate)
@response(responses.Meter, 201, "The new meter.", links=METER_LINKS)
@other_responses(400, 409)
def create_meter(fields):
    """Create a meter."""
    return meters.create_meter(fields)


@blueprint.get("")
@tenant
@arguments(ListQuery)
@response(responses.MeterPage, 200, "A page of meters.")
@other_responses(400)
def list_meters(args):
    """List the org's meters, a page at a time."""
    config = current_app.config["METERING"]
    page, next_cursor = meters.list_meters(args.get("limit", config.default_page_size),
                                           args.get("cursor"))
    return {"meters": page, "count": len(page), "nextCursor": next_cursor}


@blueprint.get("/<meter_id>")
@tenant
@response(responses.Meter, 200, "The meter.")
@other_responses(404)
def get_meter(meter_id):
    """Get one meter."""
    return meters.get_meter(meter_id)


@blueprint.patch("/<meter_id>")
@tenant
@body(MeterUpdate)
@response(responses.Meter, 200, "The changed meter.")
@other_responses(400, 404, 409)
def update_meter(changes, meter_id):
    """Change a meter's name or metadata (and its shape while it has no events)."""
    return meters.update_meter(meter_id, changes)


@blueprint.delete("/<meter_id>")
@tenant
@response(responses.Meter, 200, "The archived meter.")
@other_responses(404)
def archive_meter(meter_id):
    """Archive a meter: no new events, history kept."""
    return meters.archive_meter(meter_id)
