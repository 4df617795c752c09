"""OpenMeter's meters API over our meters: create, list, get, update, archive, query.

A meter of OpenMeter's API is one of ours: its `slug` is our `eventName` (unique among
the org's active meters), `aggregation` our aggregation type upper-cased (LATEST is our
`last`), `groupBy`'s keys our dimensions; what our `meter` kind has no property for
(eventType, the JSONPaths, description, eventFrom) is its mapping
(`app.services.mappings`). A native meter shows its event name as slug and eventType.
Queries are the native summary's (`app.services.summary.summarize`), answered in
OpenMeter's rows; MINUTE windows, which the rollups' 15-minute slots cannot serve, are
computed from the raw events of a bounded period.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app import deadline
from app.config import Config
from app.core import jsonpath
from app.core.aggregation import AGGREGATION_TYPES
from app.core.cells import USER_ID
from app.core.slots import slot_of
from app.core.windows import SummaryRequest, Window, summarize_cells
from app.errors import ApiError, Conflict, NotFound, ValidationFailed
from app.models import Meter, transactional, utcnow
from app.schemas import openmeter as shapes
from app.schemas.fields import iana_zone_names, parse_rfc3339
from app.services import mappings, summary
from app.services import meters as meter_service
from app.services.mappings import UNIQUE_DIMENSION, Mapping
from app.storage import entities, queries

FROM_NATIVE = dict(zip(AGGREGATION_TYPES, shapes.OPENMETER_AGGREGATIONS, strict=True))
TO_NATIVE = {name: native for native, name in FROM_NATIVE.items()}
WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
#: MINUTE windows read raw events: at most this period per query.
MAX_MINUTE_PERIOD = timedelta(days=1)
SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
GROUP_KEY = re.compile(r"^[A-Za-z0-9_]+$")
RESERVED_GROUP_KEYS = ("subject", "customer_id", USER_ID, UNIQUE_DIMENSION)
MAX_GROUP_BY = 15  # our 16 dimensions, one kept for UNIQUE_COUNT's value


def _refuse(message: str, param: str) -> ValidationFailed:
    return ValidationFailed(message, param=param)


def _string(
    body: dict[str, Any], name: str, *, required: bool = False, most: int = 200
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _refuse(f"{name} is required", name)
        return None
    if not isinstance(value, str) or not value or len(value) > most:
        raise _refuse(f"{name} must be a string of 1 to {most} characters", name)
    return value


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _refuse("metadata must be an object of strings", "metadata")
    if len(value) > 50:
        raise _refuse("metadata may hold at most 50 keys", "metadata")
    return dict(value)


def _path(text: Any, param: str) -> str:
    if not isinstance(text, str):
        raise _refuse(f"{param} must be a JSONPath string such as $.tokens", param)
    try:
        jsonpath.parse(text)
    except jsonpath.InvalidPath as exc:
        raise _refuse(f"{param} {exc}", param) from None
    return text


def _group_by(body: dict[str, Any], value_property: str | None) -> dict[str, str]:
    value = body.get("groupBy")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refuse("groupBy must be an object of dimension name -> JSONPath", "groupBy")
    if len(value) > MAX_GROUP_BY:
        raise _refuse(f"groupBy may hold at most {MAX_GROUP_BY} keys", "groupBy")
    for key, path in value.items():
        if not GROUP_KEY.fullmatch(key) or len(key) > 64:
            raise _refuse(
                f"meter group by key {key} is invalid, only alphanumeric and underscore "
                "characters are allowed",
                f"groupBy.{key}",
            )
        if key in RESERVED_GROUP_KEYS:
            raise _refuse(f"meter group by key {key} is reserved", f"groupBy.{key}")
        _path(path, f"groupBy.{key}")
        if path == value_property:
            raise _refuse(
                f"meter group by value for key {key} cannot be the same as value property",
                f"groupBy.{key}",
            )
    return dict(value)


def _dimensions(aggregation: str, group_by: dict[str, str], unique_by: str | None) -> list[str]:
    names = sorted(group_by)
    if aggregation == "unique_count" and unique_by and unique_by not in names:
        names.append(unique_by)
    return names


UNKNOWN_CREATE = {
    "slug",
    "name",
    "description",
    "metadata",
    "aggregation",
    "eventType",
    "eventFrom",
    "valueProperty",
    "groupBy",
}


def _object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _refuse("the body must be a JSON object", "body")
    for name in body:
        if name not in allowed:
            raise _refuse(f"unknown property {name}", name)
    return body


def create(body: Any) -> tuple[Meter, Mapping]:
    """Create a meter from OpenMeter's MeterCreate; 409 when its slug is taken."""
    body = _object(body, UNKNOWN_CREATE)
    slug = _string(body, "slug", required=True, most=64)
    if not SLUG.fullmatch(slug or ""):
        raise _refuse("slug must match ^[a-z0-9]+(?:_[a-z0-9]+)*$", "slug")
    named = body.get("aggregation")
    if not isinstance(named, str) or named.upper() not in TO_NATIVE:
        raise _refuse("aggregation must be one of " + ", ".join(TO_NATIVE), "aggregation")
    aggregation = TO_NATIVE[named.upper()]
    event_type = _string(body, "eventType", required=True)
    value_property = body.get("valueProperty")
    if aggregation == "count":
        if value_property is not None:
            raise _refuse(
                "meter value property is not allowed when the aggregation is count",
                "valueProperty",
            )
    elif value_property is None:
        raise _refuse(
            "meter value property is required when the aggregation is not count",
            "valueProperty",
        )
    else:
        _path(value_property, "valueProperty")
    group_by = _group_by(body, value_property)
    description = _string(body, "description", most=1024)
    event_from = None
    if body.get("eventFrom") is not None:
        try:
            event_from = parse_rfc3339(body["eventFrom"])
        except ValidationError as exc:
            raise _refuse(f"eventFrom {exc.messages[0]}", "eventFrom") from None
    unique_by = UNIQUE_DIMENSION if aggregation == "unique_count" else None
    fields: dict[str, Any] = {
        "name": _string(body, "name", most=200) or slug,
        "eventName": slug,
        "aggregationType": aggregation,
        "dimensions": _dimensions(aggregation, group_by, unique_by),
        "metadata": _metadata(body),
    }
    if unique_by:
        fields["uniqueBy"] = unique_by
    mapping = Mapping.build(
        event_type or "",
        value_property,
        group_by,
        description=description,
        event_from=event_from,
        stored=True,
    )

    try:  # the meter and its mapping in one transaction, or neither
        return meter_service.create_meter(
            fields, lambda meter: mappings.save(meter, mapping)
        ), mapping
    except Conflict:
        raise Conflict(
            "meter with the same slug already exists", param="slug", code="slug_taken"
        ) from None


