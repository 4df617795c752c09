"""Meters of the caller's org: /v1/billing/meters."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.requests import body, query
from app.schemas.meters import ListQuery, MeterCreate, MeterUpdate, meter_json
from app.services import meters

blueprint = Blueprint("meters", __name__, url_prefix="/v1/billing/meters")
blueprint.before_request(tenancy.require_org)


@blueprint.post("")
def create_meter():
    """Create a meter."""
    meter = meters.create_meter(body(MeterCreate()))
    return meter_json(meter), 201


@blueprint.get("")
def list_meters():
    """List the org's meters, a page at a time."""
    args = query(ListQuery())
    config = current_app.config["METERING"]
    page, next_cursor = meters.list_meters(args.get("limit", config.default_page_size),
                                           args.get("cursor"))
    answer = {"meters": [meter_json(m) for m in page], "count": len(page)}
    answer["nextCursor"] = next_cursor
    return answer


@blueprint.get("/<meter_id>")
def get_meter(meter_id):
    """Get one meter."""
    return meter_json(meters.get_meter(meter_id))


@blueprint.patch("/<meter_id>")
def update_meter(meter_id):
    """Change a meter's name or metadata (and its shape while it has no events)."""
    return meter_json(meters.update_meter(meter_id, body(MeterUpdate())))


@blueprint.delete("/<meter_id>")
def archive_meter(meter_id):
    """Archive a meter: no new events, history kept."""
    return meter_json(meters.archive_meter(meter_id))
