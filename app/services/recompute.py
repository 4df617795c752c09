"""Rebuilding rollup slots from the raw events: for cancellation, `rollups rebuild`,
and slots whose int64 sum deltas may have saturated.

Sums and counts could be undone by subtracting, but a minimum, a maximum or the
latest value cannot; so any slot whose events change other than by addition is
recomputed from the raw events it covers. The caller reads the rollup in the
same transaction first, which serializes the recomputation with concurrent
ingestion of that series. A slot whose deltas sit at an int64 bound is not
known from the rollup at all (`rollups.decode_parts`); `exact_cells` and
`raw_slots` take it from the raw events too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from app.core.cells import Cell, Series, settle_last
from app.core.slots import EPOCH, day_and_slot, slot_start
from app.storage import entities, queries, rollups
from app.storage.entities import EntityPb, StoredEvent


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
    for event in _live_events(meter_id, series.user_id, start, end, transaction):
        if event.series == series and event.entity.key.SerializeToString() not in skip:
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
        return latest_of(events_at(meter_id, user_id, ts, transaction), series)

    for cell in cells.values():
        settle_last(cell, latest)
    return cells


def raw_slots(
    meter_id: str,
    series: Series,
    day: int,
    slots: Iterable[int],
    transaction: bytes | None = None,
) -> dict[int, Cell]:
    """Slot -> cell of `slots` of one series and day, from its live raw events (one query
    per slot): how the `unknown` slots of a decoded rollup are read."""
    cells: dict[int, Cell] = {}
    for slot in slots:
        cells.update(series_cells(meter_id, series, day, slot, slot + 1, transaction))
    return cells


def exact_cells(rollup: rollups.Rollup) -> dict[int, Cell]:
    """Slot -> Cell of a rollup just read in a transaction, every slot exact: its base
    plus its deltas, and the slots whose sum deltas may have clamped from the raw events.
    Those are read outside the transaction, so that ingestion into the slot is not
    refused meanwhile (a transactional query locks its range), and still agree with the
    rollup: a batch commits its events and its increments at once, and its increments wait
    for the lock on the rollup that the caller's read holds."""
    cells = dict(rollup.cells)
    cells.update(raw_slots(rollup.meter_id, rollup.series, rollup.day, rollup.unknown))
    return cells


def recomputed(
    stored: EntityPb | None,
    meter_key_id: int,
    meter_id: str,
    series: Series,
    day: int,
    slots: set[int],
    transaction: bytes | None,
    skip: set[bytes],
) -> Any:
    """The replacement of a rollup with `slots` recomputed from raw events (and any slot
    whose sum deltas may have saturated)."""
    kept: dict[int, Cell] = {}
    if stored is not None:
        rollup = rollups.decode(stored)
        slots = set(slots) | rollup.unknown
        kept = {slot: cell for slot, cell in rollup.cells.items() if slot not in slots}
    cells = settled(meter_id, kept, transaction)  # the recomputed slots need no settling
    for slot in slots:
        cell = series_cells(meter_id, series, day, slot, slot + 1, transaction, skip).get(
            slot, Cell()
        )
        if cell.count:
            cells[slot] = cell
        else:
            cells.pop(slot, None)
    key_pb = rollups.key(meter_key_id, series, day)
    return rollups.replacement(key_pb, meter_id, series, day, cells)