def find(id_or_slug: str) -> Meter:
    """The meter with this id (archived ones too) or this slug (active only); 404."""
    meter: Meter | None = None
    if 0 < len(id_or_slug) <= 200:
        meter = Meter.get_by_public_id(id_or_slug)
        if meter is None:
            meter = meter_service.find_by_event_name(id_or_slug)
    if meter is None:
        raise NotFound(f"meter not found: {id_or_slug}", param="meterIdOrSlug")
    return meter


def _format(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def meter_json(meter: Meter, mapping: Mapping) -> dict[str, Any]:
    """OpenMeter's Meter: optional members left out when empty, as its server does."""
    answer: dict[str, Any] = {
        "id": meter.id_,
        "slug": meter.event_name,
        "name": meter.name or meter.event_name,
        "aggregation": FROM_NATIVE[meter.aggregation_type],
        "eventType": mapping.event_type,
        "createdAt": _format(meter.created_at),
        "updatedAt": _format(meter.updated_at),
    }
    if mapping.description:
        answer["description"] = mapping.description
    if mapping.value_property:
        answer["valueProperty"] = mapping.value_property
    if mapping.group_by:
        answer["groupBy"] = dict(mapping.group_by)
    if mapping.event_from is not None:
        answer["eventFrom"] = _format(mapping.event_from)
    if meter.metadata:
        answer["metadata"] = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in meter.metadata.items()
        }
    if meter.deleted:
        answer["deletedAt"] = _format(meter.updated_at)
    return answer


_ORDER_BY: dict[str, Callable[[Meter], Any]] = {
    "key": lambda meter: meter.event_name or "",
    "name": lambda meter: meter.name or "",
    "aggregation": lambda meter: FROM_NATIVE[meter.aggregation_type],
    "createdAt": lambda meter: meter.created_at,
    "updatedAt": lambda meter: meter.updated_at,
}


