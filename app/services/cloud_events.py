"""Recording CloudEvents (`POST /api/v1/events`) through the native store path.

A request holds one event (structured mode, `application/cloudevents+json`, or binary
mode, `ce-*` headers) or a batch (`application/cloudevents-batch+json`, or
`application/json` holding an object or an array, as OpenMeter accepts). The `cloudevents`
package parses each event; what it leaves unchecked is checked here: spec version 1.0,
`id`, `source`, `type` and `subject` non-empty strings, `time` RFC 3339 (receipt time when
absent) inside the native past/future window, `data` a JSON object.

Every active meter whose mapping names the event's `type` is fed (`app.services.mappings`):
one `ingest.Draft` per (event, meter), stored in one commit by `ingest.store`, so an event
feeds all its meters or none. The idempotency key of a draft is derived from the event's
(`source`, `id`), so a retried or repeated event counts once per meter, race-free, exactly
as a native idempotency key; the same (`source`, `id`) with another payload is a conflict.

Values are read at the meter's `valueProperty` and must be integers: a JSON integer, a
number with no fractional part (`3.0`, `1e3`) or a string of decimal digits, within int64.
Anything else (a fraction, a missing or null value, a non-numeric string, an object)
refuses the whole batch with a problem naming the event's index and the path: a value is
never rounded, truncated or dropped. JSON numbers are parsed as decimals, so `3.5` and
`3.0000000000000001` are told from `3`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cloudevents import exceptions as cloudevent_errors
from cloudevents.http import from_dict, from_http
from google.cloud import ndb
from marshmallow import ValidationError

from app.config import Config
from app.core import jsonpath
from app.core.bounds import INT64_MAX, INT64_MIN
from app.errors import ValidationFailed
from app.models import Meter, ids, utcnow
from app.schemas import failure
from app.schemas.fields import INDEXED_BYTES, parse_rfc3339
from app.services import cloud_event_log as event_log
from app.services import events as native_events
from app.services import ingest, mappings
from app.services.mappings import Mapping

STRUCTURED, BATCH, JSON = (
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json",
)
BINARY_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type")
MAX_EVENT_ID, MAX_SOURCE, MAX_TYPE, MAX_SUBJECT, MAX_DIMENSION_VALUE = 200, 200, 200, 500, 200
MAX_OBJECT_FIELDS = 4096
#: A request may hold this many times `max_batch_events` events (stored in commits of
#: `max_batch_events` (event, meter) pairs).
REQUEST_BATCHES = 10
_DIGITS = re.compile(r"^[+-]?[0-9]+$")


@dataclass
class CloudEvent:
    """One checked CloudEvent: its attributes as sent, `time` None when absent."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime | None
    data: dict[str, Any]
    attributes: dict[str, Any]


class Problems:
    """The problems of a batch, each naming an event's index and attribute."""

    def __init__(self) -> None:
        self.found: list[dict[str, Any]] = []

    def add(self, index: int | None, attribute: str, message: str) -> None:
        at = f"events[{index}]" if index is not None else "body"
        self.found.append(
            {
                "param": f"{at}.{attribute}" if attribute else at,
                "message": f"{at}.{attribute}: {message}" if attribute else f"{at}: {message}",
                "index": index,
                "attribute": attribute,
            }
        )

    def raise_any(self) -> None:
        if self.found:
            refusal = failure(self.found)
            refusal.details = refusal.details or self.found[:1]  # index and attribute
            raise refusal


def _refuse(message: str, param: str = "body") -> ValidationFailed:
    return ValidationFailed(message, param=param, code="invalid_event")


# -- reading the request ---------------------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_OBJECT_FIELDS:
        raise _refuse(f"an object may hold at most {MAX_OBJECT_FIELDS} fields")
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _refuse("an object names one member twice")
    return value


def _constant(name: str) -> Any:
    raise _refuse(f"{name} is not a JSON number")


