"""The window engine: summary answers from pre-aggregated usage cells, pure computation.

A summary takes the cells (`app.core.cells`) of one *series* per 15-minute UTC slot and
merges the cells of its period into (window, group) buckets, so its cost grows with
series x slots rather than with events, and every answer is exact (Python ints).

Windows are local clock hours, days or months of the request's time zone, clipped to the
period. Every UTC offset in use today is a multiple of 15 minutes, so every local boundary
is a slot boundary and no slot straddles two windows; we check this and raise UnsupportedZone
when it fails (e.g. local mean time before 1900). An hour window is one local clock hour at
one UTC offset: the hour repeated at a fall-back is two windows (one per offset), and Lord
Howe's 30-minute shifts give 30-minute windows.

A missing dimension reads as "" everywhere (filters, groupBy, unique_count), so
unique_count(X) always equals the number of groups of a groupBy X.

Caveat for callers: Python compares and subtracts two datetimes *with the same tzinfo* by
wall clock, ignoring fold; convert window bounds to UTC before comparing or subtracting.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.core.aggregation import AGGREGATION_TYPES, Aggregation
from app.core.cells import Cell, Series, settle_last
from app.core.slots import EPOCH, SLOT, slot_of

#: Called between steps of the long loops (the service passes `app.deadline.check`,
#: which raises past the request's deadline); the engine itself knows no clock.
Check = Callable[[], None]
WINDOW_SIZES = (None, "hour", "day", "month")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class SummaryRequest:
    aggregation: str  # sum | count | last | min | max | avg | unique_count
    unique_by: str | None  # unique_count only: "userId" or a dimension name
    period_start: datetime  # aware, inclusive
    period_end: datetime  # aware, exclusive
    window_size: str | None = None  # None | "hour" | "day" | "month"
    time_zone: str = "UTC"  # IANA name
    group_by: tuple[str, ...] = ()
    filters: dict[str, frozenset[str]] = field(default_factory=dict)
    max_windows: int | None = None  # more windows than this raise TooManyWindows

    def __post_init__(self) -> None:
        """Refuse a malformed request here, so the computation never has to guess."""
        if self.aggregation not in AGGREGATION_TYPES:
            raise ValueError(f"unknown aggregation {self.aggregation!r}")
        if (self.aggregation == Aggregation.UNIQUE_COUNT) != (self.unique_by is not None):
            raise ValueError("unique_by is required by unique_count and refused otherwise")
        if self.window_size not in WINDOW_SIZES:
            raise InvalidSummaryRequest("window_size", f"unknown window size {self.window_size!r}")
        if self.period_start.utcoffset() is None or self.period_end.utcoffset() is None:
            raise ValueError("period bounds must be timezone-aware")
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidSummaryRequest("group_by", "group_by names a field twice")
        self.zone  # noqa: B018 - fail now on an unknown zone

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSummaryRequest(
                "time_zone", f"unknown time zone {self.time_zone!r}"
            ) from None


class InvalidSummaryRequest(ValueError):
    """A request field the engine refuses, named in `field`: the caller's to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class TooManyWindows(ValueError):
    """The period holds more windows than the request's `max_windows`."""


class UnsupportedZone(ValueError):
    """The zone's clock is off the 15-minute grid in the period, so windows would split slots."""


@dataclass(frozen=True)
class Window:
    window_start: datetime  # in the request's zone; compare after .astimezone(timezone.utc)
    window_end: datetime
    value: int | float | None
    event_count: int
    group_by: dict[str, str]


@dataclass(frozen=True)
class SummaryResult:
    value: int | float | None
    event_count: int
    windows: list[Window]


# --- windows -------------------------------------------------------------------------------


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    """The instant on the zone's clock, refusing offsets that would split a slot."""
    local = instant.astimezone(zone)
    # mypy: a ZoneInfo gives every instant an offset
    if local.utcoffset() % SLOT:  # type: ignore[operator]
        raise UnsupportedZone(
            f"{zone.key} is at UTC{local:%z} on {local:%Y-%m-%d}, not a "
            "multiple of 15 minutes, so its windows do not fall on slot "
            "boundaries"
        )
    return local


#: Which window an instant is in: (year, month[, day[, hour, offset]]) on the zone's clock.
WindowKey = tuple[Any, ...]
#: A group's values, in the order of `groupBy`.
Group = tuple[str, ...]
#: How a series counts: its group, and its unique_count value (None: not counted).
Profile = tuple[Group, str | None]


def _window_key(instant: datetime, zone: ZoneInfo, size: str) -> WindowKey:
    """Which window an instant is in. Hours carry the offset, so a repeated hour is two windows."""
    local = _local(instant, zone)
    if size == "month":
        return local.year, local.month
    if size == "day":
        return local.year, local.month, local.day
    return local.year, local.month, local.day, local.hour, local.utcoffset()


