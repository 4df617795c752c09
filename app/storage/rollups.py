"""Rollups: usage pre-aggregated per series, UTC day and 15-minute slot.

One `meter-rollup` entity holds one series (a user and one combination of
dimension values) of one meter for one UTC day, in two parts that add up:

- `Slots_`, the compacted base: one unindexed JSON string mapping each slot `q`
  (0..95, the quarter hours of the day) to its count, sum, min, max and, for
  `last` meters, the latest value and its rank (timestamp, CreatedAt, key id).
- deltas written by server-side transforms since the last compaction: `C{q}`
  count, `S{q}` sum of the non-negative values, `M{q}` sum of the negative ones
  (written only when there are any), `N{q}` min, `X{q}` max and, for `last`
  meters, `T{q}` the latest timestamp (µs), and `Dirty` = true. A `last` meter's
  deltas say when its latest event of the slot happened, not its value: readers
  and compaction read the raw events of that instant (`Cell.pending_ts`,
  `windows.settle_last`), one small query per (window, group) whose latest event
  is not compacted yet. Its base keeps count, rank and value (its sum, min and
  max are never read).

Compaction (`app.services.compact`) folds the deltas into `Slots_`, so reading a
day costs one small entity however many batches it took.

Sums stay exact although the server adds int64s that saturate (clamp) on
overflow: `Slots_` is JSON, whose integers Python keeps exact at any size, and
holds everything folded so far; the deltas hold only what arrived since. `S`
only ever grows and `M` only ever shrinks, so an accumulator that saturated
stays at INT64_MAX or INT64_MIN for good, and a later increment of the other
sign cannot hide it. `decode_parts` reports such slots as unknown: readers and
folders take them from the raw events (`app.services.recompute`), and ingestion
folds a rollup as soon as a commit's transform results show a sum accumulator
past 2**62 (`FOLD_AT`), long before a bound.

Fifteen minutes because every time-zone offset in use is a multiple of it, so a
local hour, day or month is always a whole number of slots. A day per entity
because a 30-day summary of a user then reads about 31 entities, whatever the
number of events.

Two ways to write them:
- `increments`: a blind upsert whose property transforms add to the counters and
  take the min and max on the server. No read, so concurrent batches of one hot
  user never wait on each other's locks. Needs Firestore in Datastore mode.
- `replacement`: the merged entity, written after reading it in the same
  transaction. Used on the legacy emulator (which ignores transforms), for values
  too large for int64 transforms, and when compacting, cancelling or rebuilding
  recomputes a slot.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, NamedTuple

from app.core.aggregation import Aggregation
from app.core.bounds import INT64_MAX as INT64_MAX  # re-exported for the suite
from app.core.bounds import INT64_MIN as INT64_MIN
from app.core.cells import Cell, Series

# Slots and days are the core's; readers of rollups find them here too.
from app.core.slots import SLOTS_PER_DAY as SLOTS_PER_DAY  # re-exported: a rollup is a day
from app.core.slots import day_and_slot as day_and_slot
from app.core.slots import slot_start as slot_start
from app.storage import entities, rpc, shards
from app.storage.entities import EntityPb, KeyPb

KIND = "meter-rollup"
#: Org-wide rollups (series of user `shards.ORG_USER`): a kind of their own, so that a
#: summary of all users queries only them (and an emulator, which scans a kind to answer
#: a query, scans a few entities per day rather than every user's rollups).
ORG_KIND = "meter-org-rollup"


def kind_of(series: Series) -> str:
    """The kind holding a series' rollups: org-wide ones apart from users'."""
    return ORG_KIND if series.user_id == shards.ORG_USER else KIND


_STATIC = ("MeterId", "UserId", "Day", "Series_", "Dirty")
#: Sum deltas at which an increment may have saturated (the server clamps).
INT64_BOUNDS = frozenset((INT64_MAX, INT64_MIN))
#: Sum deltas this far from zero are folded into the base at once (`ingest._fold`): a
#: batch adds at most about 2**55 to one, so it takes hundreds of commits landing during
#: one fold to go on to a bound, and folding needs no raw events before that.
FOLD_AT = 1 << 62


_quoted = json.encoder.encode_basestring_ascii  # json.dumps of one str, in C


@functools.lru_cache(maxsize=65536)  # a batch's series recur across batches (hot users)
def series_json(series: Series) -> str:
    """`Series_`, and what a rollup's key hashes: exactly `json.dumps({"u": user, "d":
    dimensions}, separators=(",", ":"), sort_keys=True)`, spelt out because that call
    builds an encoder each time, several µs per new series of a batch
    (`tests/test_storage_shape.py` holds the two equal). Dimensions are sorted pairs."""
    inner = ",".join(f"{_quoted(name)}:{_quoted(value)}" for name, value in series.dimensions)
    return f'{{"d":{{{inner}}},"u":{_quoted(series.user_id)}}}'


@functools.lru_cache(maxsize=65536)
def _digest(series: Series) -> str:
    return hashlib.sha256(series_json(series).encode("utf-8")).hexdigest()[:20]


def key_name(meter_key_id: int, series: Series, day: int, shard: int = 0) -> str:
    """The series hash first, so writes spread over the key range; shard 0 keeps the name
    rollups had before they were sharded (`app.storage.shards`)."""
    name = f"{_digest(series)}.{meter_key_id}.{day}"
    return f"{name}.{shard}" if shard else name


def shard_of(name: str) -> int:
    """The shard a rollup's key name says (see `key_name`)."""
    parts = name.split(".")
    return int(parts[3]) if len(parts) > 3 else 0


def meter_key_id_of(name: str) -> int:
    """The meter key id a rollup's key name says (see `key_name`)."""
    return int(name.split(".")[1])


def key(
    meter_key_id: int, series: Series, day: int, namespace: str | None = None, shard: int = 0
) -> KeyPb:
    """The rollup's key."""
    return entities.key(kind_of(series), key_name(meter_key_id, series, day, shard), namespace)


def _static(entity: EntityPb, meter_id: str, series: Series, day: int, dirty: bool) -> None:
    entities.set_string(entity, "MeterId", meter_id)
    entities.set_string(entity, "UserId", series.user_id)
    entities.set_int(entity, "Day", day)
    entities.set_string(entity, "Series_", series_json(series), indexed=False)
    entities.set_bool(entity, "Dirty", dirty)


# The deltas an aggregation reads: a sum meter never pays for minimum and maximum.
_DELTAS = {
    Aggregation.SUM: "CS",
    Aggregation.AVG: "CS",
    Aggregation.COUNT: "C",
    Aggregation.UNIQUE_COUNT: "C",
    Aggregation.MIN: "CN",
    Aggregation.MAX: "CX",
    Aggregation.LAST: "CT",
}


def adds_values(aggregation: str) -> bool:
    """Whether the aggregation's deltas sum event values (int64 on the server)."""
    # mypy: Aggregation is a str enum: the plain name finds its key
    return "S" in _DELTAS[aggregation]  # type: ignore[index]


def increments(
    meter_key_id: int,
    meter_id: str,
    series: Series,
    day: int,
    cells: dict[int, Cell],
    aggregation: str,
    mutation: Any = None,
    negatives: dict[int, int] | None = None,
    shard: int = 0,
) -> Any:
    """A blind upsert adding `cells` (slot -> Cell) to the stored rollup's deltas; built
    in `mutation` (say, a new one of a CommitRequest's) when given, else in a new one.
    `negatives` (slot -> sum of the cell's negative values, where it has any) splits a
    sum between `S` and `M`, so that neither accumulator ever changes direction. `shard`:
    which of the rollup's entities (`app.storage.shards`)."""
    if mutation is None:
        mutation = rpc.Mutation()
    _static(mutation.upsert, meter_id, series, day, dirty=True)
    entities.fill_key(
        mutation.upsert.key, kind_of(series), key_name(meter_key_id, series, day, shard)
    )
    mutation.property_mask.paths.extend(_STATIC)
    # mypy: Aggregation is a str enum: the plain name finds its key
    wanted = _DELTAS[aggregation]  # type: ignore[index]
    transforms = mutation.property_transforms
    for slot, cell in cells.items():
        for letter in wanted:
            transform = transforms.add()
            transform.property = f"{letter}{slot}"
            if letter == "C":
                transform.increment.integer_value = cell.count
            elif letter == "S":
                negative = negatives.get(slot, 0) if negatives else 0
                transform.increment.integer_value = cell.sum - negative
                if negative:
                    below = transforms.add()
                    below.property = f"M{slot}"
                    below.increment.integer_value = negative
            elif letter == "N":
                transform.minimum.integer_value = cell.min
            elif letter == "X":
                transform.maximum.integer_value = cell.max
            else:  # T: when the slot's latest event happened
                # mypy: T is written only for a cell with a rank
                transform.maximum.integer_value = cell.last_rank[0]  # type: ignore[index]
                _set_latest(mutation, slot, cell)
    return mutation


def _set_latest(mutation: Any, slot: int, cell: Cell) -> None:
    """Name the batch's latest event of the slot, with its value, in a property of its own:
    `L{slot}_{timestamp}_{recorded}_{key id}` = value (unindexed). Batches never write one
    name twice (the key id is the event's), so the rollup keeps each batch's candidate
    until compaction, and a reader takes the one of largest rank (`_latest_of`), which is
    the slot's latest event without reading any raw event."""
    # mypy: `last` cells always have a rank and a value
    name = "L{}_{}_{}_{}".format(slot, *cell.last_rank)  # type: ignore[misc]
    entities.set_int(mutation.upsert, name, cell.last_value, indexed=False)  # type: ignore[arg-type]
    mutation.property_mask.paths.append(name)


def _pack(cells: dict[int, Cell]) -> str:
    packed = {}
    for slot, cell in sorted(cells.items()):
        if cell.pending_ts is not None:
            raise ValueError(f"slot {slot} has unread `last` events: settle it first")
        if cell.count:
            fields: list[Any] = [cell.count, cell.sum, cell.min, cell.max]
            if cell.last_rank is not None:  # only `last` meters need the rank
                fields += [list(cell.last_rank), cell.last_value]
            packed[str(slot)] = fields
    return json.dumps(packed, separators=(",", ":"))


def packed_cell(fields: list[Any]) -> Cell:
    """The Cell of one slot as `Slots_` packs it: [count, sum, min, max(, rank, last)]."""
    if len(fields) == 4:  # every meter but `last`
        return Cell(fields[0], fields[1], fields[2], fields[3])
    return Cell(fields[0], fields[1], fields[2], fields[3], tuple(fields[4]), fields[5])


def replacement(
    key_pb: KeyPb, meter_id: str, series: Series, day: int, cells: dict[int, Cell]
) -> Any:
    """The whole rollup holding exactly `cells`, compacted (no deltas)."""
    entity = entities.Entity()
    entity.key.CopyFrom(key_pb)
    _static(entity, meter_id, series, day, dirty=False)
    entities.set_string(entity, "Slots_", _pack(cells), indexed=False)
    return rpc.Mutation(upsert=entity)


class RollupParts(NamedTuple):
    """A stored rollup, not yet added up (`decode_parts`).

    `base` maps each compacted slot, as text, to its packed fields (see `packed_cell`);
    `deltas` maps slots to what transforms added since. `unknown` holds the slots whose
    sum deltas sit at an int64 bound, where the server's increments may have saturated:
    neither `base` nor `deltas` holds them, and the caller must take them from the raw
    events (`recompute.rewritten`, which folds every shard)."""

    series: Series
    day: int
    base: dict[str, list[Any]]
    deltas: dict[int, Cell]
    unknown: set[int]


class Rollup(NamedTuple):
    """A stored rollup added up (`decode`): slot -> Cell of its base plus its deltas,
    except the `unknown` slots (see `RollupParts`), which only the raw events can give."""

    meter_id: str
    series: Series
    day: int
    cells: dict[int, Cell]
    unknown: set[int]
    dirty: bool  # deltas wait to be folded into the base


def decode_parts(entity: EntityPb) -> RollupParts:
    """The parts of a stored rollup. Summaries merge the packed base fields directly:
    making a Cell of every slot cost them more than everything else per slot."""
    props = entity.properties
    described = json.loads(props["Series_"].string_value)
    series = Series(described["u"], tuple(sorted(described["d"].items())))
    slots = props.get("Slots_")
    base = json.loads(slots.string_value or "{}") if slots is not None else {}
    deltas, unknown = {}, set()
    latest: dict[int, tuple[tuple[int, ...], int]] | None = None
    # One pass over the properties, each delta filed by its letter and slot (a lookup per
    # letter and slot in the protobuf map, five per slot, cost more than the rest).
    delta_of: dict[str, dict[str, int]] = {letter: {} for letter in _DELTA_LETTERS}
    for name, value in props.items():
        letter = name[0]
        if letter == "L":
            latest = _latest_of(latest, name, value.integer_value)
        elif letter in delta_of and name[1:].isdigit():
            delta_of[letter][name[1:]] = value.integer_value
    sums, negatives = delta_of["S"], delta_of["M"]
    lows, highs, moments = delta_of["N"], delta_of["X"], delta_of["T"]
    for slot, count in delta_of["C"].items():
        if count <= 0:
            continue
        positive, negative = sums.get(slot, 0), negatives.get(slot, 0)
        if positive in INT64_BOUNDS or negative in INT64_BOUNDS:
            unknown.add(int(slot))
            base.pop(slot, None)
            continue
        delta = Cell(count, positive + negative, lows.get(slot), highs.get(slot))
        delta.pending_ts = moments.get(slot)
        if delta.pending_ts is not None:
            delta.pending_at = (series,)
        deltas[int(slot)] = delta
    if latest:
        _resolve_latest(deltas, latest)
    return RollupParts(series, props["Day"].integer_value, base, deltas, unknown)


_DELTA_LETTERS = "CSMNXT"  # count, sum (non-negative, negative), min, max, latest time


def _latest_of(
    latest: dict[int, tuple[tuple[int, ...], int]] | None, name: str, value: int
) -> dict[int, tuple[tuple[int, ...], int]]:
    """Keep, per slot, the (rank, value) of the largest rank among `L` properties."""
    slot, *rank = (int(part) for part in name[1:].split("_"))
    latest = {} if latest is None else latest
    candidate = (tuple(rank), value)
    if slot not in latest or candidate > latest[slot]:
        latest[slot] = candidate
    return latest


_Latest = dict[int, tuple[tuple[int, ...], int]]  # slot -> (rank, value) of its latest event


def _resolve_latest(deltas: dict[int, Cell], latest: _Latest) -> None:
    """Give each `last` delta the value its `L` properties name. A slot's deltas still
    point at raw events (`pending_ts`) only when an older writer left a later timestamp
    (`T`) than any `L` names."""
    for slot, (rank, value) in latest.items():
        delta = deltas.get(slot)
        if delta is None:  # deltas without a count cannot be: ignore a stray name
            continue
        delta.merge_last(rank, value)
        if delta.pending_ts is not None and delta.pending_ts <= rank[0]:
            delta.pending_ts, delta.pending_at = None, ()


def decode(entity: EntityPb) -> Rollup:
    """The `Rollup` of a stored rollup entity."""
    parts = decode_parts(entity)
    cells = {int(slot): packed_cell(fields) for slot, fields in parts.base.items()}
    for slot, delta in parts.deltas.items():
        cells.setdefault(slot, Cell()).merge(delta)
    return Rollup(
        entity.properties["MeterId"].string_value,
        parts.series,
        parts.day,
        cells,
        parts.unknown,
        is_dirty(entity),
    )


def is_dirty(entity: EntityPb) -> bool:
    """Whether deltas wait to be folded into the base."""
    dirty = entity.properties.get("Dirty")
    return dirty is not None and dirty.boolean_value


# -- whether a meter's org-wide rollups hold all its history ---------------------------

#: One entity per meter, keyed by the meter's key id, written when the meter's org-wide
#: rollups are known to hold every event: at the meter's creation (before it can have
#: any) or at the end of a whole rebuild. Meters older than org-wide rollups (or whose
#: events another writer stored) have none until rebuilt, and summaries of all users read
#: their user rollups meanwhile: slower, never wrong. A kind of its own, because the Go
#: side reads `meter` entities and would refuse a property it does not know.
ORG_WIDE_KIND = "meter-org-complete"
_org_wide_known: set[tuple[str, str, int]] = set()  # (project, namespace, meter): marked


def _marker_key(meter_key_id: int) -> KeyPb:
    return entities.key(ORG_WIDE_KIND, str(meter_key_id))


def mark_org_wide(meter_key_id: int) -> None:
    """Record that the meter's org-wide rollups hold all its events."""
    entity = entities.Entity()
    entity.key.CopyFrom(_marker_key(meter_key_id))
    entities.set_bool(entity, "Complete", True)
    rpc.commit([rpc.Mutation(upsert=entity)])
    _org_wide_known.add(entities.context_identity(meter_key_id))


def org_wide(meter_key_id: int) -> bool:
    """Whether summaries of all users may read the meter's org-wide rollups. Remembered
    once true (a marker is never taken back; a purged org's namespace is never reused)."""
    identity = entities.context_identity(meter_key_id)
    if identity in _org_wide_known:
        return True
    if not rpc.lookup([_marker_key(meter_key_id)]):
        return False
    _org_wide_known.add(identity)
    return True
