"""Meters of the current org: create, read, list, change and archive.

Event names are unique among an org's active meters. The check and the write
happen in one transaction whose ancestor query covers every meter of the org
(they share the root `synckey/1`), so of two concurrent creates with one event
name exactly one commits; the other sees the first and answers 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.cloud import ndb

from app.errors import Conflict, NotFound
from app.models import Meter, MeterEvent, root_key, transactional
from app.models.webhook import WebhookEndpoint
from app.schemas.responses import Meter as MeterAnswer
from app.services import paging
from app.services.webhooks import outbox
from app.storage import first_events, rollups

LOCKED_ONCE_USED = ("eventName", "aggregationType", "dimensions", "uniqueBy")
_FIELDS = {
    "name": "name",
    "eventName": "event_name",
    "aggregationType": "aggregation_type",
    "currency": "currency",
    "dimensions": "dimensions",
    "metadata": "metadata",
    "uniqueBy": "unique_by",
    "allowBackfill": "allow_backfill",
}


def _active_with_event_name(event_name: str) -> Meter | None:
    found = Meter.query_org(Meter.event_name == event_name, Meter.deleted == False).fetch(1)  # noqa: E712
    return found[0] if found else None


def _taken(event_name: str) -> Conflict:
    return Conflict(
        f"an active meter with eventName {event_name!r} already exists",
        param="eventName",
        code="event_name_taken",
    )


def _announce(event_type: str, targets: list[WebhookEndpoint], meter: Meter) -> None:
    """Put the `meter.*` messages of this change in the caller's transaction (issue 14):
    stored with the change or not at all. The id is the meter's and the change's time, so
    a transaction retried by NDB makes the same messages."""
    if not targets:
        return
    event_id = outbox.event_id(event_type, meter.id_, meter.updated_at.isoformat())
    data = MeterAnswer().dump(meter)
    ndb.put_multi(outbox.messages(targets, event_type, event_id, data, meter.updated_at))


def create_meter(fields: dict[str, Any], along: Callable[[Meter], None] | None = None) -> Meter:
    """Create a meter; 409 if its event name is taken by an active meter. `along` writes
    what must commit with the meter (its OpenMeter mapping) inside the same transaction;
    callers never wrap this in a transaction of their own: the reads and writes made
    before it (announcement targets, the org-wide marker) would contend with it."""
    key = Meter.allocate_ids(1, parent=root_key())[0]
    targets = outbox.targets("meter.created")  # issue 14: read before the transaction
    # Before the meter exists, so before it can have events: its org-wide rollups hold
    # all of them. A create refused below leaves a marker of a key no meter will have.
    rollups.mark_org_wide(key.id())
    first_events.mark_new(key.id())  # issue 14: no event yet (alert seeding)

    @transactional(retries=8)
    def create() -> Meter:
        if _active_with_event_name(fields["eventName"]) is not None:
            raise _taken(fields["eventName"])
        meter = Meter(key=key, **{_FIELDS[name]: value for name, value in fields.items()})
        meter.create()
        if along is not None:
            along(meter)
        _announce("meter.created", targets, meter)
        return meter

    meter = create()
    if targets:
        outbox.wake()
    return meter


def get_meter(public_id: str, *, include_archived: bool = True) -> Meter:
    """The meter with this id in the current org; 404 otherwise."""
    meter: Meter | None = Meter.get_by_public_id(public_id)
    if meter is None or (meter.deleted and not include_archived):
        raise NotFound("meter not found", param="id", code="meter_not_found")
    return meter


# (namespace, event name) -> meter key: a key lookup is far cheaper than the query, and
# the looked-up meter is checked, so a stale entry (renamed, archived) only costs the query.
_KEYS_BY_EVENT_NAME: dict[tuple[str, str], ndb.Key] = {}


def find_by_event_name(event_name: str) -> Meter | None:
    """The active meter with this event name, if any."""
    cache_key = (ndb.get_context().get_namespace() or "", event_name)
    known = _KEYS_BY_EVENT_NAME.get(cache_key)
    if known is not None:
        meter: Meter | None = known.get()
        if meter is not None and meter.event_name == event_name and not meter.deleted:
            return meter
        _KEYS_BY_EVENT_NAME.pop(cache_key, None)
    meter = _active_with_event_name(event_name)
    if meter is not None:
        if len(_KEYS_BY_EVENT_NAME) > 10_000:
            _KEYS_BY_EVENT_NAME.clear()
        _KEYS_BY_EVENT_NAME[cache_key] = meter.key
    return meter


def all_meters() -> list[Meter]:
    """Every meter of the org, archived ones included."""
    return cast(list[Meter], Meter.query_org().fetch())


def list_meters(limit: int, cursor: str | None) -> tuple[list[Meter], str | None]:
    """One page of the org's meters, oldest first, and the cursor of the next page."""
    return paging.page(Meter.query_org(), limit, cursor)


def has_events(meter: Meter) -> bool:
    """Whether any event was recorded for this meter."""
    return bool(MeterEvent.query_org(MeterEvent.meter_id == meter.id_).fetch(1, keys_only=True))


def update_meter(public_id: str, changes: dict[str, Any]) -> Meter:
    """Change a meter; event name, aggregation and dimensions only while it has no events."""
    targets = outbox.targets("meter.updated")  # issue 14: read before the transaction

    @transactional(retries=8)
    def update() -> Meter:
        meter = get_meter(public_id)
        structural = [
            name
            for name in LOCKED_ONCE_USED
            if name in changes and changes[name] != getattr(meter, _FIELDS[name])
        ]
        if structural and has_events(meter):
            raise Conflict(
                f"{structural[0]} cannot change once the meter has events",
                param=structural[0],
                code="meter_in_use",
            )
        new_name = changes.get("eventName")
        if new_name and new_name != meter.event_name and not meter.deleted:
            other = _active_with_event_name(new_name)
            if other is not None and other.key != meter.key:
                raise _taken(new_name)
        for name, value in changes.items():
            setattr(meter, _FIELDS[name], value)
        if meter.aggregation_type != "unique_count" and "uniqueBy" not in changes:
            # mypy: an ndb property takes its value (the class sees the descriptor)
            meter.unique_by = None  # type: ignore[assignment]
        meter.update()
        _announce("meter.updated", targets, meter)
        return meter

    meter = update()
    if targets:
        outbox.wake()
    return meter


def archive_meter(public_id: str) -> Meter:
    """Archive a meter: it refuses new events and keeps its history and summaries."""
    targets = outbox.targets("meter.archived")  # issue 14: read before the transaction

    @transactional(retries=8)
    def archive() -> Meter:
        meter = get_meter(public_id)
        if not meter.deleted:
            meter.delete()
            _announce("meter.archived", targets, meter)
        return meter

    meter = archive()
    if targets:
        outbox.wake()
    return meter
