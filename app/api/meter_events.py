"""Usage events of the caller's org: /v1/billing/meter-events."""

from flask import Blueprint, current_app

from app import tenancy
from app.api.requests import body, json_body, summary_query
from app.errors import NotFound
from app.models import utcnow
from app.schemas import load
from app.schemas.events import batch_schema, cancel_schema, summary_json
from app.schemas.quick_events import load_batch
from app.services import cancel, events, meters, summary

blueprint = Blueprint("meter_events", __name__, url_prefix="/v1/billing/meter-events")
blueprint.before_request(tenancy.require_org)


@blueprint.post("")
def record_events():
    """Record a batch of usage events, exactly once per idempotency key."""
    config = current_app.config["METERING"]
    data = json_body()
    batch = (load_batch(data, config.max_batch_events)
             or load(batch_schema(config.max_batch_events), data))
    outcomes = events.record_events(batch["events"], config)
    return {"events": [{"id": o.id, "status": o.status} for o in outcomes],
            "count": len(outcomes)}, 201


@blueprint.post("/cancel")
def cancel_events():
    """Cancel recorded events: out of every summary, kept for audit."""
    config = current_app.config["METERING"]
    targets = body(cancel_schema(config.max_batch_events))["events"]
    results = cancel.cancel_events(targets, _meters_named(targets), config.dedupe_window)
    return {"events": [{"id": r.id, "status": r.status} for r in results],
            "count": len(results)}


def _meters_named(targets: list[dict]) -> dict:
    """The meters the targets name, keyed `("id", meterId)` or `("name", eventName)`: ids
    and event names live apart, so an event name spelled like another meter's id
    never resolves to that meter."""
    named = {}
    for target in targets:
        key = cancel.meter_key(target)
        if key is None or key in named:
            continue
        kind, value = key
        if kind == "id":
            try:
                named[key] = meters.get_meter(value)
            except NotFound:
                named[key] = None
        else:
            named[key] = meters.find_by_event_name(value)
    return named


@blueprint.get("/summary")
def get_summary():
    """Aggregate a meter's usage over a period: for one user or all, by window and group."""
    args, filters = summary_query()
    result = summary.summarize(
        args["meterId"], args.get("userId"), args.get("periodStart"), args.get("periodEnd"),
        window_size=args.get("windowSize"), time_zone=args.get("timeZone", "UTC"),
        group_by=tuple(args.get("groupBy", ())), filters=filters,
        default_end=utcnow() + current_app.config["METERING"].max_event_lead)
    return summary_json(result)
