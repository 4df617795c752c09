"""Aggregated usage of one meter over a period, from rollups: cost bounded by series x days.

The period is half-open, `[periodStart, periodEnd)`; a date-only end has already
been turned into the next midnight by the edge, so it includes its whole day.
Whole 15-minute slots of the period come from the rollups (one entity per
series and UTC day); a period bound that is not on a slot boundary adds the raw
events between it and the nearest slot boundary. `app.services.windows` turns
those cells into the answer: windows in any time zone, groups and filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from app import deadline
from app.errors import NotFound, ValidationFailed
from app.models import Meter
from app.services import recompute
from app.services.meters import get_meter
from app.core.slots import EPOCH, SLOT, slot_of
from app.core.windows import SummaryRequest, SummaryResult, TooManyWindows, summarize_cells
from app.storage import entities, queries, rollups


@dataclass(frozen=True)
class Summary:
    meter: Meter
    user_id: str | None
    period_start: datetime | None
    period_end: datetime | None
    result: SummaryResult
    grouped: bool

    @property
    def value(self):
        return self.result.value

    @property
    def event_count(self) -> int:
        return self.result.event_count


def _ceil_slot(moment: datetime) -> datetime:
    start = slot_of(moment)
    return start if start == moment else start + SLOT


def _raw_cells(meter: Meter, user_id, start: datetime, end: datetime):
    for event in queries.events(meter.id_, user_id, start, end):
        if recompute.is_live(event):
            moment = entities.get_time(event, "Timestamp")
            yield recompute.event_series(event), slot_of(moment), recompute.event_cell(event)


_SLOT_NUMBERS = {str(q): q for q in range(rollups.SLOTS_PER_DAY)}  # `Slots_` keys


def _rollup_cells(meter: Meter, user_id, start: datetime, end: datetime):
    """(series, slot start, cell) of the rollups' slots inside [start, end): compacted
    slots as their packed lists, deltas as Cells (`summarize_cells` takes both)."""
    first_day = rollups.day_and_slot(start)[0]
    last_day = rollups.day_and_slot(end - timedelta(microseconds=1))[0]
    slot_starts: dict[int, list[datetime]] = {}  # day -> its 96 slot starts, made once
    for entity in queries.rollups(meter.id_, user_id, first_day, last_day):
        deadline.check()  # decoding a page of rollups is CPU between two RPCs
        series, day, base, deltas, unknown = rollups.decode_parts(entity)
        if unknown:  # sum deltas at an int64 bound may have clamped: those slots, from raw
            deltas = {**deltas, **recompute.raw_slots(meter.id_, series, day, unknown)}
        moments = slot_starts.get(day)
        if moments is None:
            moments = slot_starts[day] = [rollups.slot_start(day, q)
                                          for q in range(rollups.SLOTS_PER_DAY)]
        whole_day = start <= moments[0] and moments[-1] + SLOT <= end
        for slot, fields in base.items():
            moment = moments[_SLOT_NUMBERS[slot]]
            if whole_day or start <= moment < end:
                yield series, moment, fields
        for slot, cell in deltas.items():
            moment = moments[slot]
            if start <= moment < end:
                yield series, moment, cell


def cells(meter: Meter, user_id: str | None, start: datetime, end: datetime):
    """Every cell of the period: rollup slots inside it, raw events at unaligned edges."""
    inner_start, inner_end = _ceil_slot(start), slot_of(end)
    if inner_start >= inner_end:
        yield from _raw_cells(meter, user_id, start, end)
        return
    if start < inner_start:
        yield from _raw_cells(meter, user_id, start, inner_start)
    yield from _rollup_cells(meter, user_id, inner_start, inner_end)
    if inner_end < end:
        yield from _raw_cells(meter, user_id, inner_end, end)


def _latest_reader(meter: Meter, user_id: str | None):
    """`latest(series, ts)` for the window engine: one query per instant, however many
    windows, groups and series ask about it (of the user's events, in a user's summary)."""
    seen: dict[int, list] = {}

    def latest(series: frozenset, ts: int):
        if ts not in seen:
            seen[ts] = recompute.events_at(meter.id_, user_id, ts)
        return recompute.latest_of(seen[ts], series)
    return latest


def _check_names(meter: Meter, group_by, filters) -> None:
    known = {"userId", *meter.dimensions}
    for name in group_by:
        if name not in known:
            raise ValidationFailed(f"groupBy: {name!r} is neither userId nor a dimension of "
                                   "the meter", param="groupBy")
    for name in filters:
        if name not in known:
            raise ValidationFailed(f"filter[{name}]: neither userId nor a dimension of the "
                                   "meter", param=f"filter[{name}]")


MAX_WINDOWS = 10_000  # per answer; counted as the windows are cut (Lord Howe has half hours)


def summarize(meter_id: str, user_id: str | None, start: datetime | None,
              end: datetime | None, *, window_size: str | None = None,
              time_zone: str = "UTC", group_by: tuple[str, ...] = (),
              filters: dict[str, frozenset[str]] | None = None,
              default_end: datetime | None = None) -> Summary:
    """Usage of a meter (all users, or one) in a period, optionally by window and group."""
    try:
        meter = get_meter(meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None
    _check_names(meter, group_by, filters or {})
    wanted = dict(filters or {})
    if user_id is not None:  # narrows, together with any filter[userId]
        wanted["userId"] = wanted.get("userId", frozenset({user_id})) & {user_id}
    period_end = end or _ceil_slot(default_end or datetime.now(timezone.utc))
    try:
        request = SummaryRequest(meter.aggregation_type, meter.unique_by, start or EPOCH,
                                 max(period_end, start or EPOCH), window_size, time_zone,
                                 tuple(group_by), wanted, max_windows=MAX_WINDOWS)
        result = summarize_cells(request, cells(meter, user_id, request.period_start,
                                                request.period_end),
                                 _latest_reader(meter, user_id), deadline.check)
    except TooManyWindows as exc:
        raise ValidationFailed(f"windowSize: {exc}", param="windowSize") from None
    except (ValueError, OverflowError) as exc:  # a zone off the 15-minute grid, year 9999
        raise ValidationFailed(f"timeZone: {exc}", param="timeZone") from None
    return Summary(meter, user_id, start, end, result,
                   grouped=bool(window_size or group_by))
