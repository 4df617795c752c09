"""Usage events of the caller's org: /v1/billing/meter-events."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.requests import body, query
from app.schemas.events import SummaryQuery, batch_schema, summary_json
from app.services import events, summary

blueprint = Blueprint("meter_events", __name__, url_prefix="/v1/billing/meter-events")
blueprint.before_request(tenancy.require_org)


@blueprint.post("")
def record_events():
    """Record a batch of usage events, exactly once per idempotency key."""
    config = current_app.config["METERING"]
    batch = body(batch_schema(config.max_batch_events))
    outcomes = events.record_events(batch["events"], config)
    return {"events": [{"id": o.id, "status": o.status} for o in outcomes],
            "count": len(outcomes)}, 201


@blueprint.get("/summary")
def get_summary():
    """Aggregate a meter's usage over a period, for one user or all."""
    args = query(SummaryQuery())
    result = summary.summarize(args["meterId"], args.get("userId"), args.get("periodStart"),
                               args.get("periodEnd"))
    return summary_json(result)
