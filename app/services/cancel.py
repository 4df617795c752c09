"""Cancelling recorded events: they leave every summary and stay stored for audit.

An event is named by its id, or by its meter and idempotency key. Cancelling
sets the mixin's `Deleted` flag on the raw event and recomputes the rollup slots
it counted in, all in one transaction; cancelling again is harmless
(`already_cancelled`). Only events recorded within the cancellation window
(the dedupe window, 35 days by default) can be cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from google.cloud import ndb

from app.core.cells import Cell, Series
from app.core.slots import day_and_slot
from app.models import Meter, MeterEvent, ids, utcnow
from app.services import recompute
from app.services.alerts import feed as alert_feed
from app.services.events import idempotent_id
from app.services.limits import counting as limit_counting  # issue 16, limits
from app.services.webhooks import outbox
from app.storage import entities, rollups, rpc, shards
from app.storage.entities import EntityPb, KeyPb, StoredEvent

#: A cancel target as the request names it: {"id"} or {"meterId"|"eventName", "idempotency"}.
Target = dict[str, Any]
#: `meter_key` of a target -> its meter (None: no such meter).
MetersByName = dict[tuple[str, str], Meter | None]


@dataclass(frozen=True)
class Cancelled:
    id: str | None
    status: str  # cancelled | already_cancelled | not_found | expired


def meter_key(target: Target) -> tuple[str, str] | None:
    """How a target names its meter: `("id", meterId)` or `("name", eventName)`; None for
    a target named by the event's id. Kept apart, since an event name may look like an id."""
    if target.get("id"):
        return None
    if target.get("meterId"):
        return "id", target["meterId"]
    if target.get("eventName"):
        return "name", target["eventName"]
    return None


def _target_key(target: Target, meters_by_name: MetersByName) -> int | None:
    """The event key a cancel target names, or None; `meters_by_name` is keyed by
    `meter_key`."""
    namespace = ndb.get_context().get_namespace()
    if target.get("id"):
        key = ids.decode_key(target["id"], kind=MeterEvent.KIND, namespace=namespace)
        return key.id() if key is not None else None
    named = meter_key(target)
    meter = meters_by_name.get(named) if named is not None else None
    if meter is None:
        return None
    return idempotent_id(meter.id_, target["idempotency"])


def _attempt(key_ids: list[int | None], window: timedelta, now: datetime) -> list[Cancelled]:
    with rpc.transaction() as transaction:
        keys = {k: entities.key(MeterEvent.KIND, k) for k in key_ids if k is not None}
        found = rpc.lookup(list(keys.values()), transaction)
        results, cancelling = _classify(key_ids, keys, found, window, now)
        mutations = [cancelled_copy(event, now) for event in cancelling.values()]
        mutations += rollup_repairs(cancelling, transaction)
        # issue 16, limits: the counters of meters with limits
        mutations += limit_counting.cancel_mutations(list(cancelling.values()), transaction)
        feeds = alert_feeds(cancelling)
        mutations += feeds
        if mutations:
            rpc.commit(mutations, transaction)
        else:
            rpc.rollback(transaction)
    if feeds:
        outbox.wake()  # the delivery loop evaluates the new feed now, not at its next tick
    return results


def _classify(
    key_ids: list[int | None],
    keys: dict[int, KeyPb],
    found: dict[bytes, EntityPb],
    window: timedelta,
    now: datetime,
) -> tuple[list[Cancelled], dict[bytes, StoredEvent]]:
    results: list[Cancelled] = []
    cancelling: dict[bytes, StoredEvent] = {}
    for key_id in key_ids:
        event = found.get(keys[key_id].SerializeToString()) if key_id is not None else None
        if event is None:
            results.append(Cancelled(None, "not_found"))
            continue
        stored = entities.decode_event(event)
        public_id, created = stored.public_id, stored.created_at
        if not stored.live or event.key.SerializeToString() in cancelling:
            results.append(Cancelled(public_id, "already_cancelled"))
        elif created is not None and created < now - window:
            results.append(Cancelled(public_id, "expired"))
        else:
            cancelling[event.key.SerializeToString()] = stored
            results.append(Cancelled(public_id, "cancelled"))
    return results, cancelling


def cancelled_copy(event: StoredEvent, now: datetime) -> Any:
    copy = entities.Entity()
    copy.CopyFrom(event.entity)
    entities.set_bool(copy, "Deleted", True)
    entities.set_time(copy, "UpdatedAt", now)
    return rpc.Mutation(update=copy)


