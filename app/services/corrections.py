"""Bulk corrections (issue 17): cancelling every event of a range, and the correction
records an org lists.

A range cancel names a meter, a period of event timestamps, optionally one user and
dimension values. Its record (`meter-correction`, keyed by a hash of that definition) is
also its progress: the position reached in the range's events (a Datastore cursor),
what was cancelled so far and how much value. Each page is ONE commit holding the
page's cancelled events, their rollups recomputed (user and org-wide, as a single
cancel does), the alert feed, and the record's new position; the commit first checks
in its transaction that the record still stands where the page started. So a page
is applied entirely or not at all, two runners never apply one page twice, and a
crash between pages leaves the record at the last committed page: running the same
request again continues from there, never cancelling twice, never skipping.

A pass cancels the range's live events recorded before it began (`PassStartedAt`);
events recorded while it runs are kept, wherever they fall. Running a complete
correction again starts a new pass over the range (a no-op unless events arrived
since). Events recorded longer ago than the cancellation window are left and counted
`expired`, as a single cancel answers them.

A request runs pages while its budget lasts (`Config.correction_budget_seconds`, and
never past a third of the deadline left), then answers the record, `running` or
`complete`: the caller repeats the request, or reads the record, until it is complete.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from flask import current_app, has_app_context
from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app import deadline
from app.core.slots import ceil_slot
from app.errors import NotFound, ValidationFailed
from app.models import Meter, utcnow
from app.services import cancel, paging, recompute, summary
from app.services.limits import counting as limit_counting
from app.services.limits import index as limit_index
from app.services.meters import get_meter
from app.services.webhooks import outbox
from app.storage import entities, queries, rollups, rpc, shards
from app.storage.entities import EntityPb, KeyPb, StoredEvent

KIND = "meter-correction"
#: Most mutations one commit may hold (Datastore's limit).
MAX_MUTATIONS = 500
#: The record and an alert feed ride along with each page's events and rollups.
_RESERVED = 2
#: Mutations a new rollup group may add for the limit counters of a meter with limits
#: (issue 16): at most a counter's 8 shards deleted and its seed, for a max meter.
LIMIT_COST = 9
#: Events a range cancel's query reads at once: its pages (each at most
#: `Config.correction_page_events` events and 500 mutations) are planned from them, one
#: query for several commits.
READ_AHEAD_EVENTS = 1000
#: Events one dry-run query batch reads.
_DRY_RUN_BATCH = 1000
#: Part of the request's time left below which no page starts: a page in flight needs
#: time to commit, and the answer time to leave.
_LEFT_FOR_THE_LAST_PAGE = 3

RANGE, AMEND = "cancel_range", "amend"
#: A record's id: `rc_` and a hash of the range (`RangeSpec.id`), or `am_` and the amended
#: event's key id in hex; anything else names no record (and no key is built from it).
_ID = re.compile(r"(rc|am)_[0-9a-f]{1,32}")
RUNNING, COMPLETE = "running", "complete"


@dataclass
class Correction:
    """A correction record: what was asked, by whom, and what it did so far."""

    id: str
    type: str
    status: str
    meter_id: str
    created_at: datetime
    updated_at: datetime
    key_prefix: str = ""
    user_id: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    filter: dict[str, list[str]] = field(default_factory=dict)
    event_id: str | None = None
    replacement_id: str | None = None
    completed_at: datetime | None = None
    pass_started_at: datetime | None = None
    passes: int = 1
    scanned: int = 0
    cancelled: int = 0
    value: int = 0
    expired: int = 0
    cursor: bytes = b""


@dataclass(frozen=True)
class RangeSpec:
    """What a range cancel cancels: the live events of `meter` with period_start <=
    timestamp < period_end, of `user_id` if given, whose dimensions hold one of the
    values `filter` lists for each name."""

    meter: Meter
    period_start: datetime
    period_end: datetime
    user_id: str | None
    filter: dict[str, list[str]]

    @property
    def id(self) -> str:
        """The record's id: the same definition is the same correction."""
        definition = [
            self.meter.id_,
            self.user_id,
            self.period_start.isoformat(),
            self.period_end.isoformat(),
            sorted(self.filter.items()),
        ]
        digest = hashlib.sha256(json.dumps(definition).encode()).hexdigest()
        return "rc_" + digest[:32]

    def matches(self, event: StoredEvent) -> bool:
        return all(event.dimensions.get(name) in values for name, values in self.filter.items())


