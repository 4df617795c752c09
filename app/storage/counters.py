"""Limit counters (issue 16): one small entity per (meter, user, limit period), shards.

A limit check must answer in a few milliseconds with a constant number of reads, so the
value a limit compares with is kept where ingestion already writes: each batch of a
meter with limits also adds, in the same commit, its events to a `limit-counter` of each
user it touches for the period (day or month in the limits' zone) its events fall in.
`V` holds the sum, the count or the maximum (by the meter's aggregation), `N` the
number of batches that wrote the entity (the legacy emulator's consistent cut compares
it). With transforms these are blind increments (no read, like the rollups); where the
service merges by hand (the legacy emulator), shard 0 is read in the batch's transaction
and replaced.

A busy user's counter is spread over `SHARDS` entities (key name, then `.k`), like the
rollups (`app.storage.shards`); a check reads all of them and the seed in one lookup.
The number is fixed, not configurable: a check must know every key without a query.

`limit-seed` (same key name, another kind) is the counter's starting point, read once
from the summary engine: the value of the period at a cut, and the counters' total at
that cut (`app/services/limits/check.py`).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any, NamedTuple

from app.storage import entities, rpc

COUNTER_KIND, SEED_KIND = "limit-counter", "limit-seed"
SHARDS = 8
#: |V| beyond this and an increment might saturate int64 on the server: read the
#: summary engine instead (exact at any size).
TRUSTED_MAGNITUDE = 1 << 62


class Spec(NamedTuple):
    """What a meter's limits count: calendar `period` in `zone`, of `aggregation`."""

    period: str
    zone: str
    aggregation: str
    counting_since: datetime


class Tally(NamedTuple):
    """One batch's (or the stored shards') part of a counter."""

    value: int
    batches: int


class Seed(NamedTuple):
    value: int  # the period's value at the cut
    counted: int  # the counters' V (sum, or max) at the cut
    seeded_at: datetime


def key_name(meter_key_id: int, user_id: str, spec: Spec, period_start: datetime) -> str:
    """The base key name of a counter (and its seed): a hash of what it counts."""
    parts = (meter_key_id, user_id, spec.period, spec.zone, period_start.isoformat())
    raw = hashlib.sha256("\x00".join(repr(part) for part in parts).encode()).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:32]


def shard_name(name: str, shard: int) -> str:
    return name if shard == 0 else f"{name}.{shard}"


def counter_keys(name: str) -> list[Any]:
    return [entities.key(COUNTER_KIND, shard_name(name, shard)) for shard in range(SHARDS)]


def seed_key(name: str) -> Any:
    return entities.key(SEED_KIND, name)


def increment(name: str, shard: int, meter_id: str, part: Tally, maximum: bool) -> Any:
    """A blind upsert adding `part` to one shard (the server applies it: no read)."""
    mutation = rpc.Mutation()
    entities.fill_key(mutation.upsert.key, COUNTER_KIND, shard_name(name, shard))
    entities.set_string(mutation.upsert, "MeterId", meter_id, indexed=False)
    mutation.property_mask.paths.append("MeterId")  # keep V and N: only MeterId is set
    value = mutation.property_transforms.add()
    value.property = "V"
    if maximum:
        value.maximum.integer_value = part.value
    else:
        value.increment.integer_value = part.value
    batches = mutation.property_transforms.add()
    batches.property = "N"
    batches.increment.integer_value = part.batches
    return mutation


def replacement(name: str, meter_id: str, stored: Any, part: Tally, maximum: bool) -> Any:
    """Shard 0 replaced with `stored` (its entity read in the batch's transaction, or
    None) plus `part`: for commits that merge by hand."""
    before = tally_of(stored) if stored is not None else Tally(0, 0)
    value = max(before.value, part.value) if maximum else before.value + part.value
    mutation = rpc.Mutation()
    entity = mutation.upsert
    entities.fill_key(entity.key, COUNTER_KIND, name)
    entities.set_string(entity, "MeterId", meter_id, indexed=False)
    entities.set_int(entity, "V", value, indexed=False)
    entities.set_int(entity, "N", before.batches + part.batches, indexed=False)
    return mutation


def tally_of(entity: Any) -> Tally:
    props = entity.properties
    value = props["V"].integer_value if "V" in props else 0
    batches = props["N"].integer_value if "N" in props else 0
    return Tally(value, batches)


def seed_mutation(name: str, seed: Seed) -> Any:
    mutation = rpc.Mutation()
    entity = mutation.upsert
    entities.fill_key(entity.key, SEED_KIND, name)
    entities.set_string(entity, "Value", str(seed.value), indexed=False)
    entities.set_string(entity, "Counted", str(seed.counted), indexed=False)
    entities.set_time(entity, "SeededAt", seed.seeded_at)
    entity.properties["SeededAt"].exclude_from_indexes = True
    return mutation


def seed_of(entity: Any) -> Seed | None:
    props = entity.properties
    at = entities.get_time(entity, "SeededAt")
    if at is None or "Value" not in props:
        return None
    return Seed(int(props["Value"].string_value), int(props["Counted"].string_value), at)
