"""The hand-built event protobuf is exactly what the NDB model stores."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from google.cloud import ndb
from google.cloud.ndb import model as ndb_model

from app.models import MeterEvent, root_key
from app.models import ids
from app.storage import entities


@pytest.fixture
def org_context(ndb_context, org):
    with ndb_context.new(namespace=org["namespace"]).use() as context:
        yield context


@pytest.mark.parametrize("dimensions, metadata, idempotency", [
    ({}, {}, ""),
    ({"model": "gpt-4", "region": "eu"}, {"trace": {"id": [1, 2]}}, "req-1"),
    ({"ü": "☃"}, {"n": None}, "k" * 500),
])
def test_raw_event_protobuf_equals_ndb_model_protobuf(org_context, dimensions, metadata,
                                                      idempotency):
    now = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=timezone.utc)
    stamp = datetime(2026, 11, 27, 12, 0, 0, 999999, tzinfo=timezone.utc)
    key = ndb.Key(MeterEvent.KIND, 4611686018427387904, parent=root_key())
    model = MeterEvent(key=key, meter_id="meter-x", user_id="user-1", value=-(1 << 63),
                       timestamp=stamp, idempotency=idempotency, dimensions=dimensions,
                       metadata=metadata, created_at=now, updated_at=now)
    model.id_ = ids.encode_key(key)
    expected = ndb_model._entity_to_protobuf(model)
    raw = entities.event_entity(
        key_pb=entities.key(MeterEvent.KIND, key.id()), public_id=model.id_,
        meter_id="meter-x", user_id="user-1", value=-(1 << 63), timestamp=stamp,
        idempotency=idempotency, dimensions=dimensions, metadata=metadata, now=now)
    assert type(expected).pb(expected) == raw


def test_raw_written_events_read_back_through_ndb(org_context):
    from app.storage import rpc

    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    key = ndb.Key(MeterEvent.KIND, 77, parent=root_key())
    raw = entities.event_entity(key_pb=entities.key(MeterEvent.KIND, 77),
                                public_id=ids.encode_key(key), meter_id="m", user_id="u",
                                value=9, timestamp=now, idempotency="i",
                                dimensions={"a": "b"}, metadata={}, now=now)
    rpc.commit([rpc.Mutation(insert=raw)])
    event = key.get(use_cache=False)
    assert (event.meter_id, event.user_id, event.value, event.timestamp, event.idempotency,
            event.dimensions, event.metadata, event.deleted, event.created_at) == (
        "m", "u", 9, now, "i", {"a": "b"}, {}, False, now)
