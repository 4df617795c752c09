"""Rollups: usage pre-aggregated per series, UTC day and 15-minute slot.

One `meter-rollup` entity holds one series (a user and one combination of
dimension values) of one meter for one UTC day. Slot `q` (0..95, the quarter
hours of the day) keeps `C{q}` count, `S{q}` sum, `N{q}` min and `X{q}` max; a
`last` meter also keeps `L{q}` (value of the latest event) and `R{q}` (its rank:
timestamp, CreatedAt and key id, as one sortable string).

Fifteen minutes because every time-zone offset in use is a multiple of it, so a
local hour, day or month is always a whole number of slots. A day per entity
because a 30-day summary of a user then reads about 31 entities, whatever the
number of events.

Two ways to write them:
- `increments`: a blind upsert whose property transforms add to the counters and
  take the min and max on the server. No read, so concurrent batches of one hot
  user never wait on each other's locks. Needs Firestore in Datastore mode.
- `replacement`: the merged entity, written after reading it in the same
  transaction. Used for `last` meters (a value chosen by rank cannot be a
  transform), on the legacy emulator (which ignores transforms), and when
  cancelling or rebuilding recomputes a slot.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from app.storage import entities, rpc
from app.services.windows import Cell, Series

KIND = "meter-rollup"
SLOT = timedelta(minutes=15)
SLOTS_PER_DAY = 96
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_STATIC = ("MeterId", "UserId", "Day", "Series_")


def day_and_slot(moment: datetime) -> tuple[int, int]:
    """(UTC day number since the epoch, quarter-hour slot of that day)."""
    delta = moment - _EPOCH
    return delta.days, delta.seconds // 900


def slot_start(day: int, slot: int) -> datetime:
    return _EPOCH + timedelta(days=day, minutes=15 * slot)


def series_json(series: Series) -> str:
    return json.dumps({"u": series.user_id, "d": dict(series.dimensions)},
                      separators=(",", ":"), sort_keys=True)


def series_of(user_id: str, dimensions: dict) -> Series:
    return Series(user_id, tuple(sorted(dimensions.items())))


def key(meter_key_id: int, series: Series, day: int, namespace: str | None = None):
    """The rollup's key: the series hash first, so writes spread over the key range."""
    digest = hashlib.sha256(series_json(series).encode("utf-8")).hexdigest()[:20]
    return entities.key(KIND, f"{digest}.{meter_key_id}.{day}", namespace)


def rank_text(rank: tuple) -> str:
    return ".".join(f"{part:020d}" for part in rank)


def _rank_of(text: str) -> tuple:
    return tuple(int(part) for part in text.split("."))


def _static(entity, meter_id: str, series: Series, day: int) -> None:
    entities.set_string(entity, "MeterId", meter_id)
    entities.set_string(entity, "UserId", series.user_id)
    entities.set_int(entity, "Day", day)
    entities.set_string(entity, "Series_", series_json(series), indexed=False)


def increments(key_pb, meter_id: str, series: Series, day: int, cells: dict[int, Cell]):
    """A blind upsert adding `cells` (slot -> Cell) to the stored rollup."""
    mutation = rpc.Mutation()
    _static(mutation.upsert, meter_id, series, day)
    mutation.upsert.key.CopyFrom(key_pb)
    mutation.property_mask.paths.extend(_STATIC)
    for slot, cell in sorted(cells.items()):
        for name, op, value in ((f"C{slot}", "increment", cell.count),
                                (f"S{slot}", "increment", cell.sum),
                                (f"N{slot}", "minimum", cell.min),
                                (f"X{slot}", "maximum", cell.max)):
            transform = mutation.property_transforms.add()
            transform.property = name
            getattr(transform, op).integer_value = value
    return mutation


def replacement(key_pb, meter_id: str, series: Series, day: int, cells: dict[int, Cell]):
    """The whole rollup entity holding exactly `cells` (empty slots left out)."""
    entity = entities.Entity()
    entity.key.CopyFrom(key_pb)
    _static(entity, meter_id, series, day)
    for slot, cell in sorted(cells.items()):
        if cell.count == 0:
            continue
        entities.set_int(entity, f"C{slot}", cell.count, indexed=False)
        entities.set_int(entity, f"S{slot}", cell.sum, indexed=False)
        entities.set_int(entity, f"N{slot}", cell.min, indexed=False)
        entities.set_int(entity, f"X{slot}", cell.max, indexed=False)
        if cell.last_rank is not None:
            entities.set_int(entity, f"L{slot}", cell.last_value, indexed=False)
            entities.set_string(entity, f"R{slot}", rank_text(cell.last_rank), indexed=False)
    return rpc.Mutation(upsert=entity)


def decode(entity) -> tuple[Series, int, dict[int, Cell]]:
    """(series, day, slot -> Cell) of a stored rollup."""
    described = json.loads(entity.properties["Series_"].string_value)
    series = Series(described["u"], tuple(sorted(described["d"].items())))
    day = entity.properties["Day"].integer_value
    props = entity.properties
    cells: dict[int, Cell] = {}
    for name, value in props.items():
        if name[0] != "C" or not name[1:].isdigit():
            continue
        slot = int(name[1:])
        count = value.integer_value
        if count <= 0:
            continue
        cell = Cell(count=count, sum=props[f"S{slot}"].integer_value,
                    min=props[f"N{slot}"].integer_value, max=props[f"X{slot}"].integer_value)
        if f"R{slot}" in props:
            cell.last_rank = _rank_of(props[f"R{slot}"].string_value)
            cell.last_value = props[f"L{slot}"].integer_value
        cells[slot] = cell
    return series, day, cells