def list_meters(args: MultiDict[str, str]) -> list[dict[str, Any]]:
    """Every meter (archived ones with includeDeleted=true), ordered as asked. page and
    pageSize are checked and, as OpenMeter's own server does, not applied."""
    for name, least, most in (("page", 1, None), ("pageSize", 1, 1000)):
        if name in args:
            text = args[name]
            if not text.isdigit() or int(text) < least or (most and int(text) > most):
                raise _refuse(f"{name} must be an integer from {least}", name)
    order = args.get("order", "ASC")
    if order not in ("ASC", "DESC"):
        raise _refuse("order must be ASC or DESC", "order")
    order_by = args.get("orderBy", "createdAt")
    if order_by not in _ORDER_BY:
        raise _refuse("orderBy must be one of " + ", ".join(_ORDER_BY), "orderBy")
    include = args.get("includeDeleted", "false")
    if include not in ("true", "false"):
        raise _refuse("includeDeleted must be true or false", "includeDeleted")
    found = [m for m in meter_service.all_meters() if include == "true" or not m.deleted]
    found.sort(key=lambda m: (_ORDER_BY[order_by](m), m.key.id()), reverse=order == "DESC")
    return [meter_json(m, mapping) for m, mapping in zip(found, mappings.mappings_of(found))]


def update(id_or_slug: str, body: Any) -> tuple[Meter, Mapping]:
    """PUT: replace name, description, metadata and groupBy (what does not change
    history): groupBy only while the meter has no events, as native dimensions."""
    body = _object(body, {"name", "description", "metadata", "groupBy"})

    @transactional(retries=8)
    def update_both() -> tuple[Meter, Mapping]:
        meter = find(id_or_slug)
        old = mappings.mapping_of(meter)
        group_by = _group_by(body, old.value_property)
        if not old.stored:
            mappings.require_default_paths(meter, group_by)
        dimensions = _dimensions(meter.aggregation_type, group_by, meter.unique_by)
        if set(dimensions) == set(meter.dimensions):
            dimensions = list(meter.dimensions)
        changes: dict[str, Any] = {
            "name": _string(body, "name", most=200) or meter.event_name,
            "metadata": _metadata(body),
            "dimensions": dimensions,
        }
        try:
            meter = meter_service.update_meter(meter.id_, changes)
        except Conflict:
            raise Conflict(
                "groupBy cannot change once the meter has events",
                param="groupBy",
                code="meter_in_use",
            ) from None
        mapping = Mapping.build(
            old.event_type,
            old.value_property,
            group_by,
            description=_string(body, "description", most=1024),
            event_from=old.event_from,
            stored=True,
        )
        mappings.save(meter, mapping)
        return meter, mapping

    return update_both()


def archive(id_or_slug: str) -> None:
    """DELETE: archive (history kept); archiving an archived meter changes nothing."""
    meter_service.archive_meter(find(id_or_slug).id_)


# -- queries ------------------------------------------------------------------------


def _time(args: MultiDict[str, str], name: str) -> datetime | None:
    if name not in args:
        return None
    try:
        return parse_rfc3339(args[name])
    except ValidationError as exc:
        raise _refuse(f"{name} {exc.messages[0]}", name) from None


