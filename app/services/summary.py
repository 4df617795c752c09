"""Aggregated usage of one meter over a period, from rollups: cost bounded by series x days.

The period is half-open, `[periodStart, periodEnd)`; a date-only end has already
been turned into the next midnight by the edge, so it includes its whole day.
Whole 15-minute slots of the period come from the rollups (one entity per
series and UTC day); a period bound that is not on a slot boundary adds the raw
events between it and the nearest slot boundary. `app.core.windows` turns
those cells into the answer: windows in any time zone, groups and filters.

Errors say what happened. The caller is told about what the caller can change: a zone
whose clock is off the 15-minute grid in the period (`windows.UnsupportedZone`), a period
whose windows would reach past year 9999 on the zone's clock, too many windows. Anything
else raised while summarizing (a stored rollup that does not decode, an inconsistency
between the engine and what storage gave it) is ours: logged with the key of the stored
entity being read, answered 500 `internal` without the details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app import deadline
from app.core.aggregation import Aggregation
from app.core.cells import USER_ID, Cell, Series
from app.core.slots import EPOCH, SLOT, ceil_slot, slot_of
from app.core.windows import (
    WINDOW_SIZES,
    InvalidSummaryRequest,
    SummaryRequest,
    SummaryResult,
    TooManyWindows,
    UnsupportedZone,
    summarize_cells,
)
from app.errors import InternalError, NotFound, ValidationFailed
from app.models import Meter
from app.services import breakdown, compact, recompute
from app.services.meters import get_meter
from app.storage import entities, queries, rollups, shards

log = logging.getLogger(__name__)

#: (series, slot start, cell): a Cell, or a compacted slot as its packed list.
SummaryCell = tuple[Series, datetime, Cell | list[Any]]


@dataclass(frozen=True)
class Summary:
    meter: Meter
    user_id: str | None
    period_start: datetime | None
    period_end: datetime | None
    result: SummaryResult
    grouped: bool
    #: Grouped by user or ordered: the answer is a page, with the next page's cursor.
    paged: bool = False
    next_cursor: str | None = None

    @property
    def value(self) -> int | float | None:
        return self.result.value

    @property
    def event_count(self) -> int:
        return self.result.event_count


class Reading:
    """The stored entity whose cells the summary is merging (cells are read lazily, so
    this is the culprit when merging fails): named in the log of an internal error."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key = None

    def describe(self) -> str:
        """`namespace:kind/id/...` of the key, or "none" before the first entity."""
        if self.key is None:
            return "none"
        path = "/".join(f"{e.kind}/{e.name or e.id}" for e in self.key.path)
        return f"{self.key.partition_id.namespace_id}:{path}"


def _raw_cells(
    meter: Meter, user_id: str | None, start: datetime, end: datetime, reading: Reading
) -> Iterator[SummaryCell]:
    """Cells of the raw events in [start, end); with `user_id` ORG_USER, every user's
    events, each under its org-wide series."""
    org = user_id == shards.ORG_USER
    for raw in queries.events(meter.id_, None if org else user_id, start, end):
        reading.key = raw.key
        event = entities.decode_event(raw)
        if event.live:
            series = shards.org_series(event.series) if org else event.series
            yield series, slot_of(event.timestamp), event.cell()


_SLOT_NUMBERS = {str(q): q for q in range(rollups.SLOTS_PER_DAY)}  # `Slots_` keys


def _rollup_cells(
    meter: Meter, user_id: str | None, start: datetime, end: datetime, reading: Reading
) -> Iterator[SummaryCell]:
    """(series, slot start, cell) of the rollups' slots inside [start, end): compacted
    slots as their packed lists, deltas as Cells (`summarize_cells` takes both)."""
    first_day = rollups.day_and_slot(start)[0]
    last_day = rollups.day_and_slot(end - timedelta(microseconds=1))[0]
    slot_starts: dict[int, list[datetime]] = {}  # day -> its 96 slot starts, made once
    for entity in queries.rollups(meter.id_, user_id, first_day, last_day):
        deadline.check()  # decoding a page of rollups is CPU between two RPCs
        reading.key = entity.key
        series, day, base, deltas, unknown = rollups.decode_parts(entity)
        if unknown:  # sum deltas at an int64 bound may have clamped: fold, then read again
            raise recompute.Unsettled(entity.key)
        moments = slot_starts.get(day)
        if moments is None:
            moments = slot_starts[day] = [
                rollups.slot_start(day, q) for q in range(rollups.SLOTS_PER_DAY)
            ]
        whole_day = start <= moments[0] and moments[-1] + SLOT <= end
        for slot, fields in base.items():
            moment = moments[_SLOT_NUMBERS[slot]]
            if whole_day or start <= moment < end:
                yield series, moment, fields
        for number, cell in deltas.items():
            moment = moments[number]
            if start <= moment < end:
                yield series, moment, cell


