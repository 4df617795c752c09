"""Usage limits of the caller's org and the limit check: /v1/billing/limits (issue 16)."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.declare import (
    TENANT_ERRORS,
    arguments,
    body,
    operation,
    other_responses,
    response,
    scope,
)
from app.schemas.alerts import Alert
from app.schemas.limits import (
    Limit,
    LimitAlertCreate,
    LimitCheck,
    LimitCheckQuery,
    LimitCreate,
    LimitListQuery,
    LimitPage,
    LimitUpdate,
)
from app.services.limits import check, definitions

blueprint = Blueprint("limits", __name__, url_prefix="/v1/billing/limits")
blueprint.before_request(tenancy.require_org)
tenant = operation("limits", errors=TENANT_ERRORS)


@blueprint.post("")
@scope("meters:write")
@tenant
@body(LimitCreate)
@response(Limit, 201, "The new limit.")
@other_responses(400, 409)
def create_limit(fields):
    """Create a limit: a meter's default for every user, or one user's override."""
    return definitions.create_limit(fields)


@blueprint.get("")
@scope("meters:read")
@tenant
@arguments(LimitListQuery)
@response(LimitPage, 200, "A page of limits.")
@other_responses(400)
def list_limits(args):
    """List the org's limits (of one meter with meterId), a page at a time."""
    size = args.get("limit", current_app.config["METERING"].default_page_size)
    page, next_cursor = definitions.list_limits(size, args.get("cursor"), args.get("meterId"))
    return {"limits": page, "count": len(page), "nextCursor": next_cursor}


@blueprint.get("/check")
@tenancy.reads_api_key_itself
@scope("usage:read")
@tenant
@arguments(LimitCheckQuery)
@response(LimitCheck, 200, "The user's usage this period against the limit that applies.")
@other_responses(400, 404)
def check_limit(args):
    """May this user still use the meter this period? Counts every batch answered
    before `asOf`, with a constant number of reads."""
    found = check.check(
        args.get("meterId"), args.get("eventName"), args["userId"], along=tenancy.pending_key()
    )
    return {
        "allowed": found.allowed,
        "used": found.used,
        "limit": found.limit.limit_value,
        "remaining": found.remaining,
        "limit_id": found.limit.id_,
        "user_id": found.user_id,
        "period_start": found.period_start,
        "period_end": found.period_end,
        "resets_at": found.period_end,
        "as_of": found.as_of,
    }


@blueprint.get("/<limit_id>")
@scope("meters:read")
@tenant
@response(Limit, 200, "The limit.")
@other_responses(404)
def get_limit(limit_id):
    """Get one limit."""
    return definitions.get_limit(limit_id)


@blueprint.patch("/<limit_id>")
@scope("meters:write")
@tenant
@body(LimitUpdate)
@response(Limit, 200, "The changed limit.")
@other_responses(400, 404)
def update_limit(changes, limit_id):
    """Change a limit's value."""
    return definitions.update_limit(limit_id, changes)


@blueprint.delete("/<limit_id>")
@scope("meters:write")
@tenant
@response(Limit, 200, "The deleted limit.")
@other_responses(404)
def delete_limit(limit_id):
    """Delete a limit."""
    return definitions.delete_limit(limit_id)


@blueprint.post("/<limit_id>/alerts")
@scope("meters:write")
@tenant
@body(LimitAlertCreate)
@response(Alert, 201, "The new alert rule, its thresholds resolved from the limit.")
@other_responses(400, 404)
def create_limit_alert(fields, limit_id):
    """Create an alert rule at percentages of a limit (e.g. 80 and 100)."""
    return definitions.create_alert(limit_id, fields)