def _filter_group_by(args: MultiDict[str, str]) -> dict[str, list[str]]:
    """`filterGroupBy[k]=v` (the spec's deepObject), `filterGroupBy={'k': 'v'}` (what the
    `openmeter` SDK sends: a Python dict's repr) and `advancedMeterGroupByFilters`
    (JSON, `$eq` and `$in` only): dimension -> accepted values."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for name in args:
        if name.startswith("filterGroupBy[") and name.endswith("]"):
            wanted[name[len("filterGroupBy[") : -1]] += args.getlist(name)
    for text in args.getlist("filterGroupBy"):
        try:
            given = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            given = None
        if not isinstance(given, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in given.items()
        ):
            raise _refuse(
                "filterGroupBy must be given as filterGroupBy[name]=value", "filterGroupBy"
            )
        for key, value in given.items():
            wanted[key].append(value)
    if "advancedMeterGroupByFilters" in args:
        if wanted:
            raise _refuse(
                "filterGroupBy and advancedMeterGroupByFilters cannot be combined",
                "advancedMeterGroupByFilters",
            )
        try:
            advanced = json.loads(args["advancedMeterGroupByFilters"])
        except ValueError:
            advanced = None
        if not isinstance(advanced, dict):
            raise _refuse(
                "advancedMeterGroupByFilters must be a JSON object",
                "advancedMeterGroupByFilters",
            )
        for key, condition in advanced.items():
            wanted[key] += _condition(key, condition)
    return dict(wanted)


def _condition(key: str, condition: Any) -> list[str]:
    param = f"advancedMeterGroupByFilters.{key}"
    if isinstance(condition, dict) and set(condition) == {"$eq"}:
        values = [condition["$eq"]]
    elif isinstance(condition, dict) and set(condition) == {"$in"}:
        values = condition["$in"]
    else:
        raise _refuse(f"{param}: only $eq and $in filters are supported", param)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _refuse(f"{param}: values must be strings", param)
    return values


class QueryArgs:
    """A query's parameters, checked: what OpenMeter refuses, refused the same way."""

    def __init__(
        self,
        meter: Meter,
        mapping: Mapping,
        args: MultiDict[str, str],
        *,
        for_subjects: bool = False,
    ):
        allowed = {"from", "to", "clientId"}
        if not for_subjects:
            allowed |= {"windowSize", "windowTimeZone", "subject", "groupBy", "filterGroupBy"}
            allowed |= {"advancedMeterGroupByFilters", "filterCustomerId"}
        for name in args:
            if name not in allowed and not (not for_subjects and name.startswith("filterGroupBy[")):
                raise _refuse(f"unknown query parameter {name}", name)
        if "filterCustomerId" in args:
            raise _refuse("filterCustomerId: customers are not served", "filterCustomerId")
        client_id = args.get("clientId")
        if client_id is not None and not 1 <= len(client_id) <= 36:
            raise _refuse("clientId must hold 1 to 36 characters", "clientId")
        self.start, self.end = _time(args, "from"), _time(args, "to")
        if self.start and self.end and self.start == self.end:
            raise _refuse("from and to cannot be equal", "from")
        if self.start and self.end and self.start > self.end:
            raise _refuse("from must be before to", "from")
        self.window_size = args.get("windowSize")
        if self.window_size is not None and self.window_size not in WINDOW_SIZES:
            raise _refuse("windowSize must be one of " + ", ".join(WINDOW_SIZES), "windowSize")
        self.time_zone = args.get("windowTimeZone", "UTC")
        # The database's names only: ZoneInfo would open `localtime` or a relative path.
        if self.time_zone != "UTC" and self.time_zone not in iana_zone_names():
            raise _refuse(f"invalid time zone: {self.time_zone[:64]}", "windowTimeZone")
        self.subjects = args.getlist("subject")
        dimensions = set(mapping.group_by)
        self.group_by: list[str] = []
        for name in args.getlist("groupBy"):
            if name != "subject" and name not in dimensions:
                raise _refuse(f"invalid group by: {name}", "groupBy")
            if name not in self.group_by:
                self.group_by.append(name)
        if self.subjects and "subject" not in self.group_by:
            self.group_by.append("subject")  # as OpenMeter: a subject filter groups by it
        self.filters = {}
        for key, values in _filter_group_by(args).items():
            if key not in dimensions:
                raise _refuse(f"invalid group by filter: {key}", "filterGroupBy")
            self.filters[key] = frozenset(values)
        if self.subjects:
            self.filters[USER_ID] = frozenset(self.subjects)
        self.native_group_by = tuple(USER_ID if n == "subject" else n for n in self.group_by)
        # Counted from eventFrom, as OpenMeter does.
        if mapping.event_from is not None and (
            self.start is None or self.start < mapping.event_from
        ):
            self.effective_start: datetime | None = mapping.event_from
        else:
            self.effective_start = self.start


#: What OpenMeter's POST query body (MeterQueryRequest) may hold.
_BODY_LISTS = ("subject", "groupBy", "filterCustomerId")
_BODY_TEXTS = ("clientId", "from", "to", "windowSize", "windowTimeZone")