def cells(
    meter: Meter,
    user_id: str | None,
    start: datetime,
    end: datetime,
    reading: Reading | None = None,
) -> Iterator[SummaryCell]:
    """Every cell of the period: rollup slots inside it, raw events at unaligned edges;
    `reading.key` follows the stored entity the cells come from."""
    reading = reading if reading is not None else Reading()
    inner_start, inner_end = ceil_slot(start), slot_of(end)
    if inner_start >= inner_end:
        yield from _raw_cells(meter, user_id, start, end, reading)
        return
    if start < inner_start:
        yield from _raw_cells(meter, user_id, start, inner_start, reading)
    yield from _rollup_cells(meter, user_id, inner_start, inner_end, reading)
    if inner_end < end:
        yield from _raw_cells(meter, user_id, inner_end, end, reading)


def _latest_reader(
    meter: Meter, user_id: str | None
) -> Callable[[frozenset[Series], int], Cell | None]:
    """`latest(series, ts)` for the window engine: one query per instant, however many
    windows, groups and series ask about it (of the user's events, in a user's summary).
    Only deltas written before rollups named their latest value (`rollups._set_latest`)
    still ask."""
    seen: dict[int, list[tuple[Series, Cell]]] = {}

    def latest(series: frozenset[Series], ts: int) -> Cell | None:
        if ts not in seen:
            if user_id == shards.ORG_USER:
                seen[ts] = recompute.org_events_at(meter.id_, ts)
            else:
                seen[ts] = recompute.events_at(meter.id_, user_id, ts)
        return recompute.latest_of(seen[ts], series)

    return latest


def _check_names(
    meter: Meter, group_by: tuple[str, ...], filters: dict[str, frozenset[str]]
) -> None:
    known = {"userId", *meter.dimensions}
    for name in group_by:
        if name not in known:
            raise ValidationFailed(
                f"groupBy: {name!r} is neither userId nor a dimension of the meter", param="groupBy"
            )
    for name in filters:
        if name not in known:
            raise ValidationFailed(
                f"filter[{name}]: neither userId nor a dimension of the meter",
                param=f"filter[{name}]",
            )


MAX_WINDOWS = 10_000  # per answer; counted as the windows are cut (Lord Howe has half hours)
#: Past a period's end, how far the clock must go on for its last window to end somewhere:
#: the longest window, a month, and a clock change.
_LAST_WINDOW_REACH = timedelta(days=32)


def _check_years(request: SummaryRequest) -> None:
    """Refuse windows that would start before year 1 or end after year 9999 on the zone's
    clock, where dates end (9999-12-31 in UTC is already 10000-01-01 at +14). Only cutting
    windows reads the zone's clock over the whole period; groups alone convert only the
    bounds of groups that have events, and no event is that far from today."""
    if not request.window_size:
        return
    zone, name = request.zone, request.time_zone
    try:
        request.period_start.astimezone(zone)
    except OverflowError:
        raise ValidationFailed(
            f"periodStart: in {name} this is before year 1", param="periodStart"
        ) from None
    try:
        request.period_end.astimezone(zone).replace(tzinfo=None) + _LAST_WINDOW_REACH
    except OverflowError:
        raise ValidationFailed(
            f"periodEnd: the windows in {name} would end after year 9999", param="periodEnd"
        ) from None


