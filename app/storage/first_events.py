"""When each meter's first event was written: one small entity per meter (issue 14,
session 14).

The alert evaluator seeds a per-user period whole by reading every user's rollups of
it (`app.services.alerts.seed.seed_periods`), because events written before its rules
were known everywhere (their basis) wrote no feed. For a meter whose first event was
written after the basis, every event wrote a feed, and that read would find nothing
the feeds do not bring: `benchmarks/ingest.py` (a new meter and 20 rules each round)
spent most of the rules' extra CPU in it. This record lets the evaluator know.

The entity (`meter-first-event`, named by the meter's key id) holds `At`:

- written with no `At` **before the meter exists** (`mark_new`, beside the org-wide
  marker), so before it can have events: none written yet;
- set to the time a batch begins to commit, **before that commit**, by the first batch
  of the meter that finds it unset (`note_written`, once per meter and process): every
  event of the meter was committed at or after `At`;
- and, in an entity of its own that nothing deletes (`UNFED_KIND`), that a backfill,
  which writes no feed, wrote events of it (`note_unfed`): read as the epoch.

A meter created before this record existed has none: unknown, never taken as "no
events". Only the first two states let the evaluator skip the read (`first_written`).
"""

from __future__ import annotations

import threading
from datetime import datetime

from app.core.slots import EPOCH
from app.storage import entities, rpc
from app.storage.entities import KeyPb

KIND = "meter-first-event"
#: One per meter that a backfill wrote events of (no feed): its periods are always read
UNFED_KIND = "meter-unfed-events"


class Unknown:
    """A meter without the record: created before it existed."""


UNKNOWN = Unknown()

#: (project, namespace, meter key id) whose record this process saw set: no need to look
_noted: set[tuple[str, str, int]] = set()
#: ... and those whose backfill mark this process wrote: never taken back, so written once
_unfed: set[tuple[str, str, int]] = set()
_noted_lock = threading.Lock()


def _key(meter_key_id: int) -> KeyPb:
    return entities.key(KIND, str(meter_key_id))


def mark_new(meter_key_id: int) -> None:
    """Record that the meter has no event yet (before the meter itself is created)."""
    entity = entities.Entity()
    entity.key.CopyFrom(_key(meter_key_id))
    rpc.commit([rpc.Mutation(upsert=entity)])


def note_written(meter_key_ids: set[int], now: datetime) -> None:
    """Before a batch commits events of these meters: set `At` to `now` where it is
    unset. One lookup per meter and process; a plain write, no transaction: of batches
    racing on a meter's first events, each writer took its `now` before a lookup that
    found `At` unset, so before the first of their writes landed, and every batch
    commits after that (it wrote, or found `At` set): whichever write lands last, no
    event was committed before `At`. (A transaction made eight first batches abort
    one another, `tests/test_last_meters.py`.)"""
    unseen = [m for m in meter_key_ids if entities.context_identity(m) not in _noted]
    if not unseen:
        return
    found = rpc.lookup([_key(m) for m in unseen])
    writes = []
    for meter_key_id in unseen:
        stored = found.get(_key(meter_key_id).SerializeToString())
        if stored is not None and "At" not in stored.properties:
            entities.set_time(stored, "At", now)
            stored.properties["At"].exclude_from_indexes = True
            writes.append(rpc.Mutation(upsert=stored))
    if writes:  # the legacy emulator refuses a write under contention: again
        rpc.retry_aborted(lambda: rpc.commit(writes), "the meters' first-event records")
    with _noted_lock:
        if len(_noted) > 100_000:
            _noted.clear()
        _noted.update(entities.context_identity(m) for m in unseen)


def note_unfed(meter_key_ids: set[int]) -> None:
    """Before a backfill (which writes no alert feed) commits events of these meters:
    record that they have events without feeds, for good, in an entity of its own
    (`UNFED_KIND`), which no write of the first-event record can undo. Once per meter
    and process: an import's many batches of one meter would otherwise write the same
    entity each time (Cloud Datastore takes about one write per second per entity)."""
    unwritten = sorted(m for m in meter_key_ids if entities.context_identity(m) not in _unfed)
    mutations = []
    for meter_key_id in unwritten:
        entity = entities.Entity()
        entity.key.CopyFrom(entities.key(UNFED_KIND, str(meter_key_id)))
        mutations.append(rpc.Mutation(upsert=entity))
    if mutations:
        rpc.retry_aborted(lambda: rpc.commit(mutations), "the meters' unfed-events records")
    with _noted_lock:
        if len(_unfed) > 100_000:
            _unfed.clear()
        _unfed.update(entities.context_identity(m) for m in unwritten)


def first_written(meter_key_id: int, transaction: bytes | None = None) -> datetime | Unknown | None:
    """None when the meter has no event yet; else a time no event of it was committed
    before (the epoch after a backfill); UNKNOWN for a meter older than the record."""
    record, unfed = _key(meter_key_id), entities.key(UNFED_KIND, str(meter_key_id))
    found = rpc.lookup([record, unfed], transaction)
    stored = found.get(record.SerializeToString())
    if stored is None:
        return UNKNOWN
    if unfed.SerializeToString() in found:
        return EPOCH
    return entities.get_time(stored, "At")