def _next_wall(local: datetime, size: str) -> datetime:
    """Naive wall-clock start of the next local hour, day or month."""
    if size == "month":
        return datetime(local.year + local.month // 12, local.month % 12 + 1, 1)
    day = datetime(local.year, local.month, local.day)
    return day + (timedelta(days=1) if size == "day" else timedelta(hours=local.hour + 1))


def _boundary_guess(start: datetime, zone: ZoneInfo, size: str, key: WindowKey) -> datetime:
    """The next local boundary as a UTC instant: an upper bound of where the window ends.

    A wall time in a gap or a repeat maps to two instants (fold 0/1); the earliest one past
    `start` that is already in another window is right (fold 0 of a skipped midnight is the
    end of the gap, fold 1 of a twice-lived hour is its second pass).
    """
    wall = _next_wall(_local(start, zone), size)
    candidates = {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    later = [c for c in candidates if c > start and _window_key(c, zone, size) != key]
    if not later:
        raise UnsupportedZone(f"cannot place the {size} boundary after {start} in {zone.key}")
    return min(later)


def _require_slot(instant: datetime, zone: ZoneInfo) -> None:
    if (instant - EPOCH) % SLOT:
        raise UnsupportedZone(
            f"a window boundary of {zone.key} at {instant} is not on a 15-minute slot boundary"
        )


def _next_boundary(start: datetime, zone: ZoneInfo, size: str) -> datetime:
    """Where the window holding `start` ends: the first slot in another window.

    The wall-clock guess is exact except near clock changes, where the window can end
    earlier (an offset change inside a local hour, a gap swallowing the local boundary).
    Window keys are constant within a slot, so a binary search over slots finds the change.
    """
    key = _window_key(start, zone, size)
    low, high = slot_of(start), _boundary_guess(start, zone, size, key)
    _require_slot(high, zone)
    if _window_key(high - _MICROSECOND, zone, size) == key:
        return high  # the usual case: the guess is the boundary
    while high - low > SLOT:
        middle = low + (high - low) // SLOT // 2 * SLOT
        low, high = (middle, high) if _window_key(middle, zone, size) == key else (low, middle)
    if _window_key(high - _MICROSECOND, zone, size) != key:  # the change was inside a slot
        raise UnsupportedZone(
            f"{zone.key} changes its clock off a 15-minute slot boundary near {high}"
        )
    return high


# The longest a window can last: an hour window is one clock hour at one offset; a day
# or month can gain a clock change (at most 2 hours, at Troll; 3 allowed for margin).
_LONGEST = {
    "hour": timedelta(hours=1),
    "day": timedelta(hours=27),
    "month": timedelta(days=31, hours=3),
}


def _no_deadline() -> None:
    """The default `Check`: nothing bounds the computation (tests, the command line)."""


def _utc_bounds(
    request: SummaryRequest, check: Check = _no_deadline
) -> list[tuple[datetime, datetime]]:
    start = request.period_start.astimezone(UTC)
    end = request.period_end.astimezone(UTC)
    if request.window_size is None:
        return [(start, end)]
    bounds: list[tuple[datetime, datetime]] = []
    limit = request.max_windows
    if limit is not None and end - start > limit * _LONGEST[request.window_size]:
        raise TooManyWindows(
            f"the period holds more than {limit} {request.window_size} windows"
        )  # surely: even the longest windows would not fit
    while start < end:
        check()
        if limit is not None and len(bounds) == limit:  # counted, not guessed from durations
            raise TooManyWindows(
                f"the period holds more than {limit} {request.window_size} windows"
            )
        stop = min(_next_boundary(start, request.zone, request.window_size), end)
        bounds.append((start, stop))
        start = stop
    return bounds


# --- aggregation ---------------------------------------------------------------------------

# Plain strings, looked up once: this runs once per window of an answer, and an enum
# member's attribute lookup and comparison cost three times a string's.
_UNIQUE_COUNT, _AVG = Aggregation.UNIQUE_COUNT.value, Aggregation.AVG.value
#: The Cell field each other aggregation answers with.
_CELL_FIELD = {
    Aggregation.SUM.value: "sum",
    Aggregation.COUNT.value: "count",
    Aggregation.LAST.value: "last_value",
    Aggregation.MIN.value: "min",
    Aggregation.MAX.value: "max",
}


@dataclass
class _Bucket:
    """One (window, group): merged statistics plus distinct unique_by values seen."""

    cell: Cell = field(default_factory=Cell)
    uniques: set[str] = field(default_factory=set)

    def value(self, aggregation: str) -> int | float | None:
        """The aggregation's answer; no events gives 0 for sum/count/unique_count, else None."""
        cell = self.cell
        if aggregation == _UNIQUE_COUNT:
            return len(self.uniques)
        if aggregation == _AVG:
            return cell.sum / cell.count if cell.count else None  # int / int: correctly rounded
        # mypy: a Cell's min, max or last value
        return getattr(cell, _CELL_FIELD[aggregation])  # type: ignore[no-any-return]


_UNSEEN = object()


def _profile(request: SummaryRequest, series: Series) -> Profile | None:
    """(group values, unique_by value) of a series, or None when a filter excludes it."""
    for name, allowed in request.filters.items():
        if series.value_of(name) not in allowed:
            return None
    group = tuple(series.value_of(name) for name in request.group_by)
    return group, series.value_of(request.unique_by) if request.unique_by else None


def _window_index(
    starts: list[datetime], first_slot: datetime, end: datetime, slot: datetime
) -> int:
    """Index of the window holding a slot; an unaligned period's edge slots join its edges."""
    if not first_slot <= slot < end:
        raise ValueError(f"cell slot {slot} is outside the period")
    return max(bisect_right(starts, slot) - 1, 0)


def _windows(
    request: SummaryRequest,
    bounds: list[tuple[datetime, datetime]],
    buckets: dict[tuple[int, Group], _Bucket],
    check: Check,
) -> list[Window]:
    """Dense windows without groupBy (a chart has no gaps); with groupBy only (window, group)
    pairs that have events. Ordered by window start, then group values."""
    if request.window_size is None and not request.group_by:
        return []
    keys = sorted(buckets) if request.group_by else [(i, ()) for i in range(len(bounds))]
    zone, empty = request.zone, _Bucket()
    windows: list[Window] = []
    for index, group in keys:
        if not len(windows) % 1024:
            check()
        bucket = buckets.get((index, group), empty)
        start, end = bounds[index]
        windows.append(
            Window(
                start.astimezone(zone),
                end.astimezone(zone),
                bucket.value(request.aggregation),
                bucket.cell.count,
                dict(zip(request.group_by, group)),
            )
        )
    return windows


def summarize_cells(
    request: SummaryRequest,
    cells: Iterable[tuple[Series, datetime, Cell | list[Any]]],
    latest: Callable[[frozenset[Series], int], Cell | None] | None = None,
    check: Check = _no_deadline,
) -> SummaryResult:
    """The summary of the period from its cells, given as (series, slot_start_utc, cell).

    A cell is a Cell or a compacted rollup slot's packed list (`Cell.merge_packed`).
    One (series, slot) may come several times (shards, raw edge events as single-event
    cells); cells merge exactly, so every copy simply adds in. Cells without events are
    ignored, so a series with no events never counts towards unique_count or a group.
    Cells with pending `last` events need `latest` (see `settle_last`), called at most
    once per (window, group) whose latest event is pending; the caller can answer every
    call about one instant with one read. `check` is called once per rollup, raw event
    and window cut, so a deadline can stop a long computation.
    """
    bounds = _utc_bounds(request, check)
    starts = [start for start, _ in bounds]
    first_slot, end = slot_of(request.period_start), request.period_end
    profiles: dict[Series, Profile | None] = {}
    buckets: dict[tuple[int, Group], _Bucket] = {}
    window_of: dict[datetime, int] = {}  # slots repeat across series and days
    last_series, last_key = None, None
    profile: Any = None
    bucket: Any = None
    window_at, bucket_at = window_of.get, buckets.get  # this loop runs once per cell
    for series, slot, cell in cells:
        if series is not last_series:  # a rollup's cells come together: skip the lookups
            check()  # once per rollup or raw event: the loop's cost is theirs
            last_series, last_key = series, None
            profile = profiles.get(series, _UNSEEN)
            if profile is _UNSEEN:
                profile = profiles[series] = _profile(request, series)
        packed = cell.__class__ is list  # a compacted slot, as the rollup packs it
        # mypy: `packed`: the cell is a list
        if profile is None or (cell[0] if packed else cell.count) == 0:  # type: ignore[index]
            continue
        index = window_at(slot)
        if index is None:
            index = window_of[slot] = _window_index(starts, first_slot, end, slot)
        if index != last_key:  # the next slots of a series mostly share its window
            last_key = index
            key = (index, profile[0])
            bucket = bucket_at(key)
            if bucket is None:
                bucket = buckets[key] = _Bucket()
        if packed:
            bucket.cell.merge_packed(cell)
        else:
            bucket.cell.merge(cell)
        if profile[1] is not None:
            bucket.uniques.add(profile[1])
    for bucket in buckets.values():
        if bucket.cell.pending_ts is not None:
            check()
            if latest is None:
                raise ValueError("cells with pending `last` events need a `latest` reader")
            settle_last(bucket.cell, latest)
    total = _Bucket()
    for bucket in buckets.values():  # buckets partition the cells
        total.cell.merge(bucket.cell)
        total.uniques |= bucket.uniques
    return SummaryResult(
        total.value(request.aggregation),
        total.cell.count,
        _windows(request, bounds, buckets, check),
    )