def load_json(raw: bytes) -> Any:
    """The body as JSON, numbers with a fraction or exponent as exact Decimals."""
    if not raw.strip():
        raise _refuse("request body is empty")
    try:
        return json.loads(
            raw.decode("utf-8-sig"),
            parse_float=Decimal,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise _refuse("request body nests objects and arrays too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(f"invalid event: request body is not valid JSON: {exc}") from None


def read_request(content_type: str | None, headers: dict[str, str], raw: bytes) -> list[Any]:
    """The request's events as sent (not yet checked), in order."""
    if all(name in headers for name in BINARY_HEADERS):
        return [_binary(headers, raw)]
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in (STRUCTURED, BATCH, JSON):
        raise _refuse(
            f"invalid content type: {media or 'none'}: send {STRUCTURED}, {BATCH}, {JSON} "
            "or an event in binary mode (ce-specversion, ce-id, ce-source, ce-type headers)",
            "Content-Type",
        )
    body = load_json(raw)
    if media == BATCH and not isinstance(body, list):
        raise _refuse(f"{BATCH} takes a JSON array of events")
    if media == STRUCTURED and not isinstance(body, dict):
        raise _refuse(f"{STRUCTURED} takes one event, a JSON object")
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        return [body]
    raise _refuse("the body must be an event (a JSON object) or an array of events")


def _binary(headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """A binary-mode event as the structured attributes it stands for; its body the data."""
    try:
        parsed = from_http(dict(headers), raw or None)
    except cloudevent_errors.GenericException as exc:
        raise _refuse(f"invalid event: {exc}", "events[0]") from None
    attributes: dict[str, Any] = dict(parsed.get_attributes())
    if "ce-time" not in headers:
        attributes.pop("time", None)  # the library stamps "now" on an event without one
    if raw.strip():
        attributes["data"] = load_json(raw)
    return attributes


# -- checking --------------------------------------------------------------------------


def _text(event: dict[str, Any], name: str, most: int, index: int, problems: Problems) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        problems.add(index, name, f"{name} is required and must be a non-empty string")
        return ""
    if len(value) > most or len(value.encode("utf-8")) > INDEXED_BYTES:
        problems.add(index, name, f"{name} may hold at most {most} characters")
    return value


def check_event(
    index: int, event: Any, now: datetime, config: Config, problems: Problems
) -> CloudEvent | None:
    """The event checked (None when it has problems, which are added)."""
    if not isinstance(event, dict):
        problems.add(index, "", "an event must be a JSON object")
        return None
    before = len(problems.found)
    if event.get("specversion") != "1.0":
        problems.add(index, "specversion", "specversion must be 1.0")
    ident = _text(event, "id", MAX_EVENT_ID, index, problems)
    source = _text(event, "source", MAX_SOURCE, index, problems)
    kind = _text(event, "type", MAX_TYPE, index, problems)
    subject = _text(event, "subject", MAX_SUBJECT, index, problems)
    moment = _time(index, event.get("time"), now, config, problems)
    if event.get("datacontenttype") not in (None, "application/json"):
        problems.add(index, "datacontenttype", "datacontenttype must be application/json")
    if "data_base64" in event:
        problems.add(index, "data_base64", "data must be a JSON object, not data_base64")
    data = event.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        problems.add(index, "data", "data must be a JSON object")
    if len(problems.found) > before:
        return None
    try:  # the package's own reading: required attributes and spec version
        from_dict(event)
    except cloudevent_errors.GenericException as exc:
        problems.add(index, "", f"invalid event: {exc}")
        return None
    return CloudEvent(ident, source, kind, subject, moment, data, event)


def _time(
    index: int, value: Any, now: datetime, config: Config, problems: Problems
) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_rfc3339(value)
    except ValidationError:
        problems.add(index, "time", "time must be an RFC 3339 timestamp")
        return None
    if moment > now + config.max_event_lead:
        problems.add(
            index,
            "time",
            f"time is more than {native_events._span(config.max_event_lead)} in the future",
        )
    if moment < now - config.max_event_age:
        problems.add(
            index,
            "time",
            f"time is more than {native_events._span(config.max_event_age)} in the past",
        )
    return moment


def integer_value(value: Any) -> int | None:
    """The exact integer a value holds, or None (a fraction, not a number, out of int64)."""
    if value.__class__ is int:
        number = value
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            return None
        try:
            number = int(value)
        except (OverflowError, InvalidOperation):
            return None
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()) and len(value) < 40:
        number = int(value)
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


def _dimension(value: Any) -> str | None:
    """A dimension's value as text; None for an object or array."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return None


def _reading(
    index: int, event: CloudEvent, meter: Meter, mapping: Mapping, problems: Problems
) -> tuple[int, dict[str, str]] | None:
    """(value, dimensions) of the event for one meter, or None with its problems added."""
    before = len(problems.found)
    value, dimensions = 1, dict[str, str]()
    aggregation = meter.aggregation_type
    if mapping.value_keys is not None and aggregation != "count":
        found = jsonpath.read(event.data, mapping.value_keys)
        where = f"data{mapping.value_property[1:]}"  # type: ignore[index]
        if found is jsonpath.MISSING or found is None:
            problems.add(
                index,
                where,
                f"missing value property {mapping.value_property} (meter {meter.event_name})",
            )
        elif aggregation == "unique_count":
            text = _dimension(found)
            if text is None or len(text) > MAX_DIMENSION_VALUE:
                problems.add(index, where, "a unique_count value must be a string or number")
            else:
                dimensions[str(meter.unique_by)] = text
        else:
            number = integer_value(found)
            if number is None:
                problems.add(
                    index,
                    where,
                    f"value at {mapping.value_property} must be an integer within int64 "
                    f"(a JSON integer or a string of digits), not {_shown(found)} "
                    f"(meter {meter.event_name})",
                )
            else:
                value = number
    for name, keys in mapping.group_keys.items():
        found = jsonpath.read(event.data, keys)
        if found is jsonpath.MISSING or found is None:
            continue  # a missing dimension reads as "" everywhere
        text = _dimension(found)
        if text is None or len(text) > MAX_DIMENSION_VALUE:
            problems.add(
                index,
                f"data{mapping.group_by[name][1:]}",
                f"dimension {name} must be a string or number of at most "
                f"{MAX_DIMENSION_VALUE} characters",
            )
        else:
            dimensions[name] = text
    if mapping.event_from is not None and (event.time or utcnow()) < mapping.event_from:
        problems.add(index, "time", f"time is before meter {meter.event_name}'s eventFrom")
    return None if len(problems.found) > before else (value, dimensions)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def idempotency(event: CloudEvent) -> str:
    """The native idempotency key of a CloudEvent: its source and id, unambiguously."""
    return f"ce:{len(event.source)}:{event.source}:{event.id}"


# -- recording -------------------------------------------------------------------------


def record(items: list[Any], config: Config) -> list[tuple[CloudEvent, ingest.Outcome]]:
    """Check a whole batch, then store its (event, meter) pairs; the outcome of each pair
    (created, duplicate or conflict). Nothing is written on a problem. A batch of up to
    `max_batch_events` pairs is one commit; a longer one (OpenMeter's clients send
    batches of any length) is stored in commits of that many pairs, each event with all
    its meters in one, so a request cut short by a failure stored whole events, and
    sending it again stores the rest exactly once."""
    if not items:
        raise _refuse("the batch holds no event")
    most = config.max_batch_events * REQUEST_BATCHES
    if len(items) > most:
        raise _refuse(f"a batch may hold at most {most} events")
    now = utcnow()
    problems = Problems()
    checked = [check_event(i, item, now, config, problems) for i, item in enumerate(items)]
    # type -> (meter, mapping, meter key id): NDB's key.id() copies the key's path each call
    consumers: dict[str, list[tuple[Meter, Mapping, int]]] = {}
    drafts: list[ingest.Draft] = []
    fed: list[CloudEvent] = []
    unmetered: list[CloudEvent] = []  # valid, but no active meter consumes their type
    for index, event in enumerate(checked):
        if event is None:
            continue
        if event.type not in consumers:
            consumers[event.type] = [
                (meter, mapping, meter.key.id())
                for meter, mapping in mappings.meters_for_type(event.type)
            ]
        if not consumers[event.type]:
            unmetered.append(event)
        for meter, mapping, meter_key_id in consumers[event.type]:
            reading = _reading(index, event, meter, mapping, problems)
            if reading is not None:
                drafts.append(_draft(event, meter, meter_key_id, reading, now))
                fed.append(event)
    if problems.found:
        event_log.refused(items, problems.found, now)
        problems.raise_any()
    code = ids.namespace_code(ndb.get_context().get_namespace())
    outcomes: list[ingest.Outcome] = []
    for start, stop in _commits(fed, config.max_batch_events):
        outcomes += ingest.store(drafts[start:stop], now, code, config.rollup_shards)
    recorded = list(zip(fed, outcomes, drafts))
    conflicts = [
        (event, draft) for event, outcome, draft in recorded if outcome.status == "conflict"
    ]
    if conflicts:
        event_log.conflicted(conflicts, now)
    if unmetered:
        event_log.unmetered(unmetered, now)
    return [(event, outcome) for event, outcome, _ in recorded]


def _commits(fed: list[CloudEvent], most: int) -> list[tuple[int, int]]:
    """(start, stop) of each commit's drafts: at most `most`, an event's drafts together
    (they are consecutive in `fed`). An event feeding more meters than `most` could not
    be stored whole: refused."""
    bounds, start = [], 0
    while start < len(fed):
        stop = min(start + most, len(fed))
        while stop < len(fed) and fed[stop] is fed[stop - 1]:
            stop -= 1  # do not cut an event's drafts apart
        if stop == start:
            raise _refuse(f"an event of type {fed[start].type} feeds more than {most} meters")
        bounds.append((start, stop))
        start = stop
    return bounds


def _draft(
    event: CloudEvent,
    meter: Meter,
    meter_key_id: int,
    reading: tuple[int, dict[str, str]],
    now: datetime,
) -> ingest.Draft:
    key = idempotency(event)
    return ingest.Draft(
        meter=meter,
        user_id=event.subject,
        value=reading[0],
        timestamp=event.time or now,
        timestamp_given=event.time is not None,
        idempotency=key,
        dimensions=reading[1],
        metadata={},
        key_id=native_events.idempotent_id(meter.id_, key),
        meter_key_id=meter_key_id,
    )
