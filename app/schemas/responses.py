"""The API's answers, described once: each schema both serializes an answer (a view
declares it with `@response`, app/api/declare.py) and describes it in the OpenAPI
document.

Fields read the services' objects by attribute (`attribute="event_name"`), and the few
fields below turn stored values into their public form (times, flags, omitted
fields). Two answers are built by hand on their hot paths, where a benchmark showed
the schema's cost (`record_json` here, `events.summary_json`); their schemas still
describe them, and tests/test_answers.py holds each to its schema. The schemas refuse
unknown fields (`additionalProperties: false` in the document), so the fuzzing tests
catch an answer that grows a field the document does not name.
"""

from marshmallow import Schema, fields, missing, validate

from app.models.meter import AGGREGATION_TYPES
from app.schemas import format_time
from app.schemas.events import WINDOW_SIZES

_TIME = {"format": "date-time"}


class Time(fields.String):
    """A stored datetime, written RFC 3339 in UTC (`format_time`): a date-time string."""

    def __init__(self, **kwargs):
        kwargs["metadata"] = {**_TIME, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return format_time(value)


class Flag(fields.String):
    """A stored boolean written as one of two words, `words` = (when false, when true):
    `deleted` is "archived" on a meter, "cancelled" on an event."""

    def __init__(self, words: tuple[str, str], **kwargs):
        super().__init__(validate=validate.OneOf(words), **kwargs)
        self.words = words

    def _serialize(self, value, attr, obj, **kwargs):
        return self.words[bool(value)]


class OmittedWhenEmpty(fields.String):
    """A string left out of the answer when it is empty or unset (a meter's `uniqueBy`)."""

    def get_value(self, obj, attr, accessor=None, default=missing):
        value = super().get_value(obj, attr, accessor, default)
        return value if value else missing


class Truth(fields.Boolean):
    """A stored flag written true or false, false when unset (a key stored without one)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return bool(value)


class EmptyWhenUnset(fields.String):
    """A string written "" when it is unset (an event without an idempotency key)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return super()._serialize(value, attr, obj, **kwargs) or ""


def _next_cursor() -> fields.String:
    return fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "pass as `cursor` for the next page; null on the last page"},
    )


class Meter(Schema):
    """A meter as every meter endpoint returns it."""

    id = fields.String(
        required=True, attribute="id_", metadata={"description": "public id of the meter"}
    )
    name = fields.String(required=True)
    eventName = fields.String(required=True, attribute="event_name")
    aggregationType = fields.String(
        required=True, attribute="aggregation_type", validate=validate.OneOf(AGGREGATION_TYPES)
    )
    currency = fields.String(required=True, metadata={"example": "usd"})
    dimensions = fields.List(fields.String(), required=True)
    metadata = fields.Dict(keys=fields.String(), required=True)
    uniqueBy = OmittedWhenEmpty(
        attribute="unique_by", metadata={"description": "unique_count meters only"}
    )
    status = Flag(("active", "archived"), required=True, attribute="deleted")
    createdAt = Time(required=True, attribute="created_at")
    updatedAt = Time(required=True, attribute="updated_at")
    allowBackfill = fields.Boolean(
        required=True,
        attribute="allow_backfill",
        dump_default=False,
        metadata={"description": "whether imports may backfill events past the live window"},
    )


class MeterPage(Schema):
    """One page of meters, oldest first."""

    meters = fields.List(fields.Nested(Meter), required=True)
    count = fields.Integer(required=True)
    nextCursor = _next_cursor()


class EventOutcome(Schema):
    """What became of one event of a batch, in the batch's order."""

    id = fields.String(required=True, metadata={"description": "public id of the event"})
    status = fields.String(
        required=True, validate=validate.OneOf(("created", "duplicate", "conflict"))
    )


class RecordResult(Schema):
    """Answer of POST /v1/billing/meter-events."""

    events = fields.List(fields.Nested(EventOutcome), required=True)
    count = fields.Integer(required=True)


def record_json(outcomes: list) -> dict:
    """`RecordResult` of a batch's outcomes, by hand: recording is the hot path, and
    `RecordResult().dump` took ~190 µs more per 100-event batch than this (8 µs), ~2 µs
    per event on top of the service's ~180 µs (benchmarks/answers.py)."""
    return {"events": [{"id": o.id, "status": o.status} for o in outcomes], "count": len(outcomes)}


class CancelOutcome(Schema):
    """What became of one cancel target, in the request's order."""

    id = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "public id of the event; null when not found"},
    )
    status = fields.String(
        required=True,
        validate=validate.OneOf(("cancelled", "already_cancelled", "not_found", "expired")),
    )


