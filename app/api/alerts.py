"""Alert rules of the caller's org: /v1/billing/alerts (issue 14)."""

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
from app.schemas.alerts import (
    Alert,
    AlertCreate,
    AlertListQuery,
    AlertPage,
    AlertUpdate,
    TriggerListQuery,
    TriggerPage,
)
from app.services.alerts import rules

blueprint = Blueprint("alerts", __name__, url_prefix="/v1/billing/alerts")
blueprint.before_request(tenancy.require_org)
tenant = operation("alerts", errors=TENANT_ERRORS)


def _page_size(args) -> int:
    return args.get("limit", current_app.config["METERING"].default_page_size)


@blueprint.post("")
@scope("meters:write")
@tenant
@body(AlertCreate)
@response(Alert, 201, "The new alert rule.")
@other_responses(400)
def create_alert(fields):
    """Create an alert rule: thresholds on a meter's day or month value."""
    return rules.create_rule(fields)


@blueprint.get("")
@scope("meters:read")
@tenant
@arguments(AlertListQuery)
@response(AlertPage, 200, "A page of alert rules.")
@other_responses(400)
def list_alerts(args):
    """List the org's alert rules, a page at a time."""
    page, next_cursor = rules.list_rules(
        _page_size(args), args.get("cursor"), args.get("includeArchived", False)
    )
    return {"alerts": page, "count": len(page), "nextCursor": next_cursor}


@blueprint.get("/<alert_id>")
@scope("meters:read")
@tenant
@response(Alert, 200, "The alert rule.")
@other_responses(404)
def get_alert(alert_id):
    """Get one alert rule."""
    return rules.get_rule(alert_id)


@blueprint.patch("/<alert_id>")
@scope("meters:write")
@tenant
@body(AlertUpdate)
@response(Alert, 200, "The changed alert rule.")
@other_responses(400, 404)
def update_alert(changes, alert_id):
    """Change a rule's name, thresholds, filter or notifyOnResolve."""
    return rules.update_rule(alert_id, changes)


@blueprint.delete("/<alert_id>")
@scope("meters:write")
@tenant
@response(Alert, 200, "The archived alert rule.")
@other_responses(404)
def archive_alert(alert_id):
    """Archive an alert rule: no longer evaluated, its triggers kept."""
    return rules.archive_rule(alert_id)


@blueprint.get("/<alert_id>/triggers")
@scope("meters:read")
@tenant
@arguments(TriggerListQuery)
@response(TriggerPage, 200, "A page of the rule's triggers, newest first.")
@other_responses(400, 404)
def list_triggers(args, alert_id):
    """List a rule's crossings and resolutions, newest first."""
    page, next_cursor = rules.list_triggers(alert_id, _page_size(args), args.get("cursor"))
    return {"triggers": page, "count": len(page), "nextCursor": next_cursor}
