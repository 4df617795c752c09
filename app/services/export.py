"""Streaming export of a meter's events (issue 17): NDJSON or CSV, in constant memory.

Every matching event is read once, in pages of `PAGE_SIZE` (cursor-paged Datastore
reads), in the one total order an export can resume in: Timestamp, then key. Each
event goes out as soon as its page is read, so memory holds one page whatever the
size of the export.

**The cursor is the id of the last event received.** Every line (or CSV row) carries
its event's `id`, so a client that lost the connection resumes from what it already
has, the last complete line of its file, with no state kept by the server and with
neither duplicates nor gaps: the resumed export starts right after that event in the
order above (`queries.events_in_order`). The id must be an event of the same meter
(and user, when one is asked) inside the period; anything else is a 400 `cursor`.

**An NDJSON answer ends with a trailer line**, `{"export": {"complete", "count",
"cursor"}}`: `complete` true when every matching event was sent; false when the
answer reached its time bound (`Config.export_answer_seconds`), and then `cursor` is
the id to resume from. A stream without its trailer was cut: resume from the last
line. A CSV answer has no place for a trailer, so it is never stopped by the time
bound (its pages still are by the request deadline): a clean end is the data's end.

Events are exported as the pages find them, not at one instant: an event recorded
(or cancelled) behind the export's position while it runs is not in it. Export a
period nothing is recorded into any more for a fixed picture.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as core_exceptions
from google.cloud import ndb

from app.errors import DeadlineExceeded, NotFound, ValidationFailed
from app.models import Meter, MeterEvent, ids
from app.schemas import format_time
from app.services import amend
from app.services.meters import get_meter
from app.storage import entities, queries, rpc

#: Events read per Datastore RPC: a few hundred keeps each RPC short (well inside the
#: request deadline) and memory at one page, while the per-RPC overhead stays small.
PAGE_SIZE = 500
#: A page RPC slower than this makes the next one ask for twice as many events, up to
#: `MAX_PAGE_SIZE`. Cloud Datastore serves a page from the index, in time proportional to
#: the page, so pages stay at `PAGE_SIZE` there; the emulators scan every entity of the
#: kind for each query, whatever its limit, so there a bigger page is almost free and
#: cuts the number of scans (`_page_sizes`).
SLOW_PAGE_SECONDS = 1.0
MAX_PAGE_SIZE = 5000
#: The CSV columns every export has, before the dimensions and metadata columns.
BASE_COLUMNS = ("eventName", "userId", "value", "timestamp", "idempotency")
FORMATS = ("ndjson", "csv")


@dataclass(frozen=True)
class ExportRequest:
    """What to export: a meter's events in [start, end), one user's or all users'."""

    meter_id: str
    start: datetime | None = None
    end: datetime | None = None
    user_id: str | None = None
    include_cancelled: bool = False
    cursor: str | None = None


@dataclass(frozen=True)
class Resume:
    """Where a resumed export starts: right after the event (timestamp, key id)."""

    timestamp: datetime
    key_id: int


#: Called before each page's RPC (the HTTP layer gives each page a fresh deadline and
#: charges the previous page's reads to the org's read budget).
PageHook = Callable[[], None]


