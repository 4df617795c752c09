"""Rebuilding rollup slots from the raw events: for cancellation, `rollups rebuild`,
and slots whose int64 sum deltas may have saturated.

Sums and counts could be undone by subtracting, but a minimum, a maximum or the
latest value cannot; so any slot whose events change other than by addition is
recomputed from the raw events it covers. The caller reads the rollup in the
same transaction first, which serializes the recomputation with concurrent
ingestion of that series. A slot whose deltas sit at an int64 bound is not
known from the rollup at all (`rollups.decode_parts`); `rewritten` takes it from
the raw events too, for every shard of the rollup at once (one shard's part of
a slot cannot be told apart in the raw events).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.core.cells import Cell, Series, settle_last
from app.core.slots import EPOCH, day_and_slot, slot_start
from app.storage import entities, queries, rollups, rpc, shards
from app.storage.entities import EntityPb, KeyPb, StoredEvent


class Unsettled(Exception):
    """A rollup read for a summary has a slot whose sum deltas sit at an int64 bound: only
    folding every shard of it (`compact.compact_one`, which takes that slot from the raw
    events) makes it exact. The summary folds it and reads again."""

    def __init__(self, key: KeyPb):
        super().__init__("a rollup to fold before it is read")
        self.key = key


def _live_events(
    meter_id: str,
    user_id: str | None,
    start: datetime,
    end: datetime,
    transaction: bytes | None,
) -> list[StoredEvent]:
    """The live events of a meter (and user) in [start, end), decoded."""
    decoded = (
        entities.decode_event(event)
        for event in queries.events(meter_id, user_id, start, end, transaction)
    )
    return [event for event in decoded if event.live]


def series_cells(
    meter_id: str,
    series: Series,
    day: int,
    first_slot: int,
    end_slot: int,
    transaction: bytes | None,
    skip: set[bytes] | frozenset[bytes] = frozenset(),
) -> dict[int, Cell]:
    """Slot -> cell of one series over slots [first_slot, end_slot) of a day, from its live
    raw events (leaving out the events whose serialized keys are in `skip`)."""
    start, end = slot_start(day, first_slot), slot_start(day, end_slot)
    cells: dict[int, Cell] = {}
    org = shards.is_org(series)  # an org-wide series: every user's events of its dimensions
    for event in _live_events(meter_id, None if org else series.user_id, start, end, transaction):
        own = shards.org_series(event.series) if org else event.series
        if own == series and event.entity.key.SerializeToString() not in skip:
            cells.setdefault(day_and_slot(event.timestamp)[1], Cell()).merge(event.cell())
    return cells


def events_at(
    meter_id: str, user_id: str | None, ts: int, transaction: bytes | None = None
) -> list[tuple[Series, Cell]]:
    """(series, cell) of each live event of a meter (and user) at exactly `ts` (µs since the
    epoch): what a `last` meter's pending deltas point at. One query, however many series."""
    moment = EPOCH + timedelta(microseconds=ts)
    return [
        (event.series, event.cell())
        for event in _live_events(
            meter_id, user_id, moment, moment + timedelta(microseconds=1), transaction
        )
    ]


def org_events_at(
    meter_id: str, ts: int, transaction: bytes | None = None
) -> list[tuple[Series, Cell]]:
    """`events_at` of every user, each event under its org-wide series."""
    found = events_at(meter_id, None, ts, transaction)
    return [(shards.org_series(own), cell) for own, cell in found]


def latest_of(found: list[tuple[Series, Cell]], series: frozenset[Series]) -> Cell | None:
    """The merged cell of the events of `found` that belong to `series`, or None."""
    merged = None
    for own, cell in found:
        if own in series:
            merged = merged or Cell()
            merged.merge(cell)
    return merged


def settled(meter_id: str, cells: dict[int, Cell], transaction: bytes | None) -> dict[int, Cell]:
    """The cells of a decoded rollup (one series) with their pending `last` events read,
    ready to be written back as a compacted base."""

    def latest(series: frozenset[Series], ts: int) -> Cell | None:
        (user_id,) = {one.user_id for one in series}
        if user_id == shards.ORG_USER:
            return latest_of(org_events_at(meter_id, ts, transaction), series)
        return latest_of(events_at(meter_id, user_id, ts, transaction), series)

    for cell in cells.values():
        settle_last(cell, latest)
    return cells


def group_keys(meter_key_id: int, meter_id: str, series: Series, day: int) -> list[KeyPb]:
    """The keys of every shard of the rollup of (meter, series, day) that exists now, and
    shard 0's whether it exists or not (read outside any transaction: keys only)."""
    first = rollups.key(meter_key_id, series, day)
    name = first.path[-1].name
    keys = [first]
    for key_pb in queries.rollup_keys(meter_id, series.user_id, day):
        if key_pb.path[-1].name.startswith(name + "."):
            keys.append(key_pb)
    return keys


