"""Amending a recorded event (issue 17): its replacement in, the original out, in ONE
commit, so a summary never counts both and never neither.

The commit holds the original marked cancelled (kept for audit), the replacement
inserted, every rollup both count in rewritten (the original's slots recomputed as a
cancel does, the replacement merged in: `recompute.rewritten`'s `added`), the alert
feed, the links both ways and the correction record.

- **A deterministic replacement.** Its idempotency key is `amend:<original id>`, so its
  key id is fixed by the original (`events.idempotent_id`): a retried amend addresses
  the same replacement, finds the original amended by it, and answers `duplicate` when
  it asked the same change (409 `already_amended` otherwise). The key also finds the
  replacement by `idempotency` in the event log, and cancels it by meter and key.
- **Links in a kind of their own** (`meter-event-link`, keyed by the event's key id,
  `Amends` and `AmendedBy`), since the Go side reads `meter-event` with the original's
  property set: the event log reads them for its page in one lookup.
- **What is refused.** An event amended already (409 `already_amended`, naming its
  replacement: amend that one), a cancelled one (409 `event_cancelled`), one older than
  the cancellation window (409 `expired`), one of an archived meter (409
  `meter_archived`), an amendment that changes nothing (400). A new timestamp must lie
  in the live window, as a recorded one; an unchanged one may be older (a backfill).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from google.cloud import ndb

from app.config import Config
from app.core.cells import Cell
from app.core.slots import day_and_slot
from app.errors import Conflict, NotFound, ValidationFailed
from app.models import MeterEvent, ids, root_key, utcnow
from app.services import cancel, corrections
from app.services.events import idempotent_id
from app.services.limits import counting as limit_counting
from app.services.meters import get_meter
from app.services.webhooks import outbox
from app.storage import entities, rpc
from app.storage.entities import EntityPb, StoredEvent

LINK_KIND = "meter-event-link"


@dataclass(frozen=True)
class Amended:
    """An amend's answer: created or duplicate (a retry), the two events, the record."""

    status: str
    original: Any
    replacement: Any
    correction_id: str


# -- links -------------------------------------------------------------------------


def _link_key(key_id: int) -> Any:
    return entities.key(LINK_KIND, key_id)


def _link(entity: EntityPb | None) -> tuple[str | None, str | None]:
    """(amends, amendedBy) of a link entity."""
    if entity is None:
        return None, None
    props = entity.properties
    amends, by = props.get("Amends"), props.get("AmendedBy")
    return (amends.string_value if amends else None), (by.string_value if by else None)


def _link_entity(key_id: int, amends: str | None, amended_by: str | None, now: datetime) -> Any:
    entity = entities.Entity()
    entity.key.CopyFrom(_link_key(key_id))
    for name, value in (("Amends", amends), ("AmendedBy", amended_by)):
        if value is not None:
            entities.set_string(entity, name, value, indexed=False)
    entities.set_time(entity, "UpdatedAt", now)
    entity.properties["UpdatedAt"].exclude_from_indexes = True
    return rpc.Mutation(upsert=entity)


