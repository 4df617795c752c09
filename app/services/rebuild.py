"""Rebuilding a meter's rollups from its raw events (`metering rollups rebuild`).

Rollups are derived data: for every (series, UTC day) that has raw events or a
stored rollup, user series and org-wide ones alike, one transaction reads every
shard of the rollup (serializing with concurrent ingestion of that series),
recomputes every slot from the live raw events of that day, and writes the result
as shard 0, deleting the other shards, or deletes a rollup left with no events.
Running it twice gives the same rollups; it also brings in events that another
writer (the Go service) stored without rollups.
"""

from __future__ import annotations

from collections.abc import Callable

from app.core.cells import Series
from app.core.slots import day_and_slot
from app.models import Meter
from app.services import recompute
from app.storage import entities, queries, rollups, rpc, shards
from app.storage.entities import KeyPb


def targets(meter: Meter) -> list[tuple[Series, int]]:
    """Every (series, day) of the meter with raw events or a stored rollup: each event's
    user series and its org-wide series."""
    found = set()
    for entity in queries.events(meter.id_, None, None, None):
        event = entities.decode_event(entity)
        day = day_and_slot(event.timestamp)[0]
        found.add((event.series, day))
        found.add((shards.org_series(event.series), day))
    for user in (None, shards.ORG_USER):  # every user's rollups, then the org-wide ones
        for entity in queries.rollups(meter.id_, user, None, None):
            rollup = rollups.decode_parts(entity)
            found.add((rollup.series, rollup.day))
    return sorted(found, key=lambda item: (item[1], rollups.series_json(item[0])))


def _rebuild_once(meter: Meter, series: Series, day: int, keys: list[KeyPb]) -> None:
    with rpc.transaction() as transaction:
        # read first: concurrent writers wait or retry
        stored = recompute.read_group(keys, transaction)
        mutations = recompute.rewritten(meter.key.id(), meter.id_, series, day, stored, transaction)
        rpc.commit(mutations, transaction)


def rebuild_one(meter: Meter, series: Series, day: int) -> None:
    """Recompute one rollup (every shard, into shard 0) from the raw events, retrying on
    contention."""
    keys = recompute.group_keys(meter.key.id(), meter.id_, series, day)
    rpc.retry_aborted(lambda: _rebuild_once(meter, series, day, keys), "rebuilding")


def rebuild_meter(
    meter: Meter,
    progress: Callable[[int], object] | None = None,
    work: list[tuple[Series, int]] | None = None,
    whole: bool | None = None,
) -> int:
    """Rebuild every rollup of a meter (or the `work` of `targets`); returns how many.
    A whole rebuild (no `work`, or `whole`: the work is all of `targets`) marks the
    meter's org-wide rollups complete (`rollups.mark_org_wide`): from then on summaries
    of all users read those."""
    whole = work is None if whole is None else whole
    work = targets(meter) if work is None else work
    for series, day in work:
        rebuild_one(meter, series, day)
        if progress is not None:
            progress(1)
    if whole:
        rollups.mark_org_wide(meter.key.id())
    return len(work)