def read_group(keys: list[KeyPb], transaction: bytes) -> list[EntityPb]:
    """The shards of `keys` (`group_keys`) that exist, read in `transaction`: from then on
    a batch writing any of them waits for it."""
    found = rpc.lookup(keys, transaction)
    return [found[k.SerializeToString()] for k in keys if k.SerializeToString() in found]


def _without(cell: Cell | None, removed: list[Cell] | None) -> Cell | None:
    """`cell` without the events of `removed`, or None when only the raw events can say:
    when a removed event may be the cell's minimum, maximum or latest (what is left
    holds the next one, which nothing here knows)."""
    if cell is None or not removed:
        return None
    result = cell.copy()
    for gone in removed:
        if (
            gone.count > result.count
            or (result.min is not None and gone.min is not None and gone.min <= result.min)
            or (result.max is not None and gone.max is not None and gone.max >= result.max)
            or (result.last_rank is not None and gone.last_rank == result.last_rank)
        ):
            return None
        result.count -= gone.count
        result.sum -= gone.sum
    if not result.count:
        return Cell()
    return result


def _lock_every_shard(
    meter_key_id: int, series: Series, day: int, stored: list[EntityPb], transaction: bytes | None
) -> None:
    """Read, in `transaction`, every shard key the rollup could have and was not read yet:
    a batch writing any of them waits until the transaction ends (Firestore locks what a
    transaction reads, found or not)."""
    if transaction is None:
        return
    have = {entity.key.path[-1].name for entity in stored}
    missing = [
        key_pb
        for key_pb in (
            rollups.key(meter_key_id, series, day, shard=shard)
            for shard in range(shards.MAX_SHARDS)
        )
        if key_pb.path[-1].name not in have
    ]
    rpc.lookup(missing, transaction)


def rewritten(
    meter_key_id: int,
    meter_id: str,
    series: Series,
    day: int,
    stored: list[EntityPb],
    transaction: bytes | None,
    slots: set[int] | None = None,
    skip: set[bytes] | frozenset[bytes] = frozenset(),
    removed: dict[int, list[Cell]] | None = None,
    added: dict[int, list[Cell]] | None = None,
) -> list[Any]:
    """Mutations folding the shards `stored` (just read in `transaction`) of one rollup
    into shard 0, compacted, and deleting the others: `slots` recomputed from the raw
    events (None: every slot, for a rebuild), and so is any slot whose sum deltas may
    have clamped in any shard. A rollup left with no events is deleted.

    `removed` (slot -> cells of cancelled events) lets a slot be recomputed by taking
    those events out instead (`_without`), where that is exact: an org-wide slot holds
    every user's events of its quarter hour, which are costly to read again.

    `added` (slot -> cells of events this same commit inserts: an amendment's
    replacement) is merged in last: no raw query of this transaction can see those
    events yet, so every slot, recomputed or kept, lacks them until then."""
    first = rollups.key(meter_key_id, series, day)
    if slots is None:
        cells = series_cells(meter_id, series, day, 0, rollups.SLOTS_PER_DAY, transaction, skip)
    else:
        decoded = [rollups.decode(entity) for entity in stored]
        clamped = set().union(*(rollup.unknown for rollup in decoded)) - set(slots)
        from_raw = set(slots) | clamped
        kept: dict[int, Cell] = {}
        for rollup in decoded:
            for slot, cell in rollup.cells.items():
                if slot not in clamped:
                    kept.setdefault(slot, Cell()).merge(cell)
        cells = settled(meter_id, kept, transaction)  # the recomputed slots need no settling
        for slot in set(slots):
            lighter = _without(cells.get(slot), (removed or {}).get(slot))
            if lighter is not None:
                from_raw.discard(slot)
                if lighter.count:
                    cells[slot] = lighter
                else:
                    cells.pop(slot, None)
        if clamped:
            _lock_every_shard(meter_key_id, series, day, stored, transaction)
        for slot in from_raw:
            # A clamped slot can hold tens of thousands of events: read outside the
            # transaction (whose query would lock them all), which every shard's lock makes
            # safe: a batch commits its events with its increments, and those wait.
            reader = None if slot in clamped else transaction
            fresh = series_cells(meter_id, series, day, slot, slot + 1, reader, skip).get(slot)
            if fresh is not None and fresh.count:
                cells[slot] = fresh
            else:
                cells.pop(slot, None)
        for slot, extra in (added or {}).items():
            for cell in extra:
                cells.setdefault(slot, Cell()).merge(cell)
    mutations = [
        rollups.replacement(first, meter_id, series, day, cells)
        if cells
        else rpc.Mutation(delete=first)
    ]
    first_name = first.path[-1].name
    mutations += [
        rpc.Mutation(delete=entity.key)
        for entity in stored
        if entity.key.path[-1].name != first_name
    ]
    return mutations
