"""Usage events of the caller's org, one resource: /v1/billing/meter-events.

Recording, cancelling, listing a meter's recent events and summarizing them.
"""

import time

from flask import Blueprint, Response, current_app, g, request, stream_with_context

from app import datastore, deadline, ratelimit, tenancy
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
from app.schemas import corrections as correction_shapes
from app.schemas.event_log import DEFAULT_EVENTS_PAGE, EventListQuery
from app.schemas.events import SummaryQuery, batch_schema, summary_json
from app.schemas.export import ExportQuery
from app.schemas.imports import IMPORT_BODY, ImportQuery, ImportResult
from app.schemas.quick_events import load_batch
from app.services import (
    amend,
    cancel,
    corrections,
    event_log,
    events,
    export,
    import_formats,
    imports,
    summary,
)
from app.storage import metrics

blueprint = Blueprint("meter_events", __name__, url_prefix="/v1/billing/meter-events")
blueprint.before_request(tenancy.require_org)
tenant = operation("meter events", errors=TENANT_ERRORS)

#: Bodies of up to the configured number of events (`max_batch_events`).
EVENT_BATCH = ConfiguredBody("EventBatch", lambda config: batch_schema(config.max_batch_events))
CANCEL_BATCH = ConfiguredBody(
    "CancelRequest", lambda config: correction_shapes.cancel_schema(config.max_batch_events)
)

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
@response(
    {
        "anyOf": [
            responses.CancelResult,
            correction_shapes.RangeCancelResult,
            correction_shapes.CancelPreview,
        ]
    },
    200,
    "Batch form: one outcome per target, in order. Range form: the correction record "
    "(`running`: repeat the request to go on) and what this request did; with dryRun, "
    "what it would cancel.",
    dump=lambda answer: answer,
)
@other_responses(400, 404)
def cancel_events(batch):
    """Cancel recorded events: out of every summary, kept for audit.

    By id or idempotency key (`events`), or every event of a meter in a period (optionally
    one user's, with dimension values): in pages, resumable, recorded as a correction."""
    config = current_app.config["METERING"]
    if batch.get("events") is None:
        return _cancel_range(batch, config)
    targets = batch["events"]
    named = events.resolve_meters(filter(None, map(cancel.meter_key, targets)))
    results = cancel.cancel_events(targets, named, config.dedupe_window)
    return responses.CancelResult().dump({"events": results, "count": len(results)})


def _cancel_range(body: dict, config) -> dict:
    spec = corrections.range_spec(
        body["meterId"],
        body["periodStart"],
        body["periodEnd"],
        body.get("userId"),
        body.get("filter", {}),
    )
    if body.get("dryRun"):
        preview = corrections.dry_run(
            spec,
            config.dedupe_window,
            config.max_event_lead,
            config.correction_budget_seconds,
            body.get("cursor"),
        )
        return correction_shapes.preview_json(spec.meter.id_, preview)
    record, done = corrections.cancel_range(
        spec,
        config.dedupe_window,
        tenancy.caller_key_prefix(),
        config.correction_page_events,
        config.correction_budget_seconds,
    )
    return correction_shapes.range_result_json(record, done)


@blueprint.post("/<event_id>/amend")
@scope("events:cancel")
@tenant
@body(correction_shapes.AmendBody)
@response(correction_shapes.AmendResult, 200, "The original (now cancelled) and its replacement.")
@other_responses(400, 404, 409)
def amend_event(changes, event_id):
    """Amend a recorded event: its replacement in and the original out, in one commit.

    Linked both ways (`amends`, `amendedBy`); a retry answers `duplicate`."""
    done = amend.amend_event(
        event_id, changes, current_app.config["METERING"], tenancy.caller_key_prefix()
    )
    return {
        "status": done.status,
        "original": done.original,
        "replacement": done.replacement,
        "correctionId": done.correction_id,
    }


@blueprint.get("/corrections")
@scope("usage:read")
@tenant
@arguments(correction_shapes.CorrectionsQuery)
@response(
    correction_shapes.CorrectionPage,
    200,
    "A page of the org's corrections, newest first.",
    dump=lambda page: page,
)
@other_responses(400)
def list_corrections(args):
    """List the org's corrections (range cancels and amendments): who, when, what, how much."""
    found, next_cursor = corrections.list_corrections(
        args.get("limit", correction_shapes.DEFAULT_CORRECTIONS_PAGE), args.get("cursor")
    )
    return {
        "corrections": [correction_shapes.correction_json(record) for record in found],
        "count": len(found),
        "nextCursor": next_cursor,
    }