@dataclass
class Tally:
    """What a dry run would cancel, or what one request did."""

    events: int = 0
    value: int = 0
    expired: int = 0
    scanned: int = 0


# -- the stored record -------------------------------------------------------------


def record_key(correction_id: str) -> KeyPb:
    return entities.key(KIND, correction_id)


def _set_text(entity: EntityPb, name: str, value: str | None) -> None:
    if value is not None:
        entities.set_string(entity, name, value, indexed=False)


def _set_moment(
    entity: EntityPb, name: str, moment: datetime | None, indexed: bool = False
) -> None:
    if moment is not None:
        entities.set_time(entity, name, moment)
        if not indexed:
            entity.properties[name].exclude_from_indexes = True


def encode(record: Correction) -> EntityPb:
    """The `meter-correction` entity of a record (only CreatedAt is indexed: the list)."""
    entity = entities.Entity()
    entity.key.CopyFrom(record_key(record.id))
    for name, text in (
        ("Type", record.type),
        ("Status", record.status),
        ("MeterId", record.meter_id),
        ("UserId", record.user_id),
        ("EventId", record.event_id),
        ("ReplacementId", record.replacement_id),
        ("KeyPrefix", record.key_prefix),
        ("Value", str(record.value)),  # exact at any size
        ("Filter_", json.dumps(record.filter, sort_keys=True)),
    ):
        _set_text(entity, name, text)
    _set_moment(entity, "CreatedAt", record.created_at, indexed=True)
    for name, moment in (
        ("UpdatedAt", record.updated_at),
        ("PeriodStart", record.period_start),
        ("PeriodEnd", record.period_end),
        ("CompletedAt", record.completed_at),
        ("PassStartedAt", record.pass_started_at),
    ):
        _set_moment(entity, name, moment)
    for name, number in (
        ("Passes", record.passes),
        ("Scanned", record.scanned),
        ("Cancelled", record.cancelled),
        ("Expired", record.expired),
    ):
        entities.set_int(entity, name, number, indexed=False)
    entity.properties["Cursor"].blob_value = record.cursor
    entity.properties["Cursor"].exclude_from_indexes = True
    return entity


def decode(entity: EntityPb) -> Correction:
    props = entity.properties

    def text(name: str) -> str | None:
        value = props.get(name)
        return value.string_value if value is not None else None

    def number(name: str) -> int:
        value = props.get(name)
        return value.integer_value if value is not None else 0

    cursor = props.get("Cursor")
    return Correction(
        id=entity.key.path[-1].name,
        type=text("Type") or RANGE,
        status=text("Status") or RUNNING,
        meter_id=text("MeterId") or "",
        user_id=text("UserId"),
        event_id=text("EventId"),
        replacement_id=text("ReplacementId"),
        key_prefix=text("KeyPrefix") or "",
        value=int(text("Value") or 0),
        filter=json.loads(text("Filter_") or "{}"),
        created_at=entities.get_time(entity, "CreatedAt"),  # type: ignore[arg-type]
        updated_at=entities.get_time(entity, "UpdatedAt"),  # type: ignore[arg-type]
        period_start=entities.get_time(entity, "PeriodStart"),
        period_end=entities.get_time(entity, "PeriodEnd"),
        completed_at=entities.get_time(entity, "CompletedAt"),
        pass_started_at=entities.get_time(entity, "PassStartedAt"),
        passes=number("Passes"),
        scanned=number("Scanned"),
        cancelled=number("Cancelled"),
        expired=number("Expired"),
        cursor=cursor.blob_value if cursor is not None else b"",
    )


