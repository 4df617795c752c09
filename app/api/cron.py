"""Periodic jobs, called by App Engine's cron (see cron.yaml).

App Engine strips `X-Appengine-Cron` from every request that does not come from its
cron service, so on App Engine that header proves the caller. Elsewhere anyone can
send it, so there it counts for nothing; the admin token always works (to run a
job by hand).
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, current_app, request

from app import tenancy
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
def compact():
    """Fold the recent rollup deltas of every org, a bounded amount per call."""
    budget = current_app.config["METERING"].cron_compact_budget
    return asdict(periodic.compact_all_orgs(budget))