def query_body_args(body: Any) -> MultiDict[str, str]:
    """The query string a POST query body stands for: lists repeated, filterGroupBy's
    `{key: [values]}` as `filterGroupBy[key]`, advancedMeterGroupByFilters as its JSON."""
    body = _object(
        body, {*_BODY_LISTS, *_BODY_TEXTS, "filterGroupBy", "advancedMeterGroupByFilters"}
    )
    args: MultiDict[str, str] = MultiDict()
    for name in _BODY_TEXTS:
        if body.get(name) is not None:
            if not isinstance(body[name], str):
                raise _refuse(f"{name} must be a string", name)
            args.add(name, body[name])
    for name in _BODY_LISTS:
        values = body.get(name) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _refuse(f"{name} must be an array of strings", name)
        for value in values:
            args.add(name, value)
    filters = body.get("filterGroupBy") or {}
    if not isinstance(filters, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in filters.values()
    ):
        raise _refuse("filterGroupBy must map keys to arrays of strings", "filterGroupBy")
    for key, values in filters.items():
        for value in values:
            args.add(f"filterGroupBy[{key}]", value)
    if body.get("advancedMeterGroupByFilters") is not None:
        args.add("advancedMeterGroupByFilters", json.dumps(body["advancedMeterGroupByFilters"]))
    return args


def _native_windows(
    meter: Meter, query: QueryArgs, config: Config
) -> tuple[summary.Summary, list[Window] | None]:
    """Every window of the native summary, every page of users read."""
    cursor, windows = None, []
    while True:
        answer = summary.summarize(
            meter.id_,
            None,
            query.effective_start,
            query.end,
            window_size=query.window_size.lower() if query.window_size else None,
            time_zone=query.time_zone,
            group_by=query.native_group_by,
            filters=query.filters,
            default_end=utcnow() + config.max_event_lead,
            limit=1000 if USER_ID in query.native_group_by else None,
            cursor=cursor,
        )
        if not answer.grouped:
            return answer, None
        windows += answer.result.windows
        if not answer.paged or answer.next_cursor is None:
            return answer, windows
        cursor = answer.next_cursor


def _row(
    value: Any, start: datetime, end: datetime, group: dict[str, str], query: QueryArgs
) -> dict[str, Any]:
    subject = group.get(USER_ID) if "subject" in query.group_by else None
    return {
        "value": value,
        "windowStart": _format(start),
        "windowEnd": _format(end),
        "subject": subject,
        "groupBy": {name: group.get(name, "") for name in query.group_by if name != "subject"},
    }


def query(id_or_slug: str, args: MultiDict[str, str], config: Config) -> dict[str, Any]:
    """GET /api/v1/meters/{idOrSlug}/query: the native summary in OpenMeter's rows. Only
    (window, group) pairs that have events are rows, as OpenMeter answers."""
    meter = find(id_or_slug)
    mapping = mappings.mapping_of(meter)
    query = QueryArgs(meter, mapping, args)
    try:
        if query.window_size == "MINUTE":
            rows = _minute_rows(meter, query)
        else:
            rows = _summary_rows(meter, query, config)
    except ApiError as exc:
        if exc.param in ("periodStart", "periodEnd", "timeZone", "meterId"):
            exc.param = {
                "periodStart": "from",
                "periodEnd": "to",
                "timeZone": "windowTimeZone",
            }.get(exc.param, "meterIdOrSlug")
            exc.message = exc.message.replace("timeZone", "windowTimeZone")
        raise
    answer: dict[str, Any] = {}
    if query.start is not None:
        answer["from"] = _format(query.start)
    if query.end is not None:
        answer["to"] = _format(query.end)
    if query.window_size:
        answer["windowSize"] = query.window_size
    answer["data"] = rows
    return answer


def _summary_rows(meter: Meter, query: QueryArgs, config: Config) -> list[dict[str, Any]]:
    answer, windows = _native_windows(meter, query, config)
    # Without windows a row spans the period: from `from` (or, when absent, the oldest
    # time an event of the meter can have: its creation less the oldest a time may be)
    # to `to` (or now), not the native summary's defaults (the epoch, now plus the lead).
    start = query.effective_start or meter.created_at - config.max_event_age
    period = (start, query.end or utcnow())
    if windows is None:  # neither windows nor groups: one row, if any event
        return [_row(answer.value, *period, {}, query)] if answer.event_count else []
    size = query.window_size
    return [
        _row(
            w.value,
            *(_whole_window(w.window_start, w.window_end, size) if size else period),
            w.group_by,
            query,
        )
        for w in windows
        if w.event_count
    ]


