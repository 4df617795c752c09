"""Recent events of a meter: GET /v1/billing/meter-events?meterId=... (newest first)."""

from flask import Blueprint

from app import tenancy
from app.api.requests import query
from app.schemas.event_log import DEFAULT_EVENTS_PAGE, EventListQuery, event_json
from app.services import event_log

blueprint = Blueprint("event_log", __name__, url_prefix="/v1/billing/meter-events")
blueprint.before_request(tenancy.require_org)


@blueprint.get("")
def list_events():
    """List a meter's recent events with their status; search by user or idempotency key."""
    args = query(EventListQuery())
    page, next_cursor = event_log.recent_events(
        args["meterId"], user_id=args.get("userId"), idempotency=args.get("idempotency"),
        limit=args.get("limit", DEFAULT_EVENTS_PAGE), cursor=args.get("cursor"))
    return {"events": [event_json(e) for e in page], "count": len(page),
            "nextCursor": next_cursor}