@blueprint.get("/corrections/<correction_id>")
@scope("usage:read")
@tenant
@response(correction_shapes.Correction, 200, "The correction.", dump=lambda record: record)
@other_responses(404)
def get_correction(correction_id):
    """One correction: a range cancel's progress, or an amendment."""
    return correction_shapes.correction_json(corrections.get_correction(correction_id))


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


# -- issue 17, export -------------------------------------------------------------------


@blueprint.get("/export")
@scope("usage:read")
@tenant
@arguments(ExportQuery)
@response(
    ("application/x-ndjson", "text/csv"),
    200,
    "Every matching event, oldest first, one JSON object a line (each with its `id`, "
    '`status` and `idempotency`), then a trailer line `{"export": {"complete", '
    '"count", "cursor"}}`; with `format=csv`, `text/csv` with a header row instead. '
    "Streamed (chunked): resume a cut export with `cursor` = the last `id` received.",
)
@other_responses(400, 404)
def export_events(args):
    """Stream a meter's events in a period, as NDJSON or CSV, resumable by cursor."""
    config = current_app.config["METERING"]
    job = export.open_export(
        export.ExportRequest(
            meter_id=args["meterId"],
            start=args.get("periodStart"),
            end=args.get("periodEnd"),
            user_id=args.get("userId"),
            include_cancelled=args.get("includeCancelled", False),
            cursor=args.get("cursor"),
        )
    )
    if args.get("format") == "csv":
        pages = _ExportPages(config.request_deadline_seconds, g.org.name)
        columns = job.csv_columns()
        body, mimetype = job.csv(columns, pages.before_page), "text/csv"
    else:
        pages = _ExportPages(
            config.request_deadline_seconds, g.org.name, config.export_answer_seconds
        )
        body = job.ndjson(pages.before_page, config.export_answer_seconds)
        mimetype = "application/x-ndjson"
    # The first chunk is read here, under the request's own context, deadline and error
    # handling: a failure before the first byte still answers in the error envelope.
    # (An NDJSON answer's first chunk is empty and reads nothing: its status and headers
    # leave at once, and a slow first page ends in the trailer instead.)
    first = next(body, b"")
    return Response(
        stream_with_context(pages.streamed(first, body, datastore.reopen_context())),
        mimetype=mimetype,
        headers={"X-Accel-Buffering": "no"},  # proxies: pass each chunk on as it comes
    )


class _ExportPages:
    """What bounds an export's work, page by page, once the answer streams past the
    view: each page of reads gets the request deadline afresh (a stuck RPC fails its
    page; the answer as a whole is bounded by `export_answer_seconds` instead), and the
    reads of each page are added to the org's read budget as they happen
    (`after_request`, which charges ordinary requests, has run before they are read)."""

    def __init__(self, deadline_seconds: float, org: str, answer_seconds: float = 0.0):
        self.deadline_seconds = deadline_seconds
        self.org = org
        self.usage: metrics.Usage | None = None  # None: the view's, after_request charges
        self.charged_reads = 0
        #: issue 17: an answer bounded in time (NDJSON) gives no page's reads more than
        #: the answer's time left, so even one slow query cannot hold it past its bound.
        self.answer_ends = time.monotonic() + answer_seconds if answer_seconds else None

    def before_page(self) -> None:
        self._charge()
        seconds = self.deadline_seconds
        if self.answer_ends is not None and self._has_read():
            # Until a page brought events, reads keep the whole request deadline, so every
            # answer can make progress even under a tiny bound; then only the time left.
            left = max(0.001, self.answer_ends - time.monotonic())
            seconds = min(seconds, left) if seconds > 0 else left
        deadline.start(seconds)

    def _has_read(self) -> bool:
        return self.usage is not None and self.usage.entities_read > 0

    def _charge(self) -> None:
        if self.usage is not None:
            ratelimit.charge_reads(self.org, self.usage.entities_read - self.charged_reads)
            self.charged_reads = self.usage.entities_read

    def streamed(self, first: bytes, body, context):
        """`first`, then the rest of `body` as the server reads it: in an NDB context of
        the org's namespace again (the request's is closed by then), its reads counted
        and charged."""
        yield first
        with context:
            self.usage = metrics.start()
            try:
                yield from body
            finally:
                self._charge()
                deadline.clear()


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
