"""Compaction: folding rollup deltas into their compacted base.

Ingestion's fast path adds to a rollup with server-side transforms, one set of
delta properties per touched slot, and marks it `Dirty`. Reads stay exact either
way (base plus deltas), but an uncompacted day costs more to read. Compaction
finds dirty rollups (an ancestor query on the built-in `Dirty` index) and, one
transaction each, reads the rollup and writes it back compacted. A blind write
racing with it waits for the transaction and lands on top, marking it dirty
again. Run by `metering rollups compact` and meant for a periodic job.

A slot whose int64 sum deltas may have saturated is folded from its raw events
instead (`recompute.exact_cells`), so the base, whose JSON integers have no
bound, takes the exact sum; ingestion compacts a rollup at once when a commit's
transform results show a sum accumulator near such a bound.
"""

from __future__ import annotations

from collections.abc import Callable

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app.services import recompute
from app.storage import queries, rollups, rpc
from app.storage.entities import KeyPb

PAGE = 500


def dirty_keys(limit: int = PAGE) -> list[KeyPb]:
    """Keys of up to `limit` rollups of the current org with deltas to fold."""
    query = queries.build("meter-rollup", [("Dirty", q.PropertyFilter.Operator.EQUAL, True)])
    query.projection.add().property.name = "__key__"
    query.limit.value = limit
    return [entity.key for entity in rpc.run_query(query, ndb.get_context().get_namespace())]


def _compact_once(key_pb: KeyPb) -> bool:
    with rpc.transaction() as transaction:
        stored = rpc.lookup([key_pb], transaction).get(key_pb.SerializeToString())
        if stored is None or not rollups.is_dirty(stored):
            rpc.rollback(transaction)
            return False
        rollup = rollups.decode(stored)
        cells = recompute.settled(
            rollup.meter_id, recompute.exact_cells(rollup), transaction
        )  # `last` values, by reading
        rpc.commit(
            [rollups.replacement(key_pb, rollup.meter_id, rollup.series, rollup.day, cells)],
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