def _read(correction_id: str, transaction: bytes | None = None) -> Correction | None:
    key_pb = record_key(correction_id)
    found = rpc.lookup([key_pb], transaction).get(key_pb.SerializeToString())
    return decode(found) if found is not None else None


def get_correction(correction_id: str) -> Correction:
    """One correction record of the caller's org; NotFound otherwise."""
    found = _read(correction_id) if _ID.fullmatch(correction_id) else None
    if found is None:
        raise NotFound("no such correction", param="id")
    return found


def list_corrections(limit: int, cursor: str | None) -> tuple[list[Correction], str | None]:
    """A page of the org's correction records, newest first, and the next page's cursor."""
    namespace = ndb.get_context().get_namespace() or ""
    bound = f"{namespace}\0{KIND}\0-CreatedAt".encode()
    start = paging.open_bytes(cursor, bound) if cursor is not None else b""
    query = queries.build(KIND, [])
    order = query.order.add()
    order.property.name = "CreatedAt"
    order.direction = q.PropertyOrder.Direction.DESCENDING
    query.limit.value = limit + 1
    batch = rpc.run_query_batch(query, ndb.get_context().get_namespace(), start)
    results = list(batch.entity_results)
    page = [decode(result.entity) for result in results[:limit]]
    if len(results) > limit:
        return page, paging.seal_bytes(results[limit - 1].cursor, bound)
    return page, None


# -- a range cancel ----------------------------------------------------------------


