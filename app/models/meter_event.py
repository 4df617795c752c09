"""Kind `meter-event`: one usage data point, exactly as the Go side stores it."""

from __future__ import annotations

from datetime import timezone

from google.cloud import ndb

from app.models.base import JsonShadowProperty, Model, utcnow


class MeterEvent(Model):
    """One usage event of one user on one meter."""

    KIND = "meter-event"

    meter_id = ndb.StringProperty("MeterId")
    user_id = ndb.StringProperty("UserId")
    value = ndb.IntegerProperty("Value")
    timestamp = ndb.DateTimeProperty("Timestamp", tzinfo=timezone.utc)
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