class Export:
    """One export, checked (meter, cursor) before anything is streamed."""

    def __init__(
        self,
        request: ExportRequest,
        meter: Meter,
        resume: Resume | None,
        on_read: Callable[[], object] | None = None,
    ):
        self.request = request
        self.meter = meter
        self.resume = resume
        #: Called once per event read (exported or skipped as cancelled): the CLI's
        #: progress bar.
        self.on_read = on_read
        self.sent = 0
        self.last_id: str | None = None

    def records(self, before_page: PageHook | None = None) -> Iterator[dict[str, Any]]:
        """The matching events in export order, as dicts (the NDJSON line's fields), with
        their amendment links (`_with_links`), a page at a time: each RPC's page is handed
        on whole before the next RPC starts, so an answer cut at an RPC has sent it."""
        on_read = self.on_read
        for batch in self._entities(before_page):
            page: list[tuple[int, dict[str, Any]]] = []
            for entity in batch:
                if on_read is not None:
                    on_read()
                record = self._record(entity)
                if record is not None:
                    page.append((entity.key.path[-1].id, record))
            yield from _with_links(page)

    def _entities(self, before_page: PageHook | None) -> Iterator[list[Any]]:
        request, resume = self.request, self.resume
        start = resume.timestamp if resume is not None else request.start
        return queries.events_in_order(
            self.meter.id_,
            request.user_id,
            start,
            request.end,
            _page_sizes(before_page),
            after_key_id=resume.key_id if resume is not None else None,
        )

    def _record(self, entity: Any) -> dict[str, Any] | None:
        event = entities.decode_event(entity)
        if event.deleted and not self.request.include_cancelled:
            return None
        return {
            "id": event.public_id,
            "eventName": self.meter.event_name,
            "userId": event.user_id,
            "value": event.value,
            "timestamp": format_time(event.timestamp),
            "idempotency": entities.idempotency_of(entity),
            "dimensions": event.dimensions,
            "metadata": entities.metadata_of(entity),
            "status": "cancelled" if event.deleted else "active",
        }

    def count_to_read(self) -> int:
        """About how many events this export reads, cancelled ones included (exactly, but
        for ties of a resumed export's first timestamp): a keys-only query, for a
        progress bar's total."""
        request, resume = self.request, self.resume
        start = resume.timestamp if resume is not None else request.start
        return queries.count_events(self.meter.id_, request.user_id, start, request.end)

    def _sent(self, record: dict[str, Any]) -> None:
        self.sent += 1
        self.last_id = record["id"]

    # -- NDJSON ----------------------------------------------------------------------

    def ndjson(
        self,
        before_page: PageHook | None = None,
        stop_after: float | None = None,
        *,
        trailer: bool = True,
    ) -> Iterator[bytes]:
        """NDJSON lines, one event each, then (unless `trailer` is false: the CLI, which
        writes a file to import) the trailer. With `stop_after` (seconds), stops at the
        first event past that time, or when a page's read is cut by its deadline (a slow
        query: `before_page` gives each read the time left), and says so in the trailer.

        The first chunk is empty and comes before any read: the answer's status and
        headers leave at once, however slow the first page is."""
        stop_at = time.monotonic() + stop_after if stop_after else None
        yield b""
        buffer: list[str] = []
        complete = True
        records = self.records(before_page)
        while True:
            try:
                record = next(records, None)
            except (DeadlineExceeded, core_exceptions.DeadlineExceeded):
                if stop_at is None:
                    raise
                complete = False  # a page's read ran out of the answer's time
                break
            if record is None:
                break
            buffer.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
            self._sent(record)
            if len(buffer) >= PAGE_SIZE:
                yield _lines(buffer)
                buffer.clear()
            if stop_at is not None and time.monotonic() >= stop_at:
                complete = False
                break
        if trailer:
            # Resume from the last event sent, or (nothing sent) from where this answer
            # itself started: the request's cursor, None for the export's start.
            cursor = self.last_id or self.request.cursor
            end = {"complete": complete, "count": self.sent, "cursor": cursor}
            if complete:
                end["cursor"] = None
            buffer.append(json.dumps({"export": end}, separators=(",", ":")))
        if buffer:
            yield _lines(buffer)

    # -- CSV -------------------------------------------------------------------------

    def csv_columns(self) -> list[str]:
        """The CSV header: the base columns, `dimensions.NAME` for each dimension the
        meter declares, one `metadata` column (each event's metadata as a JSON object),
        then `id` and `status`. Known from the meter alone, so the header costs no read
        and a meter of any size streams from its first page: metadata names are free per
        event, and a column each would need a pass over every event before the first row
        (which made a large meter's CSV export fail its request deadline)."""
        return [
            *BASE_COLUMNS,
            *(f"dimensions.{name}" for name in sorted(self.meter.dimensions)),
            "metadata",
            "id",
            "status",
            "amends",
            "amendedBy",
        ]

    def csv(
        self, columns: list[str], before_page: PageHook | None = None, *, header: bool = True
    ) -> Iterator[bytes]:
        """The header row (unless `header` is false: the CLI appending a resumed export
        to its file), then one row per event (RFC 4180, CRLF line ends)."""
        out = io.StringIO()
        writer = csv.writer(out)
        if header:
            writer.writerow(columns)
        for record in self.records(before_page):
            writer.writerow(_csv_row(record, columns))
            self._sent(record)
            if self.sent % PAGE_SIZE == 0:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()