def summarize(
    meter_id: str,
    user_id: str | None,
    start: datetime | None,
    end: datetime | None,
    *,
    window_size: str | None = None,
    time_zone: str = "UTC",
    group_by: tuple[str, ...] = (),
    filters: dict[str, frozenset[str]] | None = None,
    default_end: datetime | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    order_by: str | None = None,
) -> Summary:
    """Usage of a meter (all users, or one) in a period, optionally by window and group.
    Grouped by user or ordered, the windows are one page of users (`app.services.breakdown`)
    and `value`/`eventCount` stay the whole period's."""
    try:
        meter = get_meter(meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None
    _check_names(meter, group_by, filters or {})
    wanted = dict(filters or {})
    if user_id is not None:  # narrows, together with any filter[userId]
        wanted["userId"] = wanted.get("userId", frozenset({user_id})) & {user_id}
    period_end = end or ceil_slot(default_end or datetime.now(UTC))
    period_start = start or EPOCH
    period_end = max(period_end, period_start)
    grouped = bool(window_size or group_by)
    paging = _Paging(given=(start, end), limit=limit, cursor=cursor, order_by=order_by)
    for attempt in range(_SETTLE_ATTEMPTS):
        try:
            result, page = _summarize_once(
                meter,
                user_id,
                period_start,
                period_end,
                window_size,
                time_zone,
                group_by,
                wanted,
                paging,
            )
            break
        except recompute.Unsettled as unsettled:  # a sum that may have clamped: fold it, read again
            if attempt == _SETTLE_ATTEMPTS - 1:
                raise InternalError(
                    "internal error: a rollup could not be settled; try again"
                ) from None
            compact.compact_one(unsettled.key)
    return Summary(
        meter,
        user_id,
        start,
        end,
        result,
        grouped=grouped or page is not None,
        paged=page is not None,
        next_cursor=page.next_cursor if page else None,
    )


@dataclass(frozen=True)
class _Paging:
    """What a breakdown by user asked for (`app.services.breakdown`), and the period as
    given (its cursor is bound to it)."""

    given: tuple[datetime | None, datetime | None]
    limit: int | None
    cursor: str | None
    order_by: str | None


#: How often a summary folds a rollup whose sums may have clamped before giving up.
_SETTLE_ATTEMPTS = 3


def reads_org_wide(
    meter: Meter, group_by: tuple[str, ...], wanted: dict[str, frozenset[str]]
) -> bool:
    """Whether a summary of all users can read the org-wide rollups: it neither groups nor
    filters by user, does not count distinct users, and the meter's org-wide rollups hold
    all its events (`rollups.org_wide`)."""
    if USER_ID in group_by or USER_ID in wanted:
        return False
    if meter.aggregation_type == Aggregation.UNIQUE_COUNT and meter.unique_by == USER_ID:
        return False
    return rollups.org_wide(meter.key.id())


def _summarize_once(
    meter: Meter,
    user_id: str | None,
    period_start: datetime,
    period_end: datetime,
    window_size: str | None,
    time_zone: str,
    group_by: tuple[str, ...],
    wanted: dict[str, frozenset[str]],
    paging: _Paging,
) -> tuple[SummaryResult, breakdown.Breakdown | None]:
    """The summary, and the page of users when it is a breakdown by user. The total reads
    the org-wide rollups when it can (`reads_org_wide`), else every user's, or the one
    user's."""
    reading = Reading()
    try:
        request = SummaryRequest(
            meter.aggregation_type,
            meter.unique_by,
            period_start,
            period_end,
            window_size,
            time_zone,
            tuple(group_by),
            wanted,
            max_windows=MAX_WINDOWS,
        )
        _check_years(request)
        paged = breakdown.applies(request.group_by, paging.order_by, paging.limit, paging.cursor)
        page = None
        if paged:
            page = breakdown.answer(
                meter,
                request,
                given=paging.given,
                limit=paging.limit,
                cursor=paging.cursor,
                order_by=paging.order_by,
                user_cells=lambda user: cells(meter, user, period_start, period_end, reading),
                latest=_latest_reader(meter, user_id),
                reading=reading,
            )
        if page is not None and page.whole is not None:
            return page.whole, page  # one page held every user: its total is the period's
        total = replace(request, window_size=None, group_by=()) if paged else request
        source = user_id
        if user_id is None and reads_org_wide(meter, total.group_by, wanted):
            source = shards.ORG_USER
        result = summarize_cells(
            total,
            cells(meter, source, period_start, period_end, reading),
            _latest_reader(meter, source),
            deadline.check,
        )
        if page is not None:
            result = SummaryResult(result.value, result.event_count, page.windows)
        return result, page
    except TooManyWindows as exc:
        raise ValidationFailed(f"windowSize: {exc}", param="windowSize") from None
    except InvalidSummaryRequest as exc:
        raise _refused(exc) from None
    except UnsupportedZone as exc:  # e.g. local mean time before 1900, Monrovia until 1972
        raise ValidationFailed(f"timeZone: {exc}", param="timeZone") from None
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
        raise _internal(meter, reading, exc) from exc


#: The engine's name of a refused field -> (query parameter, what to say). The caller's
#: value is not echoed: it can be long.
_REFUSED = {
    "window_size": (
        "windowSize",
        "must be one of " + ", ".join(size for size in WINDOW_SIZES if size),
    ),
    "group_by": ("groupBy", "names a field twice"),
    "time_zone": ("timeZone", "is not a time zone"),
}


def _refused(exc: InvalidSummaryRequest) -> ValidationFailed:
    param, says = _REFUSED[exc.field]
    return ValidationFailed(f"{param}: {says}", param=param)


def _internal(meter: Meter, reading: Reading, exc: Exception) -> InternalError:
    """Log what went wrong with which stored entity; the caller learns only that it was us.

    A corrupt rollup (its `Slots_` not JSON) or an engine inconsistency is not the
    caller's fault, and its text may hold stored data: it goes to the log, not the answer.
    """
    log.error(
        "summary of meter %s failed while reading %s: %s: %s",
        meter.id_,
        reading.describe(),
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra={"entityKey": reading.describe(), "meterId": meter.id_},
    )
    return InternalError("internal error: the summary could not be computed; it is logged")
