"""Entity protobufs built by hand, identical to what the NDB models store.

`event_template` and `fill_event` encode a `meter-event` exactly as `MeterEvent.put()`
would (the same property names, value types and indexed flags;
`tests/test_raw_encoding.py` compares the two), at a few microseconds instead of a few
hundred. `decode_event` reads one back into a `StoredEvent`, the only place that knows
its property names: services use the names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from google.cloud import ndb
from google.cloud.datastore_v1.types import entity as en
from google.cloud.ndb import model as ndb_model

from app.core.cells import Cell, Rank, Series, rank, series_of
from app.core.slots import from_micros, micros
from app.models.base import ROOT_ID, ROOT_KIND
from app.storage.rpc import Mutation

Entity = en.Entity.pb()
Key = en.Key.pb()
#: A `Entity` or `Key` protobuf, as annotations name them (protobuf ships no types here).
EntityPb = Any
KeyPb = Any


_KEY_TEMPLATES: dict[tuple[str, str | None, str | None, str], KeyPb] = {}


def _key_template(kind: str, namespace: str | None) -> KeyPb:
    """The key `synckey/1/kind/<unset>` of the current client and namespace, built once."""
    context = ndb.get_context()
    client = context.client
    ns = context.get_namespace() if namespace is None else namespace
    cache_key = (client.project, client.database, ns, kind)
    template = _KEY_TEMPLATES.get(cache_key)
    if template is None:
        template = Key()
        template.partition_id.project_id = client.project
        if client.database:
            template.partition_id.database_id = client.database
        if ns:
            template.partition_id.namespace_id = ns
        root = template.path.add()
        root.kind, root.id = ROOT_KIND, ROOT_ID
        template.path.add().kind = kind
        if len(_KEY_TEMPLATES) > 4096:  # one per org and kind: bounded in practice anyway
            _KEY_TEMPLATES.clear()
        _KEY_TEMPLATES[cache_key] = template
    return template


def fill_key(target: KeyPb, kind: str, ident: int | str, namespace: str | None = None) -> None:
    """Make the Key message `target` the key `synckey/1/kind/ident` (see `key`)."""
    target.CopyFrom(_key_template(kind, namespace))
    if isinstance(ident, int):
        target.path[1].id = ident
    else:
        target.path[1].name = ident


def context_identity(ident: int) -> tuple[str, str, int]:
    """(project, namespace, ident) in the current NDB context: how a process remembers a
    fact about one org's entity (a meter's markers) apart from other orgs and clients."""
    context = ndb.get_context()
    return context.client.project, context.get_namespace() or "", ident


def key(kind: str, ident: int | str, namespace: str | None = None) -> KeyPb:
    """A key under the org root `synckey/1` in the current (or given) namespace."""
    pb = Key()
    fill_key(pb, kind, ident, namespace)
    return pb


def set_string(entity: EntityPb, name: str, value: str, indexed: bool = True) -> None:
    slot = entity.properties[name]
    slot.string_value = value
    if not indexed:
        slot.exclude_from_indexes = True


def set_int(entity: EntityPb, name: str, value: int, indexed: bool = True) -> None:
    slot = entity.properties[name]
    slot.integer_value = value
    if not indexed:
        slot.exclude_from_indexes = True


def set_bool(entity: EntityPb, name: str, value: bool) -> None:
    entity.properties[name].boolean_value = value


def set_time(entity: EntityPb, name: str, moment: datetime) -> None:
    set_time_value(entity.properties[name], moment)


def set_time_value(value: Any, moment: datetime) -> None:
    """Store `moment` in a Value, at microsecond precision."""
    total = micros(moment)
    value.timestamp_value.seconds = total // 1_000_000
    value.timestamp_value.nanos = (total % 1_000_000) * 1000


def get_time(entity: EntityPb, name: str) -> datetime | None:
    value = entity.properties.get(name)
    if value is None or not value.HasField("timestamp_value"):
        return None
    stamp = value.timestamp_value
    return from_micros(stamp.seconds * 1_000_000 + stamp.nanos // 1000)


def shadow_json(value: object) -> str:
    """A shadow field's text, as `JsonShadowProperty` writes it."""
    if not value:
        return "null"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def read_shadow(entity: EntityPb, name: str, empty: Callable[[], Any]) -> Any:
    value = entity.properties.get(name)
    text = value.string_value if value is not None else ""
    if text in ("", "null"):
        return empty()
    decoded = json.loads(text)
    return decoded if decoded is not None else empty()


def event_template(
    now: datetime, *, created_at: datetime | None = None, deleted: bool = False
) -> EntityPb:
    """What every `meter-event` written at `now` shares: its key's path up to the kind,
    CreatedAt, UpdatedAt and Deleted. `fill_event` copies it, then sets the rest."""
    entity = Entity()
    entity.key.CopyFrom(_key_template("meter-event", None))
    set_time(entity, "CreatedAt", created_at or now)
    set_time(entity, "UpdatedAt", now)
    set_bool(entity, "Deleted", deleted)
    return entity


