"""Alert rules of the caller's org: /v1/billing/alerts (issue 14)."""

from flask import Blueprint

from app import tenancy
from app.api.collection import Collection, page_size
from app.api.declare import TENANT_ERRORS, operation
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
views = Collection(
    blueprint, tenant, one=Alert, id_name="alert_id", read="meters:read", write="meters:write"
)


@views.creates(AlertCreate, "The new alert rule.")
def create_alert(fields):
    """Create an alert rule: thresholds on a meter's day or month value."""
    return rules.create_rule(fields)


@views.lists(AlertListQuery, AlertPage, "A page of alert rules.", items="alerts")
def list_alerts(args):
    """List the org's alert rules, a page at a time."""
    return rules.list_rules(page_size(args), args.get("cursor"), args.get("includeArchived", False))


@views.gets("The alert rule.")
def get_alert(alert_id):
    """Get one alert rule."""
    return rules.get_rule(alert_id)


@views.changes(AlertUpdate, "The changed alert rule.")
def update_alert(changes, alert_id):
    """Change a rule's name, thresholds, filter or notifyOnResolve."""
    return rules.update_rule(alert_id, changes)


@views.deletes("The archived alert rule.")
def archive_alert(alert_id):
    """Archive an alert rule: no longer evaluated, its triggers kept."""
    return rules.archive_rule(alert_id)


@views.lists(
    TriggerListQuery,
    TriggerPage,
    "A page of the rule's triggers, newest first.",
    items="triggers",
    of_one="triggers",
)
def list_triggers(args, alert_id):
    """List a rule's crossings and resolutions, newest first."""
    return rules.list_triggers(alert_id, page_size(args), args.get("cursor"))
