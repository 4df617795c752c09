"""Compaction: folding rollup deltas into their compacted base.

Ingestion's fast path adds to a rollup with server-side transforms, one set of
delta properties per touched slot, and marks it `Dirty`. Reads stay exact either
way (base plus deltas), but an uncompacted day costs more to read. Compaction
finds dirty rollups (an ancestor query on the built-in `Dirty` index) and, one
transaction each, reads every shard of the rollup (`app.storage.shards`) and writes them
back as one compacted shard 0, deleting the others. A blind write
racing with it waits for the transaction and lands on top, marking it dirty
again. Run by `metering rollups compact` and meant for a periodic job.

A slot whose int64 sum deltas may have saturated is folded from its raw events
instead (`recompute.rewritten`), so the base, whose JSON integers have no
bound, takes the exact sum; ingestion compacts a rollup at once when a commit's
transform results show a sum accumulator near such a bound.
"""

from __future__ import annotations

from collections.abc import Callable

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app.core.cells import Series
from app.services import recompute
from app.storage import queries, rollups, rpc
from app.storage.entities import KeyPb

PAGE = 500


def dirty_keys(limit: int = PAGE) -> list[KeyPb]:
    """Keys of up to `limit` rollups of the current org with deltas to fold."""
    keys: list[KeyPb] = []
    # Org-wide rollups first: every summary of all users reads them, and they are few.
    for kind in (rollups.ORG_KIND, rollups.KIND):
        if len(keys) >= limit:
            break
        query = queries.build(kind, [("Dirty", q.PropertyFilter.Operator.EQUAL, True)])
        query.projection.add().property.name = "__key__"
        query.limit.value = limit - len(keys)
        keys += [entity.key for entity in rpc.run_query(query, ndb.get_context().get_namespace())]
    return keys


def _group_of(key_pb: KeyPb) -> tuple[int, str, Series, int] | None:
    """(meter key id, meter id, series, day) of a dirty rollup, or None when it is gone or
    clean (read outside a transaction: which shards to fold is decided next)."""
    stored = rpc.lookup([key_pb]).get(key_pb.SerializeToString())
    if stored is None or not rollups.is_dirty(stored):
        return None
    meter_key_id = rollups.meter_key_id_of(key_pb.path[-1].name)
    rollup = rollups.decode_parts(stored)
    return meter_key_id, stored.properties["MeterId"].string_value, rollup.series, rollup.day


def _compact_once(key_pb: KeyPb) -> bool:
    """Fold every shard of the rollup `key_pb` belongs to into shard 0 (`rewritten`)."""
    group = _group_of(key_pb)
    if group is None:
        return False
    meter_key_id, meter_id, series, day = group
    keys = recompute.group_keys(meter_key_id, meter_id, series, day)
    with rpc.transaction() as transaction:
        stored = recompute.read_group(keys, transaction)
        if not any(rollups.is_dirty(entity) for entity in stored) and len(stored) < 2:
            rpc.rollback(transaction)
            return False
        rpc.commit(
            recompute.rewritten(meter_key_id, meter_id, series, day, stored, transaction, set()),
            transaction,
        )
        return True


def compact_one(key_pb: KeyPb) -> bool:
    """Compact one rollup; whether it had deltas."""
    return bool(rpc.retry_aborted(lambda: _compact_once(key_pb), "compaction"))


def compact_org(progress: Callable[[int], object] | None = None) -> int:
    """Compact every dirty rollup of the current org; how many were compacted."""
    done = 0
    while True:  # pages until one comes back short: ingestion may keep dirtying rollups
        keys = dirty_keys()
        for key_pb in keys:
            done += compact_one(key_pb)
            if progress is not None:
                progress(1)
        if len(keys) < PAGE:
            return done