def links_of(key_ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """key id -> (amends, amendedBy) of the events that have links: one lookup."""
    if not key_ids:
        return {}
    keys = [_link_key(key_id) for key_id in key_ids]
    found = rpc.lookup(keys)
    return {
        key_id: _link(found[key_pb.SerializeToString()])
        for key_id, key_pb in zip(key_ids, keys)
        if key_pb.SerializeToString() in found
    }


def with_links(events: list[MeterEvent]) -> list[MeterEvent]:
    """The event log's events, each with `amends` and `amended_by` set (None: no link)."""
    links = links_of([event.key.id() for event in events])
    for event in events:
        event.amends, event.amended_by = links.get(event.key.id(), (None, None))
    return events


# -- amending ----------------------------------------------------------------------


def _public_id(key_id: int) -> str:
    return ids.encode_key(ndb.Key(MeterEvent.KIND, key_id, parent=root_key()))


def _listed(event: StoredEvent, amends: str | None, amended_by: str | None) -> SimpleNamespace:
    """An event as the event log lists it (`responses.ListedEvent`)."""
    entity = event.entity
    return SimpleNamespace(
        id_=event.public_id,
        meter_id=event.meter_id,
        user_id=event.user_id,
        value=event.value,
        timestamp=event.timestamp,
        idempotency=entity.properties["Idempotency"].string_value
        if "Idempotency" in entity.properties
        else "",
        dimensions=event.dimensions,
        metadata=entities.read_shadow(entity, "Metadata_", dict),
        deleted=event.deleted,
        created_at=event.created_at,
        updated_at=entities.get_time(entity, "UpdatedAt"),
        amends=amends,
        amended_by=amended_by,
    )


@dataclass(frozen=True)
class _Change:
    """The replacement's payload."""

    value: int
    dimensions: dict[str, str]
    timestamp: datetime

    def same_as(self, event: StoredEvent) -> bool:
        return (
            event.value == self.value
            and event.dimensions == self.dimensions
            and event.timestamp == self.timestamp
        )


def _change(original: StoredEvent, changes: dict[str, Any], config: Config) -> _Change:
    """The replacement's payload: the original's, with the changes; checked as a recorded
    event's would be (400 naming the field)."""
    try:
        meter = get_meter(original.meter_id)
    except NotFound:
        raise Conflict(
            "the event's meter is not one of this service's", param="id", code="meter_not_found"
        ) from None
    if meter.deleted:
        raise Conflict(
            "the event's meter is archived: its events cannot change",
            param="id",
            code="meter_archived",
        )
    dimensions = dict(changes.get("dimensions", original.dimensions))
    declared = set(meter.dimensions)
    for name in sorted(dimensions):
        if name not in declared:
            raise ValidationFailed(
                f"dimensions.{name}: the meter declares no dimension {name!r}",
                param=f"dimensions.{name}",
            )
    now = utcnow()
    timestamp = changes.get("timestamp", original.timestamp)
    if "timestamp" in changes and not (
        now - config.max_event_age <= timestamp <= now + config.max_event_lead
    ):
        raise ValidationFailed(
            "timestamp must lie in the live window, as a recorded event's", param="timestamp"
        )
    change = _Change(changes.get("value", original.value), dimensions, timestamp)
    if change.same_as(original):
        raise ValidationFailed(
            "the amendment changes nothing: give a new value, dimensions or timestamp",
            param="value",
            code="nothing_to_amend",
        )
    return change


def _replacement(original: StoredEvent, change: _Change, now: datetime) -> StoredEvent:
    """The replacement event (decoded, with its protobuf) for the original."""
    idempotency = f"amend:{original.public_id}"
    key_id = idempotent_id(original.meter_id, idempotency)
    entity = entities.Entity()
    entities.fill_event(
        entity,
        entities.event_template(now),
        key_id=key_id,
        public_id=_public_id(key_id),
        meter_id=original.meter_id,
        user_id=original.user_id,
        value=change.value,
        timestamp=change.timestamp,
        idempotency=idempotency,
        dimensions=change.dimensions,
        metadata=entities.read_shadow(original.entity, "Metadata_", dict),
    )
    return entities.decode_event(entity)


def _added(replacement: StoredEvent) -> dict[cancel.Group, dict[int, list[Cell]]]:
    slot = day_and_slot(replacement.timestamp)[1]
    return {group: {slot: [replacement.cell()]} for group in cancel.groups_of(replacement)}


def _refuse_amended(original: StoredEvent, amended_by: str | None) -> None:
    if amended_by:
        raise Conflict(
            f"event {original.public_id} was amended already; its replacement is "
            f"{amended_by}: amend that one",
            param="id",
            code="already_amended",
        )
    raise Conflict(
        f"event {original.public_id} is cancelled: record a new event instead",
        param="id",
        code="event_cancelled",
    )


def _attempt(original_key: Any, change: _Change, window: timedelta, key_prefix: str) -> Amended:
    with rpc.transaction() as transaction:
        now = utcnow()
        found = rpc.lookup([original_key], transaction)
        if original_key.SerializeToString() not in found:
            raise NotFound("no such event", param="id")
        original = entities.decode_event(found[original_key.SerializeToString()])
        replacement = _replacement(original, change, now)
        record_id = "am_" + format(original.key_id, "x")
        keys = [
            replacement.entity.key,
            _link_key(original.key_id),
            _link_key(replacement.key_id),
        ]
        more = rpc.lookup(keys, transaction)
        stored_replacement = more.get(keys[0].SerializeToString())
        amends, amended_by = _link(more.get(keys[1].SerializeToString()))
        if original.deleted:
            if amended_by == replacement.public_id and stored_replacement is not None:
                earlier = entities.decode_event(stored_replacement)
                if change.same_as(earlier):
                    rpc.rollback(transaction)
                    _, later = _link(more.get(keys[2].SerializeToString()))
                    return Amended(
                        "duplicate",
                        _listed(original, amends, amended_by),
                        _listed(earlier, original.public_id, later),
                        record_id,
                    )
            _refuse_amended(original, amended_by)
        if stored_replacement is not None:
            raise Conflict(
                f"an event with idempotency key amend:{original.public_id} exists already",
                param="id",
                code="conflict",
            )
        if original.created_at is not None and original.created_at < now - window:
            raise Conflict(
                "the event was recorded before the cancellation window: it cannot change",
                param="id",
                code="expired",
            )
        cancelling = {original_key.SerializeToString(): original}
        record = corrections.Correction(
            id=record_id,
            type=corrections.AMEND,
            status=corrections.COMPLETE,
            meter_id=original.meter_id,
            user_id=original.user_id,
            event_id=original.public_id,
            replacement_id=replacement.public_id,
            key_prefix=key_prefix,
            created_at=now,
            updated_at=now,
            completed_at=now,
            scanned=1,
            cancelled=1,
            value=original.value,
        )
        mutations = [cancel.cancelled_copy(original, now), rpc.Mutation(insert=replacement.entity)]
        mutations += cancel.rollup_repairs(cancelling, transaction, added=_added(replacement))
        feeds = cancel.alert_feeds(cancelling, (replacement,))
        mutations += feeds
        # issue 16, limits: the original out of its counters, the replacement in
        mutations += limit_counting.cancel_mutations([original], transaction, (replacement,))
        mutations += [
            _link_entity(original.key_id, amends, replacement.public_id, now),
            _link_entity(replacement.key_id, original.public_id, None, now),
            rpc.Mutation(upsert=corrections.encode(record)),
        ]
        rpc.commit(mutations, transaction)
    if feeds:
        outbox.wake()
    cancelled = entities.decode_event(cancel.cancelled_copy(original, now).update)
    return Amended(
        "created",
        _listed(cancelled, amends, replacement.public_id),
        _listed(replacement, original.public_id, None),
        record_id,
    )


def amend_event(event_id: str, changes: dict[str, Any], config: Config, key_prefix: str) -> Amended:
    """Replace a recorded event by its amended copy, exactly once (see the module)."""
    namespace = ndb.get_context().get_namespace()
    key = ids.decode_key(event_id, kind=MeterEvent.KIND, namespace=namespace)
    if key is None:
        raise NotFound("no such event", param="id")
    original_key = entities.key(MeterEvent.KIND, key.id())
    found = rpc.lookup([original_key]).get(original_key.SerializeToString())
    if found is None:
        raise NotFound("no such event", param="id")
    original = entities.decode_event(found)
    if original.deleted:  # refused (or a retry answered) in the transaction, with links
        change = _Change(
            changes.get("value", original.value),
            dict(changes.get("dimensions", original.dimensions)),
            changes.get("timestamp", original.timestamp),
        )
    else:
        change = _change(original, changes, config)
    return rpc.retry_aborted(
        lambda: _attempt(original_key, change, config.dedupe_window, key_prefix), "the amendment"
    )