def alert_feeds(
    cancelling: dict[bytes, StoredEvent], added: tuple[StoredEvent, ...] = ()
) -> list[Any]:
    """Feeds of negative contributions for the cancelled events of meters with alert rules,
    flagged so the evaluator re-reads max and unique_count tallies; with the positive
    contributions of `added`, events the same commit inserts (an amendment's replacement)."""
    if not cancelling and not added:
        return []
    namespace = ndb.get_context().get_namespace()
    by_meter = alert_feed.cancelled_contributions(cancelling.values())
    for event in added:
        day, slot = day_and_slot(event.timestamp)
        by_meter.setdefault(event.meter_id, []).append(
            [event.user_id, dict(event.dimensions), day, slot, event.value, 1, event.value]
        )
    key_ids = {}
    for meter_id in by_meter:
        meter_key = ids.decode_key(meter_id, kind="meter", namespace=namespace)
        if meter_key is not None:
            key_ids[meter_key.id()] = meter_id
    with_rules = alert_feed.meters_with_rules(key_ids)
    return [
        alert_feed.mutation(key_ids[key_id], by_meter[key_ids[key_id]], recompute=True)
        for key_id in sorted(with_rules)
    ]


#: (meter id, series, UTC day): one rollup group, every shard of it.
Group = tuple[str, Series, int]


def rollup_repairs(
    cancelling: dict[bytes, StoredEvent],
    transaction: bytes,
    added: dict[Group, dict[int, list[Cell]]] | None = None,
    known_keys: dict[Group, list[KeyPb]] | None = None,
) -> list[Any]:
    """The rollups the cancelled events counted in, their slots recomputed: each event's
    user series and its org-wide series, every shard folded into shard 0. `added`
    (group -> slot -> cells) are events the same commit inserts (an amendment's
    replacement), merged into their groups; `known_keys` are groups' shard keys the
    caller listed already (`group_keys_of`)."""
    affected: dict[Group, set[int]] = {}
    removed: dict[Group, dict[int, list[Cell]]] = {}
    for event in cancelling.values():
        day, slot = day_and_slot(event.timestamp)
        org = shards.org_series(event.series)
        for series in (event.series, org):
            affected.setdefault((event.meter_id, series, day), set()).add(slot)
            # Taken out of the stored cell where that is exact (`recompute._without`): no
            # query of the slot's raw events, which a range cancel would run per slot.
            removed.setdefault((event.meter_id, series, day), {}).setdefault(slot, []).append(
                event.cell()
            )
    for group in added or {}:
        affected.setdefault(group, set())
    repairs = []
    namespace = ndb.get_context().get_namespace()
    for (meter_id, series, day), slots in affected.items():
        meter_key = ids.decode_key(meter_id, kind="meter", namespace=namespace)
        if meter_key is None:  # an event of a meter written elsewhere: no rollup of ours
            continue
        keys = (known_keys or {}).get((meter_id, series, day))
        if keys is None:
            keys = recompute.group_keys(meter_key.id(), meter_id, series, day)
        keys = _with_writable_shards(keys, meter_key.id(), series, day)
        stored = recompute.read_group(keys, transaction)
        repairs += recompute.rewritten(
            meter_key.id(),
            meter_id,
            series,
            day,
            stored,
            transaction,
            slots,
            set(cancelling),
            removed.get((meter_id, series, day)),
            (added or {}).get((meter_id, series, day)),
        )
    return repairs


def _with_writable_shards(
    keys: list[KeyPb], meter_key_id: int, series: Series, day: int
) -> list[KeyPb]:
    """`keys` (the shards that existed when listed) and every shard a batch of this
    configuration may write: all are read in the transaction, so a shard a concurrent
    batch creates after the listing is read (and folded) too, or that batch waits. Left
    out, its increments would count the events again that the slot's recomputation from
    the raw events already holds."""
    count = shards.DEFAULT_SHARDS
    if has_app_context():
        count = current_app.config["METERING"].rollup_shards
    names = {key_pb.path[-1].name for key_pb in keys}
    more = [rollups.key(meter_key_id, series, day, shard=shard) for shard in range(count)]
    return keys + [key_pb for key_pb in more if key_pb.path[-1].name not in names]


def groups_of(event: StoredEvent) -> list[Group]:
    """The rollup groups an event counts in: its user's series and its org-wide series."""
    day = day_and_slot(event.timestamp)[0]
    return [
        (event.meter_id, event.series, day),
        (event.meter_id, shards.org_series(event.series), day),
    ]


def group_keys_of(group: Group) -> list[KeyPb]:
    """The shard keys of one rollup group that exist now (read outside any transaction),
    for `rollup_repairs`' `known_keys`; [] for a meter written elsewhere."""
    meter_id, series, day = group
    namespace = ndb.get_context().get_namespace()
    meter_key = ids.decode_key(meter_id, kind="meter", namespace=namespace)
    if meter_key is None:
        return []
    return recompute.group_keys(meter_key.id(), meter_id, series, day)


def cancel_events(
    targets: list[Target], meters_by_name: MetersByName, window: timedelta
) -> list[Cancelled]:
    """Cancel each target event once; one result per target, in order. `meters_by_name`
    maps each target's `meter_key` to its meter (None: no such meter)."""
    key_ids = [_target_key(t, meters_by_name) for t in targets]
    return rpc.retry_aborted(lambda: _attempt(key_ids, window, utcnow()), "cancellation")
