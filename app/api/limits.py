"""Usage limits of the caller's org and the limit check: /v1/billing/limits (issue 16)."""

from flask import Blueprint

from app import tenancy
from app.api.collection import Collection, page_size
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
views = Collection(
    blueprint, tenant, one=Limit, id_name="limit_id", read="meters:read", write="meters:write"
)


@views.creates(LimitCreate, "The new limit.", errors=(400, 409))
def create_limit(fields):
    """Create a limit: a meter's default for every user, or one user's override."""
    return definitions.create_limit(fields)


@views.lists(LimitListQuery, LimitPage, "A page of limits.", items="limits")
def list_limits(args):
    """List the org's limits (of one meter with meterId), a page at a time."""
    return definitions.list_limits(page_size(args), args.get("cursor"), args.get("meterId"))


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


@views.gets("The limit.")
def get_limit(limit_id):
    """Get one limit."""
    return definitions.get_limit(limit_id)


@views.changes(LimitUpdate, "The changed limit.")
def update_limit(changes, limit_id):
    """Change a limit's value."""
    return definitions.update_limit(limit_id, changes)


@views.deletes("The deleted limit.")
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
