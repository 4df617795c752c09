"""Kind `meter-event`: one usage data point, exactly as the Go side stores it."""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models.base import JsonShadowProperty, Model, utcnow


class MeterEvent(Model):
    """One usage event of one user on one meter.

    Not written through this model on the hot path: ingestion encodes events as raw
    protobufs (`app.storage.entities`) and commits them in one RPC with their rollups,
    so `defaults`, `validate` and the create hooks below do not run there; the request
    schema and `app.services.ingest` enforce what they would. The model still reads
    events (event log, `has_events`) and is the reference for their shape:
    `test_events_built_in_place_from_one_template_equal_ndb_models` in
    tests/test_raw_encoding.py proves that each event the ingest path builds
    (`entities.fill_event`) equals, property by property and flag by flag, what
    `MeterEvent(...).put()` stores.
    """

    KIND = "meter-event"

    meter_id = ndb.StringProperty("MeterId")
    user_id = ndb.StringProperty("UserId")
    value = ndb.IntegerProperty("Value")
    timestamp = ndb.DateTimeProperty("Timestamp", tzinfo=UTC)
    idempotency = ndb.StringProperty("Idempotency", default="")
    dimensions = JsonShadowProperty("Dimensions_", empty=dict)
    metadata = JsonShadowProperty("Metadata_", empty=dict)

    def defaults(self) -> None:
        if self.timestamp is None:
            self.timestamp = utcnow()
        if self.idempotency is None:
            self.idempotency = ""

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not self.meter_id:
            problems.append(("meterId", "meterId is required"))
        if not self.user_id:
            problems.append(("userId", "userId is required"))
        return problems
