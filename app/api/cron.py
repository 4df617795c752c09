"""Periodic jobs, called by App Engine's cron (see cron.yaml).

App Engine strips `X-Appengine-Cron` from every request that does not come from its
cron service, so on App Engine that header proves the caller. Elsewhere anyone can
send it, so there it counts for nothing; the admin token always works (to run a
job by hand).
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from app import tenancy
from app.api.declare import operation, response
from app.openapi.operations import ADMIN_TOKEN
from app.schemas import responses
from app.schemas.webhooks import DeliveryRun
from app.services import periodic

blueprint = Blueprint("cron", __name__, url_prefix="/v1/cron")


def require_cron_or_admin() -> None:
    """Allow App Engine's cron (on App Engine only) or the admin token."""
    config = current_app.config["METERING"]
    if config.production and request.headers.get("X-Appengine-Cron") == "true":
        return
    tenancy.require_admin()


blueprint.before_request(require_cron_or_admin)


@blueprint.get("/compact")
@operation("operations", security=ADMIN_TOKEN, errors=(401, 429))
@response(responses.CompactionRun, 200, "What the call compacted.")
def compact():
    """Fold the recent rollup deltas of every org, a bounded amount per call."""
    budget = current_app.config["METERING"].cron_compact_budget
    return periodic.compact_all_orgs(budget)


# issue 14: alerts and webhooks on App Engine (cron.yaml, every minute).
@blueprint.get("/deliver")
@operation("operations", security=ADMIN_TOKEN, errors=(401, 429))
@response(DeliveryRun, 200, "What the call evaluated and sent.")
def deliver():
    """Evaluate alert rules and send due webhook messages of every org, bounded per call."""
    budget = current_app.config["METERING"].cron_delivery_budget
    return periodic.deliver_all_orgs(budget)
