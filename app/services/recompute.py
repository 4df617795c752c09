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

from datetime import datetime, timedelta

from app.services.windows import EPOCH, Cell, Series, settle_last
from app.storage import entities, queries, rollups
from app.storage.rollups import rank


def event_series(event) -> Series:
    """The series of a raw event: its user and dimension values."""
    return rollups.series_of(event.properties["UserId"].string_value,
                             entities.read_shadow(event, "Dimensions_", dict))


def event_rank(event) -> tuple:
    created = entities.get_time(event, "CreatedAt") or entities.get_time(event, "Timestamp")
    return rank(entities.get_time(event, "Timestamp"), created, event.key.path[-1].id)


def is_live(event) -> bool:
    """Counted in summaries: not cancelled (the mixin's Deleted flag)."""
    deleted = event.properties.get("Deleted")
    return deleted is None or not deleted.boolean_value


def event_cell(event) -> Cell:
    """The cell of one raw event."""
    cell = Cell()
    cell.add_event(event.properties["Value"].integer_value, event_rank(event))
    return cell


def series_cells(meter_id: str, series: Series, day: int, first_slot: int, end_slot: int,
                 transaction: bytes | None, skip: set[bytes] | frozenset[bytes] = frozenset()
                 ) -> dict[int, Cell]:
    """Slot -> cell of one series over slots [first_slot, end_slot) of a day, from its live
    raw events (leaving out the events whose serialized keys are in `skip`)."""
    start, end = rollups.slot_start(day, first_slot), rollups.slot_start(day, end_slot)
    cells: dict[int, Cell] = {}
    for event in queries.events(meter_id, series.user_id, start, end, transaction):
        if (is_live(event) and event.key.SerializeToString() not in skip
                and event_series(event) == series):
            cells.setdefault(affected_slot(event)[1], Cell()).merge(event_cell(event))
    return cells


def events_at(meter_id: str, user_id: str | None, ts: int,
              transaction: bytes | None = None) -> list[tuple[Series, Cell]]:
    """(series, cell) of each live event of a meter (and user) at exactly `ts` (µs since the
    epoch): what a `last` meter's pending deltas point at. One query, however many series."""
    moment = EPOCH + timedelta(microseconds=ts)
    return [(event_series(event), event_cell(event))
            for event in queries.events(meter_id, user_id, moment,
                                        moment + timedelta(microseconds=1), transaction)
            if is_live(event)]


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


def raw_slots(meter_id: str, series: Series, day: int, slots, transaction: bytes | None = None
              ) -> dict[int, Cell]:
    """Slot -> cell of `slots` of one series and day, from its live raw events (one query
    per slot): how the `unknown` slots of a decoded rollup are read."""
    cells: dict[int, Cell] = {}
    for slot in slots:
        cells.update(series_cells(meter_id, series, day, slot, slot + 1, transaction))
    return cells


def exact_cells(stored, meter_id: str) -> tuple[Series, int, dict[int, Cell]]:
    """(series, day, slot -> Cell) of a rollup just read in a transaction, every slot exact:
    its base plus its deltas, and the slots whose sum deltas may have clamped from the raw
    events. Those are read outside the transaction, so that ingestion into the slot is not
    refused meanwhile (a transactional query locks its range), and still agree with the
    rollup: a batch commits its events and its increments at once, and its increments wait
    for the lock on the rollup that the caller's read holds."""
    series, day, cells, unknown = rollups.decode(stored)
    cells.update(raw_slots(meter_id, series, day, unknown))
    return series, day, cells


def recomputed(stored, meter_key_id: int, meter_id: str, series: Series, day: int,
               slots: set[int], transaction: bytes | None, skip: set[bytes]):
    """The replacement of a rollup with `slots` recomputed from raw events (and any slot
    whose sum deltas may have saturated)."""
    kept = {}
    if stored is not None:
        _, _, decoded, unknown = rollups.decode(stored)
        slots = set(slots) | unknown
        kept = {slot: cell for slot, cell in decoded.items() if slot not in slots}
    cells = settled(meter_id, kept, transaction)  # the recomputed slots need no settling
    for slot in slots:
        cell = series_cells(meter_id, series, day, slot, slot + 1, transaction,
                            skip).get(slot, Cell())
        if cell.count:
            cells[slot] = cell
        else:
            cells.pop(slot, None)
    key_pb = rollups.key(meter_key_id, series, day)
    return rollups.replacement(key_pb, meter_id, series, day, cells)


def affected_slot(event) -> tuple[int, int]:
    """(day, slot) of a raw event."""
    moment: datetime = entities.get_time(event, "Timestamp")
    return rollups.day_and_slot(moment)
