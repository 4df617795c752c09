"""Rebuilding a meter's rollups from its raw events (`metering rollups rebuild`).

Rollups are derived data: for every (series, UTC day) that has raw events or a
stored rollup, one transaction reads the rollup (serializing with concurrent
ingestion of that series), recomputes every slot from the live raw events of
that day, and writes the result, or deletes a rollup left with no events.
Running it twice gives the same rollups; it also brings in events that another
writer (the Go service) stored without rollups.
"""

from __future__ import annotations

from collections.abc import Callable

from app.core.cells import Series
from app.core.slots import SLOTS_PER_DAY, day_and_slot
from app.models import Meter
from app.services import recompute
from app.storage import entities, queries, rollups, rpc


def targets(meter: Meter) -> list[tuple[Series, int]]:
    """Every (series, day) of the meter with raw events or a stored rollup."""
    found = set()
    for entity in queries.events(meter.id_, None, None, None):
        event = entities.decode_event(entity)
        found.add((event.series, day_and_slot(event.timestamp)[0]))
    for entity in queries.rollups(meter.id_, None, None, None):
        rollup = rollups.decode(entity)
        found.add((rollup.series, rollup.day))
    return sorted(found, key=lambda item: (item[1], rollups.series_json(item[0])))


def _rebuild_once(meter: Meter, series: Series, day: int) -> None:
    with rpc.transaction() as transaction:
        key_pb = rollups.key(meter.key.id(), series, day)
        rpc.lookup([key_pb], transaction)  # read first: concurrent writers of it wait or retry
        cells = recompute.series_cells(meter.id_, series, day, 0, SLOTS_PER_DAY, transaction)
        if cells:
            mutation = rollups.replacement(key_pb, meter.id_, series, day, cells)
        else:
            mutation = rpc.Mutation(delete=key_pb)
        rpc.commit([mutation], transaction)


def rebuild_one(meter: Meter, series: Series, day: int) -> None:
    """Recompute one rollup from the raw events, retrying on contention."""
    rpc.retry_aborted(lambda: _rebuild_once(meter, series, day), "rebuilding")


def rebuild_meter(
    meter: Meter,
    progress: Callable[[int], object] | None = None,
    work: list[tuple[Series, int]] | None = None,
) -> int:
    """Rebuild every rollup of a meter (or the `work` of `targets`); returns how many."""
    work = targets(meter) if work is None else work
    for series, day in work:
        rebuild_one(meter, series, day)
        if progress is not None:
            progress(1)
    return len(work)
