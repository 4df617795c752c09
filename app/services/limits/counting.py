"""What a batch adds to the limit counters of its meters with limits (`app.storage.counters`).

Called by ingestion with the drafts it creates; the mutations join the batch's one
commit, so a counter holds exactly the committed events: a refused or failed batch adds
nothing, a retried one (duplicates) adds nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import ndb

from app.core.aggregation import Aggregation
from app.core.cells import series_of
from app.core.slots import EPOCH, day_and_slot
from app.models import ids
from app.services.alerts.periods import period_of
from app.services.limits import index as limit_index
from app.storage import counters, entities, rpc, shards
from app.storage.counters import Spec, Tally

#: This process's shard choice for counters: its home shard, another when it wrote the
#: same counter less than a second ago (the rollups' rule, a picker of its own so that
#: counters do not make users' rollups look hot).
_picker = shards.Picker(counters.SHARDS)

_Group = tuple[int, str, str, datetime]  # meter key id, meter id, user, period start


def _parts(
    drafts: list[Any], indexes: list[int], specs: dict[int, Spec]
) -> dict[_Group, list[Any]]:
    """(meter, user, period) -> [value (sum, count or max), spec] of the drafts."""
    parts: dict[_Group, list[Any]] = {}
    for index in indexes:
        draft = drafts[index]
        spec = specs.get(draft.meter_key_id)
        if spec is None or spec.aggregation == Aggregation.UNIQUE_COUNT:
            continue  # distinct values do not add up: those checks read the summary
        day, slot = day_and_slot(draft.timestamp)
        start = period_of(day, slot, spec.period, spec.zone)[0]
        group = (draft.meter_key_id, draft.meter.id_, draft.user_id, start)
        part = parts.get(group)
        amount = 1 if spec.aggregation == Aggregation.COUNT else draft.value
        if part is None:
            parts[group] = [amount, spec]
        elif spec.aggregation == Aggregation.MAX:
            part[0] = max(part[0], amount)
        else:
            part[0] += amount
    return parts


def _name(group: _Group, spec: Spec) -> str:
    meter_key_id, _meter_id, user, start = group
    return counters.key_name(meter_key_id, user, spec, start)


def keys_to_read(
    drafts: list[Any], indexes: list[int], specs: dict[int, Spec], merged: set[int]
) -> list[Any]:
    """Shard 0 of the counters a merging commit (`merged`: meter key ids) replaces."""
    return [
        entities.key(counters.COUNTER_KIND, _name(group, spec))
        for group, (_amount, spec) in _parts(drafts, indexes, specs).items()
        if group[0] in merged
    ]


def mutations(
    drafts: list[Any],
    indexes: list[int],
    specs: dict[int, Spec],
    merged: set[int],
    stored: dict[bytes, Any],
) -> list[Any]:
    """The counter writes of the drafts at `indexes`: blind increments, or for meters in
    `merged` replacements of shard 0 from `stored` (serialized key -> entity)."""
    found = []
    moment = _picker.clock()
    for group, (amount, spec) in _parts(drafts, indexes, specs).items():
        name = _name(group, spec)
        maximum = spec.aggregation == Aggregation.MAX
        part = Tally(amount, 1)
        if group[0] in merged:
            key = entities.key(counters.COUNTER_KIND, name).SerializeToString()
            found.append(counters.replacement(name, group[1], stored.get(key), part, maximum))
        else:
            start_day = day_and_slot(group[3])[0]
            shard = _picker.pick(group[0], series_of(group[2], {}), start_day, moment)
            found.append(counters.increment(name, shard, group[1], part, maximum))
    return found


#: A seed no check trusts (older than any limit): the next check reads a new one.
_STALE = EPOCH


def cancel_mutations(
    events: list[Any], transaction: bytes, added: tuple[Any, ...] = ()
) -> list[Any]:
    """What cancelling `events` (`entities.StoredEvent`, live until this transaction)
    changes in the limit counters, inside the cancel's transaction: sums and counts take
    the events out of shard 0 (read in the transaction, so the cut stays exact); a max
    cannot be taken out, so its counters are deleted and its seed made stale: the next
    check reads the period from the summary engine, and the counters hold only what
    came after. `added`: events the same commit inserts (an amendment's replacement),
    counted in."""
    namespace = ndb.get_context().get_namespace()
    key_ids = {}
    for event in (*events, *added):
        key = ids.decode_key(event.meter_id, kind="meter", namespace=namespace)
        if key is not None:
            key_ids[event.meter_id] = key.id()
    specs = limit_index.specs_for(set(key_ids.values()))
    parts: dict[tuple[str, str], list[Any]] = {}  # counter name -> [meter id, amount, spec]
    changes = [(event, -1) for event in events] + [(event, 1) for event in added]
    for event, sign in changes:
        spec = specs.get(key_ids.get(event.meter_id, 0))
        if spec is None or spec.aggregation == Aggregation.UNIQUE_COUNT:
            continue
        day, slot = day_and_slot(event.timestamp)
        start = period_of(day, slot, spec.period, spec.zone)[0]
        name = counters.key_name(key_ids[event.meter_id], event.user_id, spec, start)
        amount = sign if spec.aggregation == Aggregation.COUNT else sign * event.value
        part = parts.setdefault((name, spec.aggregation), [event.meter_id, 0])
        part[1] += amount
    found = []
    sums = [(name, part) for (name, agg), part in parts.items() if agg != Aggregation.MAX]
    stored = rpc.lookup(
        [entities.key(counters.COUNTER_KIND, name) for name, _part in sums], transaction
    )
    for name, (meter_id, amount) in sums:
        before = stored.get(entities.key(counters.COUNTER_KIND, name).SerializeToString())
        found.append(counters.replacement(name, meter_id, before, Tally(amount, 1), False))
    for name, agg in parts:
        if agg == Aggregation.MAX:  # start the counters afresh, after a new seed
            shard_keys = counters.counter_keys(name)
            rpc.lookup(shard_keys, transaction)  # concurrent batches wait for the commit
            found += [rpc.Mutation(delete=key) for key in shard_keys]
            found.append(counters.seed_mutation(name, counters.Seed(0, 0, _STALE)))
    return found