def fill_event(
    entity: EntityPb,
    template: EntityPb,
    *,
    key_id: int,
    public_id: str,
    meter_id: str,
    user_id: str,
    value: int,
    timestamp: datetime,
    idempotency: str,
    dimensions: dict[str, str],
    metadata: dict[str, Any],
) -> None:
    """Make the Entity message `entity` a `meter-event`, property for property as NDB
    stores it; built in place (inside a Mutation) so nothing is copied afterwards."""
    entity.CopyFrom(template)
    entity.key.path[1].id = key_id
    props = entity.properties
    props["Id_"].string_value = public_id
    props["MeterId"].string_value = meter_id
    props["UserId"].string_value = user_id
    props["Value"].integer_value = value
    set_time_value(props["Timestamp"], timestamp)
    props["Idempotency"].string_value = idempotency
    shadow = props["Dimensions_"]
    shadow.string_value = shadow_json(dimensions)
    shadow.exclude_from_indexes = True
    shadow = props["Metadata_"]
    shadow.string_value = shadow_json(metadata)
    shadow.exclude_from_indexes = True


class StoredEvent(NamedTuple):
    """A stored `meter-event`, decoded once (`decode_event`): what services read of it.

    A NamedTuple: the summary's edges and recomputation decode one per raw event read,
    and a tuple costs least to make. `entity` is the protobuf itself, for rewriting it
    (cancellation) or telling events apart by their serialized key."""

    key_id: int
    public_id: str
    meter_id: str
    user_id: str
    value: int
    timestamp: datetime
    created_at: datetime | None
    deleted: bool  # cancelled: the mixin's Deleted flag
    dimensions: dict[str, str]
    entity: Any  # entity_pb2.Entity

    @property
    def live(self) -> bool:
        """Counted in summaries: not cancelled."""
        return not self.deleted

    @property
    def series(self) -> Series:
        """Its user and dimension values."""
        return series_of(self.user_id, self.dimensions)

    @property
    def rank(self) -> Rank:
        """Its order for `last` (an event without CreatedAt, written elsewhere, ranks
        by its timestamp)."""
        return rank(self.timestamp, self.created_at or self.timestamp, self.key_id)

    def cell(self) -> Cell:
        """The cell of this one event."""
        cell = Cell()
        cell.add_event(self.value, self.rank)
        return cell


def decode_event(entity: EntityPb) -> StoredEvent:
    """The `StoredEvent` of a `meter-event` protobuf (as either service wrote it)."""
    props = entity.properties
    deleted = props.get("Deleted")
    return StoredEvent(
        key_id=entity.key.path[-1].id,
        public_id=_string(props, "Id_"),
        meter_id=_string(props, "MeterId"),
        user_id=_string(props, "UserId"),
        value=props["Value"].integer_value if "Value" in props else 0,
        # mypy: every stored event has a Timestamp
        timestamp=get_time(entity, "Timestamp"),  # type: ignore[arg-type]
        created_at=get_time(entity, "CreatedAt"),
        deleted=deleted is not None and deleted.boolean_value,
        dimensions=read_shadow(entity, "Dimensions_", dict),
        entity=entity,
    )


def _string(props: Any, name: str) -> str:
    value = props.get(name)
    return value.string_value if value is not None else ""


# -- issue 17, export: what an exported event carries beyond `StoredEvent` -------------


def idempotency_of(entity: EntityPb) -> str:
    """A `meter-event`'s idempotency key ("" when it was recorded without one)."""
    return _string(entity.properties, "Idempotency")


def metadata_of(entity: EntityPb) -> dict[str, Any]:
    """A `meter-event`'s metadata, as recorded ({} when none)."""
    return read_shadow(entity, "Metadata_", dict)  # type: ignore[no-any-return]


def upsert_of(model: Any) -> Any:
    """A raw upsert Mutation of an NDB entity, as its `put()` would store it (its put
    hook and property preparation run first): for a commit built by hand that also
    writes a few NDB entities (`app.services.alerts.evaluate`'s chunks)."""
    model._pre_put_hook()
    model._prepare_for_put()
    mutation = Mutation()
    mutation.upsert.CopyFrom(ndb_model._entity_to_protobuf(model)._pb)
    return mutation


def delete_of(key: ndb.Key) -> Any:
    """A raw delete Mutation of an NDB key."""
    return delete_raw(key_of(key))


def delete_raw(key: KeyPb) -> Any:
    """A raw delete Mutation of a raw key."""
    mutation = Mutation()
    mutation.delete.CopyFrom(key)
    return mutation


def model_of(entity: EntityPb | None) -> Any:
    """The NDB entity of a raw one read by hand (None stays None)."""
    return None if entity is None else ndb_model._entity_from_protobuf(entity)


def key_of(key: ndb.Key) -> KeyPb:
    """The raw Key of an NDB key."""
    return key._key.to_protobuf()._pb
