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

from google.cloud import ndb

from app.core.cells import Cell, Series
from app.core.slots import day_and_slot
from app.models import Meter, MeterEvent, ids, utcnow
from app.services import recompute
from app.services.alerts import feed as alert_feed
from app.services.events import idempotent_id
from app.services.limits import counting as limit_counting  # issue 16, limits
from app.services.webhooks import outbox
from app.storage import entities, rpc, shards
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
        mutations = [_cancelled_copy(event, now) for event in cancelling.values()]
        mutations += _rollup_repairs(cancelling, transaction)
        # issue 16, limits: the counters of meters with limits
        mutations += limit_counting.cancel_mutations(list(cancelling.values()), transaction)
        feeds = _alert_feeds(cancelling)
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


def _cancelled_copy(event: StoredEvent, now: datetime) -> Any:
    copy = entities.Entity()
    copy.CopyFrom(event.entity)
    entities.set_bool(copy, "Deleted", True)
    entities.set_time(copy, "UpdatedAt", now)
    return rpc.Mutation(update=copy)


def _alert_feeds(cancelling: dict[bytes, StoredEvent]) -> list[Any]:
    """Feeds of negative contributions for the cancelled events of meters with alert rules,
    flagged so the evaluator re-reads max and unique_count tallies."""
    if not cancelling:
        return []
    namespace = ndb.get_context().get_namespace()
    by_meter = alert_feed.cancelled_contributions(cancelling.values())
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


def _rollup_repairs(cancelling: dict[bytes, StoredEvent], transaction: bytes) -> list[Any]:
    """The rollups the cancelled events counted in, their slots recomputed: each event's
    user series and its org-wide series, every shard folded into shard 0."""
    affected: dict[tuple[str, Series, int], set[int]] = {}
    removed: dict[tuple[str, Series, int], dict[int, list[Cell]]] = {}
    for event in cancelling.values():
        day, slot = day_and_slot(event.timestamp)
        org = shards.org_series(event.series)
        for series in (event.series, org):
            affected.setdefault((event.meter_id, series, day), set()).add(slot)
        removed.setdefault((event.meter_id, org, day), {}).setdefault(slot, []).append(event.cell())
    repairs = []
    namespace = ndb.get_context().get_namespace()
    for (meter_id, series, day), slots in affected.items():
        meter_key = ids.decode_key(meter_id, kind="meter", namespace=namespace)
        if meter_key is None:  # an event of a meter written elsewhere: no rollup of ours
            continue
        keys = recompute.group_keys(meter_key.id(), meter_id, series, day)
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
            removed.get((meter_id, series, day)),  # org-wide: taken out where that is exact
        )
    return repairs


def cancel_events(
    targets: list[Target], meters_by_name: MetersByName, window: timedelta
) -> list[Cancelled]:
    """Cancel each target event once; one result per target, in order. `meters_by_name`
    maps each target's `meter_key` to its meter (None: no such meter)."""
    key_ids = [_target_key(t, meters_by_name) for t in targets]
    return rpc.retry_aborted(lambda: _attempt(key_ids, window, utcnow()), "cancellation")