class CancelResult(Schema):
    """Answer of POST /v1/billing/meter-events/cancel."""

    events = fields.List(fields.Nested(CancelOutcome), required=True)
    count = fields.Integer(required=True)


MAX_SAFE_INTEGER = (1 << 53) - 1
EXACT_VALUE_RULE = (
    "An integer is a JSON number while |value| <= 2^53-1 (9007199254740991, the largest "
    "a double, and so JavaScript, holds exactly), else a string of its exact decimal "
    'digits, such as "922337203685477580700": sums are exact at any size, past int64 '
    "too. avg is always a JSON number (the double nearest the exact average)."
)


class ExactValue(fields.Field):
    """A summary value: a JSON number, or a string of decimal digits where a double would
    lose some (`events.exact_value`); the document says so with `anyOf`."""

    def __init__(self, **kwargs):
        super().__init__(required=True, allow_none=True, **kwargs)

    def openapi(self) -> dict:
        return {
            "anyOf": [
                {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
                {"type": "number"},
                {
                    "type": "string",
                    "pattern": "^-?[1-9][0-9]{15,}$",
                    "description": "an integer beyond 2^53-1 in size, exact",
                },
                {"type": "null"},
            ],
            "description": " ".join(
                filter(None, (self.metadata.get("description"), EXACT_VALUE_RULE))
            ),
        }


class SummaryWindow(Schema):
    """One window (and group) of a summary; times in the asked time zone."""

    windowStart = fields.String(required=True, metadata=_TIME)
    windowEnd = fields.String(required=True, metadata=_TIME)
    value = ExactValue(metadata={"description": "the window's (and group's) value."})
    eventCount = fields.Integer(required=True)
    groupBy = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"description": "the group's value of each groupBy name"},
    )


class Summary(Schema):
    """A meter's aggregated usage over a period."""

    meterId = fields.String(required=True)
    meterName = fields.String(required=True)
    userId = fields.String(required=True, metadata={"description": "empty for all users"})
    aggregationType = fields.String(required=True, validate=validate.OneOf(AGGREGATION_TYPES))
    value = ExactValue(
        metadata={"description": "null for last, min, max and avg when there are no events."}
    )
    eventCount = fields.Integer(required=True)
    periodStart = fields.String(required=True, allow_none=True, metadata=_TIME)
    periodEnd = fields.String(required=True, allow_none=True, metadata=_TIME)
    windows = fields.List(
        fields.Nested(SummaryWindow),
        metadata={
            "description": "present when windowSize ("
            + ", ".join(WINDOW_SIZES)
            + ") or groupBy was asked"
        },
    )
    nextCursor = fields.String(
        allow_none=True,
        metadata={
            "description": "present when grouped by userId or ordered: pass as `cursor` "
            "for the next page of users; null on the last page (and for top users)"
        },
    )


class IssuedKey(Schema):
    """An org and a new API key; the key is shown only this once."""

    name = fields.String(required=True, attribute="org.name")
    namespace = fields.String(required=True, attribute="org.namespace")
    apiKey = fields.String(required=True, attribute="secret")
    keyPrefix = fields.String(required=True, attribute="prefix")
    # issue 16, keys
    scopes = fields.List(
        fields.String(), required=True, metadata={"description": "what the key may do"}
    )
    expiresAt = Time(
        required=True,
        allow_none=True,
        attribute="key.expires_at",
        metadata={"description": "when the key stops working; null: never"},
    )


class KeyInfo(Schema):
    """One API key of an org, without its secret."""

    prefix = fields.String(required=True)
    revoked = Truth(required=True)
    createdAt = Time(required=True, attribute="created_at")
    # issue 16, keys
    name = fields.String(allow_none=True, metadata={"description": "the creator's label"})
    scopes = fields.List(
        fields.String(),
        required=True,
        attribute="held_scopes",
        metadata={"description": "what the key may do"},
    )
    status = fields.String(
        required=True,
        attribute="status_now",
        validate=validate.OneOf(("active", "expired", "revoked")),
        metadata={"description": "what a request with the key gets now"},
    )
    expiresAt = Time(
        required=True,
        allow_none=True,
        attribute="expires_at",
        metadata={"description": "when the key stops working; null: never"},
    )
    lastUsedAt = Time(
        required=True,
        allow_none=True,
        attribute="last_used_at",
        metadata={
            "description": "its last use, to the minute (written at most once a minute, "
            "in the background); null: never used since it was recorded"
        },
    )
    revokedAt = Time(required=True, allow_none=True, attribute="revoked_at")
    createdBy = fields.String(
        allow_none=True,
        attribute="created_by",
        metadata={"description": "prefix of the key that created it; null: an operator"},
    )


