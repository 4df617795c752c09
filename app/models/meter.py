"""Kind `meter`: a named usage metric of one org, exactly as the Go side stores it."""

from __future__ import annotations

from google.cloud import ndb

from app.core.aggregation import AGGREGATION_TYPES
from app.models.base import JsonShadowProperty, Model, OptionalFlag, OptionalProperty

DEFAULT_AGGREGATION = "sum"
DEFAULT_CURRENCY = "usd"


class Meter(Model):
    """A meter: its event name is unique among the org's active meters. Archiving is the
    mixin's soft delete (`deleted`): an archived meter keeps its history but refuses new
    events."""

    KIND = "meter"

    name = ndb.StringProperty("Name")
    event_name = ndb.StringProperty("EventName")
    aggregation_type = ndb.StringProperty("AggregationType")
    currency = ndb.StringProperty("Currency")
    dimensions = JsonShadowProperty("Dimensions_", empty=list)
    metadata = JsonShadowProperty("Metadata_", empty=dict)
    #: unique_count meters only: "userId" or a declared dimension whose distinct values count.
    #: Stored only when set: the Go side never sees it on the kinds it knows.
    unique_by = OptionalProperty("UniqueBy")
    #: issue 17: whether `events import --backfill` may add events older than the live
    #: window (`max_event_age`). Stored only when true, like UniqueBy.
    allow_backfill = OptionalFlag("AllowBackfill")

    def defaults(self) -> None:
        self.aggregation_type = (self.aggregation_type or DEFAULT_AGGREGATION).lower()
        self.currency = (self.currency or DEFAULT_CURRENCY).lower()

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not self.name:
            problems.append(("name", "name is required"))
        if not self.event_name:
            problems.append(("eventName", "eventName is required"))
        if self.aggregation_type not in AGGREGATION_TYPES:
            problems.append(
                (
                    "aggregationType",
                    f"aggregationType must be one of {', '.join(AGGREGATION_TYPES)}",
                )
            )
        problems += self._unique_by_problems()
        return problems

    def _unique_by_problems(self) -> list[tuple[str, str]]:
        if self.aggregation_type != "unique_count":
            if self.unique_by is not None:
                return [("uniqueBy", "uniqueBy applies to unique_count meters only")]
            return []
        if self.unique_by is None:
            return [("uniqueBy", "unique_count meters need uniqueBy: userId or a dimension")]
        if self.unique_by != "userId" and self.unique_by not in self.dimensions:
            return [
                (
                    "uniqueBy",
                    f"uniqueBy must be userId or a declared dimension, not {self.unique_by!r}",
                )
            ]
        return []
