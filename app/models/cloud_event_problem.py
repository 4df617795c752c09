"""Kind `cloudevent-problem`: a CloudEvent that was refused or conflicted, for its tenant.

OpenMeter lists ingested events with their validation errors (`GET /api/v1/events`).
Here a refused batch stores no usage, and a conflicting event (a known (`source`, `id`)
with another payload) changes none: this kind keeps what the tenant needs to see about
them, one entity per event, in the org's namespace. Not under the org root: the list
reads them newest first by `IngestedAt` on its built-in index (an ancestor query sorted
by it would need a composite index written on every put), and a log may lag a moment.
"""

from __future__ import annotations

from datetime import UTC

from google.cloud import ndb

from app.models.base import Lifecycle

#: The stored event's JSON is cut at this many characters (its data may be large).
MAX_EVENT_TEXT = 8192


class CloudEventProblem(Lifecycle, ndb.Model):
    """One refused or conflicting CloudEvent and why."""

    KIND = "cloudevent-problem"

    ingested_at = ndb.DateTimeProperty("IngestedAt", tzinfo=UTC)
    #: "refused" (its batch stored nothing) or "conflict" (its (source, id) holds another)
    outcome = ndb.TextProperty("Outcome")
    error = ndb.TextProperty("Error")
    event_json = ndb.TextProperty("Event")

    @classmethod
    def _get_kind(cls) -> str:
        return cls.KIND
