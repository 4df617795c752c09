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
- set to the epoch by a backfill, which writes no feed (`note_unfed`).

A meter created before this record existed has none: unknown, never taken as "no
events". Only the first two states let the evaluator skip the read (`first_written`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from google.cloud import ndb

from app.storage import entities, rpc
from app.storage.entities import KeyPb

KIND = "meter-first-event"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Unknown:
    """A meter without the record: created before it existed."""


UNKNOWN = Unknown()

#: (project, namespace, meter key id) whose record this process saw set: no need to look
_noted: set[tuple[str, str, int]] = set()
_noted_lock = threading.Lock()


def _key(meter_key_id: int) -> KeyPb:
    return entities.key(KIND, str(meter_key_id))


def _identity(meter_key_id: int) -> tuple[str, str, int]:
    context = ndb.get_context()
    return context.client.project, context.get_namespace() or "", meter_key_id


def mark_new(meter_key_id: int) -> None:
    """Record that the meter has no event yet (before the meter itself is created)."""
    entity = entities.Entity()
    entity.key.CopyFrom(_key(meter_key_id))
    rpc.commit([rpc.Mutation(upsert=entity)])


def note_written(meter_key_ids: set[int], now: datetime) -> None:
    """Before a batch commits events of these meters: set `At` to `now` where it is
    unset. One lookup per meter and process at most; once set, `At` never moves later."""
    unseen = [m for m in meter_key_ids if _identity(m) not in _noted]
    if not unseen:
        return
    found = rpc.lookup([_key(m) for m in unseen])
    for meter_key_id in unseen:
        stored = found.get(_key(meter_key_id).SerializeToString())
        if stored is not None and "At" not in stored.properties:
            _set_if_unset(meter_key_id, now)
        with _noted_lock:
            if len(_noted) > 100_000:
                _noted.clear()
            _noted.add(_identity(meter_key_id))


def _set_if_unset(meter_key_id: int, now: datetime) -> None:
    """Set `At` in a transaction, unless another batch set it first."""

    def attempt() -> None:
        with rpc.transaction() as transaction:
            stored = rpc.lookup([_key(meter_key_id)], transaction).get(
                _key(meter_key_id).SerializeToString()
            )
            if stored is None or "At" in stored.properties:
                rpc.rollback(transaction)
                return
            entities.set_time(stored, "At", now)
            stored.properties["At"].exclude_from_indexes = True
            rpc.commit([rpc.Mutation(upsert=stored)], transaction)

    rpc.retry_aborted(attempt, "the meter's first event")


def note_unfed(meter_key_ids: set[int]) -> None:
    """Before a backfill (which writes no alert feed) commits events of these meters:
    `At` goes to the epoch, for good, where the record exists."""
    found = rpc.lookup([_key(m) for m in meter_key_ids])
    mutations = []
    for stored in found.values():
        entities.set_time(stored, "At", EPOCH)
        stored.properties["At"].exclude_from_indexes = True
        mutations.append(rpc.Mutation(upsert=stored))
    if mutations:
        rpc.commit(mutations)


def first_written(meter_key_id: int, transaction: bytes | None = None) -> datetime | Unknown | None:
    """None when the meter has no event yet; else a time no event of it was committed
    before (the epoch after a backfill); UNKNOWN for a meter older than the record."""
    stored = rpc.lookup([_key(meter_key_id)], transaction).get(
        _key(meter_key_id).SerializeToString()
    )
    if stored is None:
        return UNKNOWN
    return entities.get_time(stored, "At")
