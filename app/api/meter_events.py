"""Usage events of the caller's org, one resource: /v1/billing/meter-events.

Recording, cancelling, listing a meter's recent events and summarizing them.
"""

from flask import Blueprint, current_app, request

from app import tenancy
from app.api import requests
from app.api.declare import (
    TENANT_ERRORS,
    arguments,
    body,
    link_with_body,
    operation,
    other_responses,
    response,
    scope,
)
from app.api.requests import summary_query
from app.errors import ValidationFailed
from app.models import utcnow
from app.openapi.operations import ConfiguredBody, declared
from app.schemas import MAX_LISTED_ERRORS, responses
from app.schemas.event_log import DEFAULT_EVENTS_PAGE, EventListQuery
from app.schemas.events import SummaryQuery, batch_schema, cancel_schema, summary_json
from app.schemas.imports import IMPORT_BODY, ImportQuery, ImportResult
from app.schemas.quick_events import load_batch
from app.services import cancel, event_log, events, import_formats, imports, summary

blueprint = Blueprint("meter_events", __name__, url_prefix="/v1/billing/meter-events")
blueprint.before_request(tenancy.require_org)
tenant = operation("meter events", errors=TENANT_ERRORS)

#: Bodies of up to the configured number of events (`max_batch_events`).
EVENT_BATCH = ConfiguredBody("EventBatch", lambda config: batch_schema(config.max_batch_events))
CANCEL_BATCH = ConfiguredBody("CancelBatch", lambda config: cancel_schema(config.max_batch_events))

#: `filter[NAME]=VALUE` of the summary: an object in deepObject style.
SUMMARY_FILTER = {
    "name": "filter",
    "in": "query",
    "style": "deepObject",
    "explode": True,
    "schema": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": r"^[^\[\]]*$"},
    },
    "description": "Only events whose `userId` or dimension NAME has the VALUE, written "
    "`filter[NAME]=VALUE`. Repeat one NAME to accept any of several values; "
    "filters on different names must all hold. NAME must be `userId` or a "
    "dimension of the meter.",
}

#: What a client can call next with a recorded batch.
EVENT_LINKS = {
    "CancelEvent": link_with_body(
        "meter_events.cancel_events",
        "Cancel the first event of the batch.",
        {"events": [{"id": "$response.body#/events/0/id"}]},
    ),
}


def _quick_batch(document: dict, config):
    return load_batch(document, config.max_batch_events)


@blueprint.post("")
@scope("events:write")
@tenant
@body(EVENT_BATCH, quick=_quick_batch)
# Hot path: answered by hand, ~2 µs per event less than the schema (benchmarks/answers.py).
@response(
    responses.RecordResult,
    201,
    "One outcome per event, in order.",
    links=EVENT_LINKS,
    dump=responses.record_json,
)
@other_responses(400)
def record_events(batch):
    """Record a batch of usage events, exactly once per idempotency key."""
    return events.record_events(batch["events"], current_app.config["METERING"])


@blueprint.post("/cancel")
@scope("events:cancel")
@tenant
@body(CANCEL_BATCH)
@response(responses.CancelResult, 200, "One outcome per target, in order.")
@other_responses(400)
def cancel_events(batch):
    """Cancel recorded events: out of every summary, kept for audit."""
    targets = batch["events"]
    named = events.resolve_meters(filter(None, map(cancel.meter_key, targets)))
    results = cancel.cancel_events(targets, named, current_app.config["METERING"].dedupe_window)
    return {"events": results, "count": len(results)}


@blueprint.get("")
@scope("usage:read")
@tenant
@arguments(EventListQuery)
@response(responses.EventPage, 200, "A page of the meter's events, newest first.")
@other_responses(400, 404)
def list_events(args):
    """List a meter's recent events with their status; search by user or idempotency key."""
    page, next_cursor = event_log.recent_events(
        args["meterId"],
        user_id=args.get("userId"),
        idempotency=args.get("idempotency"),
        limit=args.get("limit", DEFAULT_EVENTS_PAGE),
        cursor=args.get("cursor"),
    )
    return {"events": page, "count": len(page), "nextCursor": next_cursor}


@blueprint.get("/summary")
@scope("usage:read")
@tenant
@arguments(SummaryQuery, parameters=(SUMMARY_FILTER,), read=summary_query)
# Hot path, up to thousands of windows: answered by hand, half the schema's cost
# (720 windows: 1.6 ms against 3.4 ms, benchmarks/answers.py).
@response(responses.Summary, 200, "The summary.", dump=summary_json)
@other_responses(400, 404)
def get_summary(query):
    """Aggregate a meter's usage over a period: for one user or all, by window and group."""
    args, filters = query
    return summary.summarize(
        args["meterId"],
        args.get("userId"),
        args.get("periodStart"),
        args.get("periodEnd"),
        window_size=args.get("windowSize"),
        time_zone=args.get("timeZone", "UTC"),
        group_by=tuple(args.get("groupBy", ())),
        filters=filters,
        default_end=utcnow() + current_app.config["METERING"].max_event_lead,
        limit=args.get("limit"),
        cursor=args.get("cursor"),
        order_by=args.get("orderBy"),
    )


# -- issue 17: bulk import ---------------------------------------------------------------


def _raw_body_declared(content: dict):
    """Document a body the view reads itself (not JSON: NDJSON or CSV, maybe gzip)."""

    def decorate(view):
        declared(view).raw_body = content
        return view

    return decorate


def _refusal(report: imports.Report) -> ValidationFailed:
    """400 naming each bad record as `lines[N].field`: the first 20, then a count."""
    listed = [
        {
            "param": f"lines[{p['line']}]" + (f".{p['field']}" if p["field"] else ""),
            "message": f"line {p['line']}: {p['message']}",
        }
        for p in report.problems[:MAX_LISTED_ERRORS]
    ]
    left_out = report.problem_count - len(listed)
    if left_out:
        listed.append({"message": f"{left_out} more problem{'s' * (left_out > 1)} not listed"})
    return ValidationFailed(
        listed[0]["message"], param=listed[0].get("param"), details=listed, code="invalid_import"
    )


@blueprint.post("/import")
@scope("events:write")
@tenant
@arguments(ImportQuery)
@_raw_body_declared(IMPORT_BODY)
@response(ImportResult, 200, "What was stored (or, dry, would be).")
@other_responses(400, 404, 413)
def import_events(args):
    """Import NDJSON or CSV events (plain or gzip) exactly once; backfill with its scope."""
    if args.get("backfill"):
        tenancy.require_scope("events:backfill")
    raw = requests._raw_body()
    if not raw.strip():
        raise ValidationFailed("request body is empty", param="body")
    options = imports.Options(
        meter=args.get("meter"),
        backfill=bool(args.get("backfill")),
        skip_invalid=bool(args.get("skipInvalid")),
        dry_run=bool(args.get("dryRun")),
        format=args.get("format") or _format_of(request.content_type),
        workers=0,
    )
    try:
        report = imports.run(
            import_formats.bytes_opener(raw), options, current_app.config["METERING"]
        )
    except imports.Refused as refused:
        raise _refusal(refused.report) from None
    except import_formats.InputError as exc:
        raise ValidationFailed(
            f"line {exc.line}: {exc.message}", param=f"lines[{exc.line}]", code="invalid_import"
        ) from None
    return report.as_json()


def _format_of(content_type: str | None) -> str:
    """`csv` for a text/csv body, else detected from the body itself."""
    return "csv" if (content_type or "").split(";")[0].strip() == "text/csv" else "auto"