def range_spec(
    meter_id: str,
    period_start: datetime,
    period_end: datetime,
    user_id: str | None,
    filters: dict[str, list[str]],
) -> RangeSpec:
    """The spec of a range cancel, its meter found and its filter checked against the
    meter's dimensions (400 naming `filter.NAME`)."""
    try:
        meter = get_meter(meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None
    declared = set(meter.dimensions)
    for name in sorted(filters):
        if name not in declared:
            raise ValidationFailed(
                f"filter.{name}: the meter declares no dimension {name!r}", param=f"filter.{name}"
            )
    normalized = {name: sorted(set(values)) for name, values in filters.items()}
    return RangeSpec(meter, period_start, period_end, user_id, normalized)


def _judge(
    spec: RangeSpec, event: StoredEvent, since: datetime, window: timedelta, now: datetime
) -> str:
    """What a pass that began at `since` does with one event of the range: cancel, expired,
    or skip (cancelled already, not matching, or recorded after the pass began)."""
    if not event.live or not spec.matches(event):
        return "skip"
    if event.created_at is not None and event.created_at > since:
        return "skip"
    if event.created_at is not None and event.created_at < now - window:
        return "expired"
    return "cancel"


# -- issue 17, session 8: a dry run costs what a summary costs ------------------------

#: Added to the cancellation window when splitting a dry run's range (`_old_before`):
#: events on the old side of the split are read one by one, the rest counted from
#: rollups, so a wider old side is only slower, never wrong.
_SPLIT_MARGIN = timedelta(minutes=15)


@dataclass
class DryRun:
    """A dry run's answer: the tally so far; complete, or the cursor to resume it."""

    tally: Tally
    complete: bool
    cursor: str | None
    #: How the recent part of the range was counted: "rollups" (the summary engine's
    #: cells, plus the raw events of unaligned edges) or "events" (read one by one).
    source: str


@dataclass
class _DryState:
    """Where a dry run stands between requests (sealed in its cursor): the instant it
    judges by, the split between the old part (read event by event) and the part counted
    from rollups, the position in the old part's events, and the tally so far."""

    now: datetime
    split: datetime
    source: str
    position: bytes = b""
    tally: Tally = field(default_factory=Tally)


def dry_run(
    spec: RangeSpec,
    window: timedelta,
    lead: timedelta,
    budget_seconds: float,
    cursor: str | None = None,
) -> DryRun:
    """How many events, and how much value, a range cancel started now would cancel (and
    how many it would leave as expired), exact and by the run's own rules (`_judge`).

    The range splits at `_old_before`: every event after it was recorded inside the
    cancellation window, so that part is the live events the rollups hold, counted from
    the summary engine's cells (rollups of whole slots, raw events at unaligned edges),
    filtered by series: its cost is the days and series of the range, never its events.
    Older events (maybe expired), and every event of a meter whose rollups keep no sums
    (only sum and avg meters' do), are read page by page while the request's budget
    lasts; past it the answer is partial, with a cursor that resumes it."""
    state = (
        _open_dry_cursor(spec, cursor) if cursor is not None else _start_dry_run(spec, window, lead)
    )
    old_end = min(state.split, spec.period_end)
    started = time.monotonic()
    while old_end > spec.period_start:
        deadline.check()
        found, state.position, finished = queries.events_page(
            spec.meter.id_,
            spec.user_id,
            spec.period_start,
            old_end,
            state.position,
            _DRY_RUN_BATCH,
        )
        for entity, _after in found:
            event = entities.decode_event(entity)
            state.tally.scanned += 1
            verdict = _judge(spec, event, state.now, window, state.now)
            if verdict == "cancel":
                state.tally.events += 1
                state.tally.value += event.value
            elif verdict == "expired":
                state.tally.expired += 1
        if finished:
            break
        if not _time_for_a_page(started, budget_seconds):
            return DryRun(state.tally, False, _seal_dry_cursor(spec, state), state.source)
    return DryRun(state.tally, True, None, state.source)


def _old_before(now: datetime, window: timedelta, lead: timedelta) -> datetime:
    """The first slot boundary after which no event can be past the cancellation window:
    an event is stamped at most `lead` after it is recorded, so one stamped after
    now - window + lead was recorded inside the window (backfilled ones later still)."""
    return ceil_slot(now - window + lead + _SPLIT_MARGIN)


def _start_dry_run(spec: RangeSpec, window: timedelta, lead: timedelta) -> _DryState:
    """A new dry run: its recent part counted from rollups where the meter's rollups keep
    sums (else, or when a slot's sum must first be folded, everything is read as events)."""
    now = utcnow()
    split = max(spec.period_start, _old_before(now, window, lead))
    if split >= spec.period_end or not rollups.adds_values(spec.meter.aggregation_type):
        return _DryState(now, spec.period_end, "events")
    try:
        counted = _count_from_rollups(spec, split, spec.period_end)
    except recompute.Unsettled:  # a sum at an int64 bound: the events are exact
        return _DryState(now, spec.period_end, "events")
    return _DryState(now, split, "rollups", tally=counted)


def _count_from_rollups(spec: RangeSpec, start: datetime, end: datetime) -> Tally:
    """Count and value of the live matching events stamped in [start, end), from the
    summary engine's cells: the org-wide rollups when the range names no user and the
    meter's are complete, else the user's (or every user's). A series holds one
    combination of dimension values, so the filter is applied per series."""
    source = spec.user_id
    if source is None and rollups.org_wide(spec.meter.key.id()):
        source = shards.ORG_USER
    tally = Tally()
    for series, _slot, cell in summary.cells(spec.meter, source, start, end):
        if spec.filter:
            values = dict(series.dimensions)
            if not all(values.get(name) in wanted for name, wanted in spec.filter.items()):
                continue
        if isinstance(cell, list):  # a compacted slot, packed: count, sum, ...
            tally.events += cell[0]
            tally.value += cell[1]
        else:
            tally.events += cell.count
            tally.value += cell.sum
    return tally


def _dry_bound(spec: RangeSpec) -> bytes:
    namespace = ndb.get_context().get_namespace() or ""
    return f"{namespace}\0{KIND}\0dry-run\0{spec.id}".encode()


def _seal_dry_cursor(spec: RangeSpec, state: _DryState) -> str:
    raw = json.dumps(
        {
            "now": state.now.isoformat(),
            "split": state.split.isoformat(),
            "source": state.source,
            "position": base64.b64encode(state.position).decode(),
            "tally": [
                state.tally.events,
                str(state.tally.value),
                state.tally.expired,
                state.tally.scanned,
            ],
        }
    ).encode()
    return paging.seal_bytes(raw, _dry_bound(spec))


def _open_dry_cursor(spec: RangeSpec, cursor: str) -> _DryState:
    """The state a dry run's cursor holds; 400 `cursor` unless this deployment sealed it
    for this org and this very range (`paging.open_bytes`)."""
    held = json.loads(paging.open_bytes(cursor, _dry_bound(spec)))
    events, value, expired, scanned = held["tally"]
    return _DryState(
        datetime.fromisoformat(held["now"]),
        datetime.fromisoformat(held["split"]),
        held["source"],
        base64.b64decode(held["position"]),
        Tally(events, int(value), expired, scanned),
    )


def _open_pass(spec: RangeSpec, key_prefix: str) -> Correction:
    """The correction's record, created on its first request; a complete one starts a
    new pass over the range. One transaction, so racing first requests make one."""

    def attempt() -> Correction:
        with rpc.transaction() as transaction:
            now = utcnow()
            record = _read(spec.id, transaction)
            if record is not None and record.status == RUNNING:
                rpc.rollback(transaction)
                return record
            if record is None:
                record = Correction(
                    id=spec.id,
                    type=RANGE,
                    status=RUNNING,
                    meter_id=spec.meter.id_,
                    user_id=spec.user_id,
                    period_start=spec.period_start,
                    period_end=spec.period_end,
                    filter=spec.filter,
                    key_prefix=key_prefix,
                    created_at=now,
                    updated_at=now,
                    pass_started_at=now,
                )
            else:
                record = replace(
                    record,
                    status=RUNNING,
                    cursor=b"",
                    passes=record.passes + 1,
                    pass_started_at=now,
                    completed_at=None,
                    updated_at=now,
                )
            rpc.commit([rpc.Mutation(upsert=encode(record))], transaction)
            return record

    return rpc.retry_aborted(attempt, "opening the correction")


@dataclass
class _Page:
    """The events a page cancels and how far it reaches."""

    position: bytes
    finished: bool
    cancelling: dict[bytes, StoredEvent]
    keys: dict[cancel.Group, list[KeyPb]]
    tally: Tally


#: Rollup keys a page lists for one day and kind at most; a busier day's groups list
#: their shards one query each, as a single cancel does.
_DAY_KEYS_MOST = 2000


class _ShardKeys:
    """The shard keys of a page's rollup groups (`cancel.group_keys_of`'s answer), listed
    with one keys-only query per day and kind (every series of the meter that day) instead
    of one per (series, day): a page of 200 events spread over 50 users made about 70
    such queries, each a scan of the whole kind on the emulators."""

    def __init__(self, meter: Meter):
        self.meter = meter
        self.by_day: dict[tuple[bool, int], dict[str, list[KeyPb]] | None] = {}

    def of(self, group: cancel.Group) -> list[KeyPb]:
        _meter_id, series, day = group
        org_wide = shards.is_org(series)
        if (org_wide, day) not in self.by_day:
            self.by_day[org_wide, day] = self._list(org_wide, day)
        names = self.by_day[org_wide, day]
        if names is None:  # too many series that day: the group's own query
            return cancel.group_keys_of(group)
        first = rollups.key(self.meter.key.id(), series, day)
        name = first.path[-1].name
        return [first, *names.get(name, [])]

    def _list(self, org_wide: bool, day: int) -> dict[str, list[KeyPb]] | None:
        """Shard keys (k >= 1) of the day by their shard 0's key name; None past the cap."""
        keys = queries.rollup_keys_of_day(self.meter.id_, org_wide, day, _DAY_KEYS_MOST)
        if keys is None:
            return None
        names: dict[str, list[KeyPb]] = {}
        for key_pb in keys:
            parts = key_pb.path[-1].name.split(".")  # series.meter.day[.shard]
            if len(parts) > 3:
                names.setdefault(".".join(parts[:3]), []).append(key_pb)
        return names


@dataclass
class _ReadAhead:
    """Events of the range read by one query beyond the page planned from them, each with
    the position after it: the request's next page plans from them instead of querying
    again (on the emulators every query scans the whole kind; on Cloud Datastore it saves
    an RPC per page). Read outside any transaction, like every plan: each page's commit
    looks its events up again."""

    found: list[tuple[EntityPb, bytes]]
    end_position: bytes
    finished: bool

    def after(self, position: bytes) -> _ReadAhead | None:
        """What this read holds after `position` (a page's end), or None: nothing left, or
        `position` is none of its events' (another runner moved the record)."""
        for index, (_entity, after) in enumerate(self.found):
            if after == position:
                rest = self.found[index + 1 :]
                return _ReadAhead(rest, self.end_position, self.finished) if rest else None
        return None


def _read_ahead(spec: RangeSpec, record: Correction, limit: int) -> _ReadAhead:
    found, end_position, finished = queries.events_page(
        spec.meter.id_,
        spec.user_id,
        spec.period_start,
        spec.period_end,
        record.cursor,
        max(limit, READ_AHEAD_EVENTS),
    )
    return _ReadAhead(found, end_position, finished)


def _plan(
    spec: RangeSpec,
    record: Correction,
    window: timedelta,
    limit: int,
    read: _ReadAhead | None = None,
) -> tuple[_Page, _ReadAhead | None]:
    """From the next events of the range (`read`, if it starts at the record's position,
    else one query), keep the longest prefix of at most `limit` events whose cancellation
    fits one commit (events, every shard of their rollups, the feed and the record); and
    what the read holds beyond it."""
    if read is None:
        read = _read_ahead(spec, record, limit)
    found = read.found[:limit]
    whole = len(found) == len(read.found)
    now = utcnow()
    since = record.pass_started_at or now
    page = _Page(
        read.end_position if whole else found[-1][1],
        read.finished and whole,
        {},
        {},
        Tally(),
    )
    mutations = _RESERVED
    limited = bool(limit_index.specs_for({spec.meter.key.id()}))
    shard_keys = _ShardKeys(spec.meter)
    for index, (entity, after) in enumerate(found):
        event = entities.decode_event(entity)
        verdict = _judge(spec, event, since, window, now)
        if verdict == "cancel":
            cost = 1
            new_groups = [g for g in cancel.groups_of(event) if g not in page.keys]
            listed = {group: shard_keys.of(group) for group in new_groups}
            cost += sum(max(1, len(keys)) for keys in listed.values())
            if limited:  # a counter per (user, period) at most: its shards and seed, a max's
                cost += LIMIT_COST * len(new_groups)
            if mutations + cost > MAX_MUTATIONS:
                # The rest waits for the next page, from the position before this event.
                page.position = found[index - 1][1] if index else record.cursor
                page.finished = False
                return page, read.after(page.position) if index else read
            mutations += cost
            page.keys.update(listed)
            page.cancelling[entity.key.SerializeToString()] = event
        elif verdict == "expired":
            page.tally.expired += 1
        page.tally.scanned += 1
        page.position = after
    if whole:
        return page, None
    return page, read.after(page.position)


def _commit_page(record: Correction, page: _Page) -> tuple[Correction, Tally] | None:
    """Apply a planned page in one commit; None when the record moved meanwhile (another
    runner applied this page) or the page no longer fits one commit: the caller reads the
    record again and plans anew."""
    with rpc.transaction() as transaction:
        own_key = record_key(record.id)
        event_keys = [stored.entity.key for stored in page.cancelling.values()]
        found = rpc.lookup([own_key, *event_keys], transaction)
        current = found.get(own_key.SerializeToString())
        if current is None or _moved(record, decode(current)):
            rpc.rollback(transaction)
            return None
        cancelling = {}
        for ident in page.cancelling:
            fresh = found.get(ident)  # cancelled or amended since the plan: not again
            if fresh is not None and not entities.decode_event(fresh).deleted:
                cancelling[ident] = entities.decode_event(fresh)
        now = utcnow()
        done = Tally(
            events=len(cancelling),
            value=sum(event.value for event in cancelling.values()),
            expired=page.tally.expired,
            scanned=page.tally.scanned,
        )
        updated = replace(
            record,
            cursor=page.position,
            scanned=record.scanned + done.scanned,
            cancelled=record.cancelled + done.events,
            value=record.value + done.value,
            expired=record.expired + done.expired,
            updated_at=now,
            status=COMPLETE if page.finished else RUNNING,
            completed_at=now if page.finished else None,
        )
        mutations = [cancel.cancelled_copy(event, now) for event in cancelling.values()]
        mutations += cancel.rollup_repairs(cancelling, transaction, known_keys=page.keys)
        feeds = cancel.alert_feeds(cancelling)
        mutations += feeds
        # issue 16, limits: the counters of meters with limits (planned: LIMIT_COST)
        mutations += limit_counting.cancel_mutations(list(cancelling.values()), transaction)
        mutations.append(rpc.Mutation(update=encode(updated)))
        if len(mutations) > MAX_MUTATIONS:
            # A shard appeared after the plan listed them (a concurrent batch): plan again,
            # with the shards listed anew.
            rpc.rollback(transaction)
            return None
        rpc.commit(mutations, transaction)
    if feeds:
        outbox.wake()
    return updated, done


def _moved(planned: Correction, stored: Correction) -> bool:
    return (
        stored.status != RUNNING
        or stored.cursor != planned.cursor
        or stored.passes != planned.passes
    )


def run_page(
    spec: RangeSpec,
    record: Correction,
    window: timedelta,
    limit: int,
    read: _ReadAhead | None = None,
) -> tuple[Correction, Tally, _ReadAhead | None]:
    """One page of a running correction: (the record after it, what this page did, the
    events read beyond it for the next page)."""
    page, rest = _plan(spec, record, window, limit, read)

    def attempt() -> tuple[Correction, Tally] | None:
        return _commit_page(record, page)

    applied = rpc.retry_aborted(attempt, "range cancellation")
    if applied is None:
        return _read(record.id) or record, Tally(), None
    return applied[0], applied[1], rest


def _time_for_a_page(started: float, budget_seconds: float) -> bool:
    """Whether this request may start another page: within its budget, and with more
    than a third of its deadline left (none outside a request: the CLI's, the tests')."""
    if time.monotonic() - started >= budget_seconds:
        return False
    left = deadline.remaining()
    return left is None or left > _total_deadline() / _LEFT_FOR_THE_LAST_PAGE


def _total_deadline() -> float:
    if has_app_context():
        return float(current_app.config["METERING"].request_deadline_seconds)
    return 0.0


def cancel_range(
    spec: RangeSpec,
    window: timedelta,
    key_prefix: str,
    page_events: int,
    budget_seconds: float,
) -> tuple[Correction, Tally]:
    """Open (or continue) the range's correction and run pages of it while the request's
    budget lasts (always at least one): the record after them and what they did."""
    started = time.monotonic()
    record = _open_pass(spec, key_prefix)
    done = Tally()
    first = True
    read: _ReadAhead | None = None
    while record.status == RUNNING and (first or _time_for_a_page(started, budget_seconds)):
        first = False
        record, tally, read = run_page(spec, record, window, page_events, read)
        done.events += tally.events
        done.value += tally.value
        done.expired += tally.expired
        done.scanned += tally.scanned
    return record, done