def _whole_window(start: datetime, end: datetime, size: str) -> tuple[datetime, datetime]:
    """The whole window a native window is part of: the native summary clips its first
    and last windows to the period, OpenMeter's windows are the zone's whole hours, days
    and months (their values hold only the period's events either way)."""
    zone = start.tzinfo
    if size == "HOUR":
        whole = start.replace(minute=0, second=0, microsecond=0)
        if whole == start and end - start == timedelta(hours=1):
            return start, end
        return whole, (whole.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    first = start.date().replace(day=1) if size == "MONTH" else start.date()
    if size == "MONTH":
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        after = first + timedelta(days=1)
    return (
        datetime.combine(first, time(), tzinfo=zone),
        datetime.combine(after, time(), tzinfo=zone),
    )


def _minute_rows(meter: Meter, query: QueryArgs) -> list[dict[str, Any]]:
    """MINUTE windows from the raw events of at most MAX_MINUTE_PERIOD: each minute with
    events is summarized by the window engine, as a period of its own."""
    start = query.effective_start
    end = query.end or utcnow()
    if start is None or end - start > MAX_MINUTE_PERIOD:
        raise _refuse(
            "windowSize MINUTE reads raw events: give from and to at most "
            f"{int(MAX_MINUTE_PERIOD.total_seconds() // 3600)} hours apart",
            "windowSize",
        )
    request = SummaryRequest(
        meter.aggregation_type,
        meter.unique_by,
        start,
        end,
        None,
        query.time_zone,
        query.native_group_by,
        query.filters,
    )
    zone = request.zone
    by_minute: dict[datetime, list[Any]] = defaultdict(list)
    for number, raw in enumerate(queries.events(meter.id_, None, start, end)):
        if not number % 1024:
            deadline.check()  # a busy day is many events: the request's deadline bounds it
        event = entities.decode_event(raw)
        if event.live:
            minute = event.timestamp.replace(second=0, microsecond=0)
            by_minute[minute].append((event.series, slot_of(event.timestamp), event.cell()))
    latest = summary._latest_reader(meter, None)
    rows = []
    for minute in sorted(by_minute):
        window_start = max(minute, start)
        window_end = min(minute + timedelta(minutes=1), end)
        one = SummaryRequest(
            request.aggregation,
            request.unique_by,
            window_start,
            window_end,
            None,
            query.time_zone,
            request.group_by,
            request.filters,
        )
        result = summarize_cells(one, by_minute[minute], latest, deadline.check)
        whole = (minute, minute + timedelta(minutes=1))  # OpenMeter's: never clipped
        local = (whole[0].astimezone(zone), whole[1].astimezone(zone))
        if not request.group_by:
            if result.event_count:
                rows.append(_row(result.value, *local, {}, query))
            continue
        for window in result.windows:
            if window.event_count:
                rows.append(_row(window.value, *local, window.group_by, query))
    return rows


def subjects(id_or_slug: str, args: MultiDict[str, str], config: Config) -> list[str]:
    """The subjects (users) with events of the meter in [from, to)."""
    meter = find(id_or_slug)
    query = QueryArgs(meter, mappings.mapping_of(meter), args, for_subjects=True)
    query.group_by, query.native_group_by, query.window_size = ["subject"], (USER_ID,), None
    _, windows = _native_windows(meter, query, config)
    return sorted({w.group_by[USER_ID] for w in windows or () if w.event_count})


def group_by_values(
    id_or_slug: str, key: str, args: MultiDict[str, str], config: Config
) -> list[str]:
    """The values of one groupBy key among the meter's events in [from, to)."""
    meter = find(id_or_slug)
    mapping = mappings.mapping_of(meter)
    if key not in mapping.group_by:
        raise _refuse(f"invalid group by: {key}", "groupByKey")
    query = QueryArgs(meter, mapping, args, for_subjects=True)
    query.group_by, query.native_group_by, query.window_size = [key], (key,), None
    _, windows = _native_windows(meter, query, config)
    return sorted({w.group_by[key] for w in windows or () if w.event_count and w.group_by[key]})
