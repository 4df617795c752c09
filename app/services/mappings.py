"""How meters read CloudEvents: their mapping (event type, value path, dimension paths).

A meter created through the OpenMeter API stores its mapping (`MeterMapping`); a meter
created through the native API has none and reads events whose `type` is its event name,
its value at `$.value` and each declared dimension at `$.<name>`, so every meter is
usable through both APIs. Ingestion asks for the active meters of an event type: those
whose stored mapping names the type (an ancestor query on `EventType`), and the native
meter whose event name is the type when it has no mapping of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.cloud import ndb

from app.core import jsonpath
from app.errors import ValidationFailed
from app.models import Meter, root_key
from app.models.meter_mapping import MeterMapping
from app.services import meters as meter_service

#: The dimension a UNIQUE_COUNT meter created through the OpenMeter API counts the
#: distinct values of (its `valueProperty`'s); not one of its groupBy keys.
UNIQUE_DIMENSION = "unique_value"


@dataclass(frozen=True)
class Mapping:
    """A meter's reading of CloudEvents, paths parsed."""

    event_type: str
    value_property: str | None
    group_by: dict[str, str]
    description: str | None = None
    event_from: datetime | None = None
    stored: bool = False  # False: the native meter's default
    value_keys: tuple[str, ...] | None = field(default=None, compare=False)
    group_keys: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, entity: MeterMapping) -> Mapping:
        return cls.build(
            entity.event_type,
            entity.value_property,
            dict(entity.group_by),
            description=entity.description,
            event_from=entity.event_from,
            stored=True,
        )

    @classmethod
    def build(
        cls,
        event_type: str,
        value_property: str | None,
        group_by: dict[str, str],
        **rest: Any,
    ) -> Mapping:
        return cls(
            event_type,
            value_property,
            group_by,
            value_keys=jsonpath.parse(value_property) if value_property else None,
            group_keys={name: jsonpath.parse(path) for name, path in group_by.items()},
            **rest,
        )


def default_mapping(meter: Meter) -> Mapping:
    """The reading of a meter that has no stored mapping (created natively)."""
    value = None
    if meter.aggregation_type == "unique_count":
        value = f"$.{meter.unique_by}" if meter.unique_by != "userId" else None
    elif meter.aggregation_type != "count":
        value = "$.value"
    dimensions = [name for name in meter.dimensions if name != meter.unique_by]
    return Mapping.build(meter.event_name, value, {name: f"$.{name}" for name in dimensions})


def meter_key(meter_key_id: int | str) -> ndb.Key:
    return ndb.Key(Meter.KIND, int(meter_key_id), parent=root_key())


def mappings_of(meters: Iterable[Meter]) -> list[Mapping]:
    """Each meter's mapping, stored or default, with one batched lookup."""
    meters = list(meters)
    stored = ndb.get_multi([MeterMapping.key_for(meter.key.id()) for meter in meters])
    return [
        Mapping.of(entity) if entity is not None else default_mapping(meter)
        for meter, entity in zip(meters, stored)
    ]


def mapping_of(meter: Meter) -> Mapping:
    return mappings_of([meter])[0]


def meters_for_type(event_type: str) -> list[tuple[Meter, Mapping]]:
    """The active meters that consume CloudEvents of this type, with their mappings."""
    entities = MeterMapping.query(
        MeterMapping.event_type == event_type, ancestor=root_key()
    ).fetch()
    found = ndb.get_multi([meter_key(entity.key.id()) for entity in entities])
    pairs = [
        (meter, Mapping.of(entity))
        for meter, entity in zip(found, entities)
        if meter is not None and not meter.deleted
    ]
    native = meter_service.find_by_event_name(event_type)
    if (
        native is not None
        and all(meter.key != native.key for meter, _ in pairs)
        and not _has_mapping(native)
    ):
        pairs.append((native, default_mapping(native)))
    return sorted(pairs, key=lambda pair: pair[0].key.id())


#: (project, namespace, meter key id) of meters known to have no stored mapping. Safe to
#: remember: the one way such a meter gets a mapping, an OpenMeter PUT, stores its
#: default paths (`require_default_paths`), so a stale entry reads the same paths.
_UNMAPPED: set[tuple[str, str, int]] = set()


def _has_mapping(meter: Meter) -> bool:
    """Whether the meter has a stored mapping (one lookup, then remembered if not)."""
    context = ndb.get_context()
    identity = (context.client.project, context.get_namespace() or "", meter.key.id())
    if identity in _UNMAPPED:
        return False
    if MeterMapping.key_for(identity[2]).get() is not None:
        return True
    if len(_UNMAPPED) > 100_000:
        _UNMAPPED.clear()
    _UNMAPPED.add(identity)
    return False


def require_default_paths(meter: Meter, group_by: dict[str, str]) -> None:
    """A native meter (no stored mapping) keeps reading `$.<dimension>`: an OpenMeter PUT
    may change its groupBy's names (while it has no events), not the paths."""
    for name, path in group_by.items():
        if path != f"$.{name}":
            raise ValidationFailed(
                f"meter group by {name} must be $.{name}: a meter created through the "
                "native API reads each dimension at $.<name>",
                param=f"groupBy.{name}",
            )


def save(meter: Meter, mapping: Mapping) -> None:
    """Store a meter's mapping (inside the caller's transaction, if any)."""
    MeterMapping(
        key=MeterMapping.key_for(meter.key.id()),
        event_type=mapping.event_type,
        value_property=mapping.value_property,
        group_by=dict(mapping.group_by),
        description=mapping.description,
        event_from=mapping.event_from,
    ).create()