class CreatedKey(Schema):
    """A key an org created for itself (issue 16); the secret is shown only this once."""

    apiKey = fields.String(required=True, attribute="secret")
    keyPrefix = fields.String(required=True, attribute="prefix")
    name = fields.String(
        required=True, allow_none=True, attribute="key.name", metadata={"description": "its label"}
    )
    scopes = fields.List(fields.String(), required=True, metadata={"description": "what it may do"})
    expiresAt = Time(
        required=True,
        allow_none=True,
        attribute="key.expires_at",
        metadata={"description": "when the key stops working; null: never"},
    )
    createdAt = Time(required=True, attribute="key.created_at")
    createdBy = fields.String(
        required=True,
        allow_none=True,
        attribute="key.created_by",
        metadata={"description": "prefix of the key that created it"},
    )


class KeyList(Schema):
    """An org's keys, revoked ones included."""

    keys = fields.List(fields.Nested(KeyInfo), required=True)
    count = fields.Integer(required=True)


class Revoked(Schema):
    """How many keys a revocation revoked."""

    revoked = fields.Integer(required=True)


class OrgArchived(Schema):
    """An archived org: its keys revoked, its data kept unless purged."""

    name = fields.String(required=True)
    archived = fields.Boolean(required=True, validate=validate.Equal(True))
    revokedKeys = fields.Integer(
        required=True,
        metadata={"description": "keys this call revoked (0 when a previous call did)"},
    )
    purged = fields.Integer(
        required=True, metadata={"description": "entities this call deleted from the org's data"}
    )
    purgeComplete = fields.Boolean(
        required=True,
        metadata={"description": "true once the org's data is all deleted, which frees its name"},
    )


class Health(Schema):
    """The process is up."""

    status = fields.String(required=True, validate=validate.OneOf(("ok",)))


class Ready(Schema):
    """The process is up and its Datastore answers."""

    status = fields.String(required=True, validate=validate.OneOf(("ok",)))
    datastore = fields.String(required=True, validate=validate.OneOf(("ok",)))


class CompactionRun(Schema):
    """What one bounded compaction call did (GET /v1/cron/compact)."""

    orgs = fields.Integer(required=True, metadata={"description": "orgs visited"})
    visited = fields.Integer(required=True, metadata={"description": "dirty rollups seen"})
    compacted = fields.Integer(required=True, metadata={"description": "rollups folded"})
    complete = fields.Boolean(
        required=True,
        metadata={
            "description": "false when the budget ran out before every org was done, or an "
            "org failed"
        },
    )
    failed = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "orgs that could not be compacted (logged with the reason); the "
            "others were"
        },
    )


class ListedEvent(Schema):
    """One stored event as the event list shows it."""

    id = fields.String(required=True, attribute="id_")
    meterId = fields.String(required=True, attribute="meter_id")
    userId = fields.String(required=True, attribute="user_id")
    value = fields.Integer(required=True)
    timestamp = Time(required=True)
    idempotency = EmptyWhenUnset(required=True, metadata={"description": '"" when none'})
    dimensions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    metadata = fields.Dict(keys=fields.String(), required=True)
    status = Flag(("active", "cancelled"), required=True, attribute="deleted")
    createdAt = Time(required=True, allow_none=True, attribute="created_at")
    updatedAt = Time(required=True, allow_none=True, attribute="updated_at")
    # issue 17, corrections: an amendment's links (null: none)
    amends = fields.String(
        required=True, allow_none=True, metadata={"description": "the event this one replaced"}
    )
    amendedBy = fields.String(
        required=True,
        allow_none=True,
        attribute="amended_by",
        metadata={"description": "the event that replaced this one (it is cancelled)"},
    )


class EventPage(Schema):
    """One page of a meter's events, newest first."""

    events = fields.List(fields.Nested(ListedEvent), required=True)
    count = fields.Integer(required=True)
    nextCursor = _next_cursor()


class ErrorDetail(Schema):
    """One problem of a request that has several."""

    message = fields.String(required=True)
    param = fields.String()


class ErrorBody(Schema):
    """What went wrong: a message, a stable code and the field at fault."""

    type = fields.String(required=True, validate=validate.OneOf(("api-error",)))
    message = fields.String(required=True)
    code = fields.String(metadata={"example": "invalid_request"})
    param = fields.String(metadata={"example": "events[3].timestamp"})
    errors = fields.List(
        fields.Nested(ErrorDetail),
        metadata={
            "description": "the problems, when there are several: the first 20, then one "
            "entry (a message only) saying how many more were found"
        },
    )


class Error(Schema):
    """The one error envelope of every endpoint."""

    error = fields.Nested(ErrorBody, required=True)