def _with_links(page: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records with `amends` and `amendedBy` (None: no link) from one lookup of the
    links of the events that can have one: a replacement's idempotency key is
    `amend:<original id>`, and only a cancelled event was replaced (so an export of events
    never amended reads nothing more)."""
    maybe = [
        key_id
        for key_id, record in page
        if record["status"] == "cancelled" or str(record["idempotency"]).startswith("amend:")
    ]
    links: dict[int, tuple[str | None, str | None]] = {}
    for first in range(0, len(maybe), PAGE_SIZE):  # a lookup holds at most 1,000 keys
        links.update(amend.links_of(maybe[first : first + PAGE_SIZE]))
    records = []
    for key_id, record in page:
        record["amends"], record["amendedBy"] = links.get(key_id, (None, None))
        records.append(record)
    return records


def _lines(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _csv_row(record: dict[str, Any], columns: list[str]) -> list[str]:
    row = []
    for column in columns:
        group, _, name = column.partition(".")
        if name and group == "dimensions":
            value = record[group].get(name)
        elif column == "metadata":
            value = record[column] or None  # {} (none) as an empty cell
        else:
            value = record[column]
        row.append(_csv_cell(value))
    return row


def _csv_cell(value: Any) -> str:
    """A CSV cell: strings as they are, numbers in decimal, other metadata values (lists,
    objects, booleans) as their JSON text, absent as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _page_sizes(before_page: PageHook | None) -> Iterator[int]:
    """The size of each page's RPC, calling `before_page` right before each: `PAGE_SIZE`,
    doubled (up to `MAX_PAGE_SIZE`) after a page that took more than `SLOW_PAGE_SECONDS`
    from one request to the next. On Cloud Datastore a page costs in proportion to its
    size, so sizes stay small; on an emulator each query scans the whole kind, so fewer,
    bigger pages export a large meter several times faster. Memory stays bounded by
    `MAX_PAGE_SIZE` entities."""
    size = PAGE_SIZE
    asked_at: float | None = None
    while True:
        now = time.monotonic()
        if asked_at is not None and now - asked_at > SLOW_PAGE_SECONDS:
            size = min(MAX_PAGE_SIZE, size * 2)
        if before_page is not None:
            before_page()
        asked_at = time.monotonic()
        yield size


# -- opening an export: everything a 400 or 404 can answer, before the first byte -------


def open_export(request: ExportRequest, on_read: Callable[[], object] | None = None) -> Export:
    """The export of `request`, its meter and cursor checked (NotFound, ValidationFailed)."""
    try:
        meter = get_meter(request.meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None
    resume = _resume_point(request, meter) if request.cursor is not None else None
    return Export(request, meter, resume, on_read)


def _resume_point(request: ExportRequest, meter: Meter) -> Resume:
    """Where an export resumes: after the event the cursor names, which must be one of
    this export's (same meter, and user when one is asked, inside the period)."""
    invalid = ValidationFailed(
        "cursor must be the id of an event of this export (the last one received)",
        param="cursor",
    )
    key = ids.decode_key(
        request.cursor or "", kind=MeterEvent.KIND, namespace=ndb.get_context().get_namespace()
    )
    if key is None:
        raise invalid
    found = rpc.lookup([entities.key(MeterEvent.KIND, key.id())])
    if not found:
        raise invalid
    event = entities.decode_event(next(iter(found.values())))
    if event.meter_id != meter.id_ or (
        request.user_id is not None and event.user_id != request.user_id
    ):
        raise invalid
    if (request.start is not None and event.timestamp < request.start) or (
        request.end is not None and event.timestamp >= request.end
    ):
        raise invalid
    return Resume(event.timestamp, event.key_id)
