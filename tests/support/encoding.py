"""A whole `meter-event` entity protobuf from its fields, for tests and benchmarks.

The service never builds one this way: ingestion fills each event inside its commit's
`Mutation` from a per-batch template (`app.storage.entities.event_template` and
`fill_event`). This wraps the same two calls for code that wants one free-standing
entity: tests/test_raw_encoding.py (which compares it with what `MeterEvent.put()`
stores) and benchmarks/ingest.py (its raw-write cases).
"""

from __future__ import annotations

from datetime import datetime

from app.storage.entities import Entity, event_template, fill_event


def event_entity(
    *,
    key_pb,
    public_id: str,
    meter_id: str,
    user_id: str,
    value: int,
    timestamp: datetime,
    idempotency: str,
    dimensions: dict,
    metadata: dict,
    now: datetime,
    deleted: bool = False,
    created_at: datetime | None = None,
):
    """A `meter-event` entity protobuf, property for property as NDB stores it."""
    entity = Entity()
    fill_event(
        entity,
        event_template(now, created_at=created_at, deleted=deleted),
        key_id=key_pb.path[-1].id,
        public_id=public_id,
        meter_id=meter_id,
        user_id=user_id,
        value=value,
        timestamp=timestamp,
        idempotency=idempotency,
        dimensions=dimensions,
        metadata=metadata,
    )
    entity.key.CopyFrom(key_pb)
    return entity
