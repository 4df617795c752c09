"""Kind `meter-event-mapping`: how a meter reads CloudEvents, beside its `meter` entity.

One entity per meter, keyed by the meter's key id under the org root (as
`meter-org-complete` is), holding what OpenMeter's API says about a meter and the Go
side's `meter` kind has no property for: the CloudEvents `type` it consumes, the JSONPath
of its value and of each dimension, a description and the time it counts events from.
A kind of its own, because the Go side refuses unknown properties on `meter`. A meter
without one (created through the native API) reads CloudEvents of its event name with
`$.value` and `$.<dimension>` (`app.services.mappings.default_mapping`).
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models.base import JsonShadowProperty, Lifecycle, OptionalProperty, root_key


class MeterMapping(Lifecycle, ndb.Model):
    """The CloudEvents reading of one meter."""

    KIND = "meter-event-mapping"

    #: the CloudEvents `type` the meter consumes; indexed: ingestion finds meters by it.
    event_type = ndb.StringProperty("EventType")
    value_property = OptionalProperty("ValueProperty")
    #: dimension name -> JSONPath into `data`.
    group_by = JsonShadowProperty("GroupBy_", empty=dict)
    description = OptionalProperty("Description")
    event_from = ndb.DateTimeProperty("EventFrom", tzinfo=UTC, indexed=False)

    @classmethod
    def _get_kind(cls) -> str:
        return cls.KIND

    @classmethod
    def key_for(cls, meter_key_id: int) -> ndb.Key:
        """The mapping's key: the meter's key id, under the org root."""
        return ndb.Key(cls.KIND, str(meter_key_id), parent=root_key())

    def validate(self) -> list[tuple[str, str]]:
        if not self.event_type:
            return [("eventType", "eventType is required")]
        return []
