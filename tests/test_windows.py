"""Windowed summaries from usage cells: time-zone windows, groups, filters, aggregations.

Pure computation, no emulator. The property test at the end compares `summarize_cells`
with a brute force over the raw events whose windows come from scanning every slot of the
period, an independent route to the same answer.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.cells import Cell, Series
from app.core.slots import slot_of
from app.core.windows import SummaryRequest, summarize_cells
from tests.support.windows import window_bounds

UTC = UTC
SLOT = timedelta(minutes=15)
NEW_YORK = ZoneInfo("America/New_York")
KATHMANDU, LORD_HOWE = ZoneInfo("Asia/Kathmandu"), ZoneInfo("Australia/Lord_Howe")


def at(*args: int, tz=UTC) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[arg-type, misc]  # year, month, day...


def micros(moment: datetime) -> int:
    return (moment - at(1970, 1, 1)) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Event:
    user: str
    value: int
    ts: datetime
    dims: tuple = ()
    created: int = 0
    key: int = 0

    @property
    def series(self) -> Series:
        return Series(self.user, tuple(sorted(self.dims)))

    @property
    def rank(self) -> tuple:
        return micros(self.ts), self.created, self.key

    def value_of(self, name: str) -> str:
        return self.user if name == "userId" else dict(self.dims).get(name, "")


def ev(user, value, ts, created=0, key=0, **dims) -> Event:
    return Event(user, value, ts, tuple(sorted(dims.items())), created, key)


def single_cells(*events):
    """One single-event cell per event: many share a (series, slot) and must merge."""
    out = []
    for event in events:
        cell = Cell()
        cell.add_event(event.value, event.rank)
        out.append((event.series, slot_of(event.ts), cell))
    return out


def request(
    start,
    end,
    aggregation="sum",
    window_size=None,
    time_zone="UTC",
    group_by=(),
    filters=None,
    unique_by=None,
) -> SummaryRequest:
    return SummaryRequest(
        aggregation,
        unique_by,
        start,
        end,
        window_size,
        time_zone,
        tuple(group_by),
        dict(filters or {}),
    )


def utc_bounds(windows):
    """Window bounds as UTC pairs: same-zone datetimes compare by wall clock, so never raw."""
    return [(w.window_start.astimezone(UTC), w.window_end.astimezone(UTC)) for w in windows]


def durations(bounds):
    return [e.astimezone(UTC) - s.astimezone(UTC) for s, e in bounds]


# --- slots and cells -----------------------------------------------------------------------


def test_slot_of_floors_to_the_quarter_hour_in_utc():
    assert slot_of(at(2026, 3, 8, 10, 14, 59, 999999)) == at(2026, 3, 8, 10)
    assert slot_of(at(2026, 3, 8, 10, 15)) == at(2026, 3, 8, 10, 15)
    assert slot_of(at(2026, 1, 1, 10, 0, tz=KATHMANDU)) == at(2026, 1, 1, 4, 15)
    assert slot_of(at(1969, 12, 31, 23, 59)) == at(1969, 12, 31, 23, 45)
    with pytest.raises(ValueError):
        slot_of(datetime(2026, 1, 1))


events_st = st.lists(
    st.tuples(
        st.integers(-(10**20), 10**20),
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1)),
    ),
    max_size=5,
)


def _cell_of(events) -> Cell:
    cell = Cell()
    for value, rank in events:
        cell.add_event(value, rank)
    return cell


def _merged(*cells) -> Cell:
    out = Cell()
    for cell in cells:
        out.merge(cell)
    return out


@given(events_st, events_st, events_st)
def test_cell_merge_is_exact_associative_and_commutative(a, b, c):
    merged = _merged(_cell_of(a), _cell_of(b), _cell_of(c))
    assert merged == _merged(_cell_of(c), _cell_of(a), _cell_of(b))
    assert merged == _merged(_cell_of(b), _merged(_cell_of(c), _cell_of(a)))
    values = [value for value, _ in a + b + c]
    latest = max(((rank, value) for value, rank in a + b + c), default=(None, None))
    assert merged == Cell(
        len(values), sum(values), min(values, default=None), max(values, default=None), *latest
    )


# --- time-zone windows ---------------------------------------------------------------------


def test_new_york_spring_forward_day_is_23_hours_and_fall_back_day_25():
    spring = window_bounds(
        request(
            at(2026, 3, 7, tz=NEW_YORK),
            at(2026, 3, 10, tz=NEW_YORK),
            window_size="day",
            time_zone="America/New_York",
        )
    )
    assert [s.date().day for s, _ in spring] == [7, 8, 9]
    assert durations(spring) == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    fall = window_bounds(
        request(
            at(2026, 11, 1, tz=NEW_YORK),
            at(2026, 11, 2, tz=NEW_YORK),
            window_size="day",
            time_zone="America/New_York",
        )
    )
    assert durations(fall) == [timedelta(hours=25)]
    assert fall[0][0].astimezone(UTC) == at(2026, 11, 1, 4)
    assert fall[0][1].astimezone(UTC) == at(2026, 11, 2, 5)


def test_new_york_dst_day_windows_count_their_events():
    start, end = at(2026, 3, 8, tz=NEW_YORK), at(2026, 3, 9, tz=NEW_YORK)
    events = [
        ev("u", 1, at(2026, 3, 8, 4, 59)),
        ev("u", 2, at(2026, 3, 8, 5)),
        ev("u", 4, at(2026, 3, 9, 3, 59)),
        ev("u", 8, at(2026, 3, 9, 4)),
    ]
    inside = [e for e in events if start <= e.ts < end]
    result = summarize_cells(
        request(start, end, window_size="day", time_zone="America/New_York"), single_cells(*inside)
    )
    assert [(w.value, w.event_count) for w in result.windows] == [(6, 2)]
    assert utc_bounds(result.windows) == [(at(2026, 3, 8, 5), at(2026, 3, 9, 4))]


def test_the_repeated_fall_back_hour_is_two_windows():
    start, end = at(2026, 11, 1, 5), at(2026, 11, 1, 7)  # 01:00 EDT .. 02:00 EST
    events = [ev("u", 1, at(2026, 11, 1, 5, 30)), ev("u", 10, at(2026, 11, 1, 6, 30))]
    result = summarize_cells(
        request(start, end, window_size="hour", time_zone="America/New_York"), single_cells(*events)
    )
    assert [(w.window_start.hour, w.window_start.utcoffset(), w.value) for w in result.windows] == [
        (1, timedelta(hours=-4), 1),
        (1, timedelta(hours=-5), 10),
    ]
    assert utc_bounds(result.windows) == [(start, at(2026, 11, 1, 6)), (at(2026, 11, 1, 6), end)]


def test_spring_forward_hour_windows_skip_the_missing_hour():
    bounds = window_bounds(
        request(
            at(2026, 3, 8, 6), at(2026, 3, 8, 8), window_size="hour", time_zone="America/New_York"
        )
    )
    assert [(s.hour, e.hour) for s, e in bounds] == [(1, 3), (3, 4)]
    assert durations(bounds) == [timedelta(hours=1)] * 2


@pytest.mark.parametrize(
    "zone, hour_start_utc, day_start_utc",
    [
        ("Asia/Kolkata", at(2026, 1, 1, 4, 30), at(2025, 12, 31, 18, 30)),
        ("Asia/Kathmandu", at(2026, 1, 1, 4, 15), at(2025, 12, 31, 18, 15)),
    ],
)
def test_fractional_offset_hours_and_days(zone, hour_start_utc, day_start_utc):
    local = at(2026, 1, 1, 10, tz=ZoneInfo(zone))
    hours = window_bounds(
        request(local, local + timedelta(hours=2), window_size="hour", time_zone=zone)
    )
    assert [(s.hour, e.hour) for s, e in hours] == [(10, 11), (11, 12)]
    assert hours[0][0].astimezone(UTC) == hour_start_utc
    assert hours[0][1].astimezone(UTC) == hour_start_utc + timedelta(hours=1)
    midnight = at(2026, 1, 1, tz=ZoneInfo(zone))
    days = window_bounds(
        request(midnight, midnight + timedelta(days=2), window_size="day", time_zone=zone)
    )
    assert [s.astimezone(UTC) for s, _ in days] == [
        day_start_utc,
        day_start_utc + timedelta(days=1),
    ]


def test_kolkata_hour_windows_collect_events_by_local_hour():
    start = at(2026, 1, 1, 4, 30)
    events = [
        ev("u", 1, at(2026, 1, 1, 4, 30)),
        ev("u", 2, at(2026, 1, 1, 5, 29)),
        ev("u", 4, at(2026, 1, 1, 5, 30)),
    ]
    result = summarize_cells(
        request(start, start + timedelta(hours=2), window_size="hour", time_zone="Asia/Kolkata"),
        single_cells(*events),
    )
    assert [(w.window_start.strftime("%H:%M%z"), w.value) for w in result.windows] == [
        ("10:00+0530", 3),
        ("11:00+0530", 4),
    ]


def test_lord_howe_half_hour_shifts_give_half_hour_windows():
    fall = window_bounds(
        request(
            at(2026, 4, 4, 14),
            at(2026, 4, 4, 16, 30),
            window_size="hour",
            time_zone="Australia/Lord_Howe",
        )
    )
    assert [s.strftime("%H:%M%z") for s, _ in fall] == ["01:00+1100", "01:30+1030", "02:00+1030"]
    assert durations(fall) == [timedelta(hours=1), timedelta(minutes=30), timedelta(hours=1)]
    day = window_bounds(
        request(
            at(2026, 4, 5, tz=LORD_HOWE),
            at(2026, 4, 6, tz=LORD_HOWE),
            window_size="day",
            time_zone="Australia/Lord_Howe",
        )
    )
    assert durations(day) == [timedelta(hours=24, minutes=30)]


def test_a_two_hour_fall_back_repeats_two_local_hours():
    """Troll goes from 03:00 +02 back to 01:00 +00: the next local hour is on its second pass."""
    bounds = window_bounds(
        request(
            at(2026, 10, 24, 23),
            at(2026, 10, 25, 3),
            window_size="hour",
            time_zone="Antarctica/Troll",
        )
    )
    assert [s.strftime("%H:%M%z") for s, _ in bounds] == [
        "01:00+0200",
        "02:00+0200",
        "01:00+0000",
        "02:00+0000",
    ]
    assert durations(bounds) == [timedelta(hours=1)] * 4


def test_month_windows_across_a_dst_change():
    result = summarize_cells(
        request(
            at(2026, 2, 1, tz=NEW_YORK),
            at(2026, 5, 1, tz=NEW_YORK),
            aggregation="count",
            window_size="month",
            time_zone="America/New_York",
        ),
        single_cells(
            ev("u", 1, at(2026, 3, 1, 4, 59)),
            ev("u", 1, at(2026, 3, 1, 5)),
            ev("u", 1, at(2026, 4, 1, 3, 59)),
            ev("u", 1, at(2026, 4, 1, 4)),
        ),
    )
    assert [(w.window_start.month, w.value) for w in result.windows] == [(2, 1), (3, 2), (4, 1)]
    assert durations(utc_bounds(result.windows)) == [
        timedelta(days=28),
        timedelta(days=31, hours=-1),
        timedelta(days=30),
    ]


def test_first_and_last_windows_are_clipped_to_the_period():
    start, end = at(2026, 1, 1, 10, 15), at(2026, 1, 3, 7, 45)
    bounds = window_bounds(request(start, end, window_size="day"))
    assert bounds == [
        (start, at(2026, 1, 2)),
        (at(2026, 1, 2), at(2026, 1, 3)),
        (at(2026, 1, 3), end),
    ]


def test_an_unaligned_period_takes_its_edge_events_in_its_edge_windows():
    start, end = at(2026, 1, 1, 10, 7), at(2026, 1, 1, 11, 50)
    events = [ev("u", 1, at(2026, 1, 1, 10, 8)), ev("u", 2, at(2026, 1, 1, 11, 49))]
    result = summarize_cells(request(start, end, window_size="hour"), single_cells(*events))
    assert [(w.window_start, w.window_end, w.value) for w in result.windows] == [
        (start, at(2026, 1, 1, 11), 1),
        (at(2026, 1, 1, 11), end, 2),
    ]


def test_window_starts_are_in_the_requested_zone():
    ((start, end),) = window_bounds(
        request(at(2026, 1, 1), at(2026, 1, 2), time_zone="Asia/Kathmandu")
    )
    assert start.tzinfo is KATHMANDU and start.strftime("%H:%M%z") == "05:45+0545"
    assert end.astimezone(UTC) == at(2026, 1, 2)


@pytest.mark.parametrize(
    "zone, size, start",
    [
        ("Asia/Kolkata", "day", at(1900, 1, 1)),  # local mean time, +05:21:10
        ("Africa/Monrovia", "hour", at(1970, 1, 1)),  # -00:44:30 until 1972
    ],
)
def test_offsets_off_the_15_minute_grid_are_refused(zone, size, start):
    with pytest.raises(ValueError):
        window_bounds(request(start, start + timedelta(days=2), window_size=size, time_zone=zone))


# --- windows, groups and filters -----------------------------------------------------------

DAY = at(2026, 5, 4)


def _events_for_groups():
    return [
        ev("u1", 1, DAY + timedelta(hours=1), region="eu", tier="a"),
        ev("u1", 2, DAY + timedelta(hours=1, minutes=5), region="eu", tier="a"),
        ev("u2", 4, DAY + timedelta(hours=1), region="us"),
        ev("u1", 8, DAY + timedelta(hours=3), region="us", tier="b"),
        ev("u3", 16, DAY + timedelta(hours=3), tier="a"),
    ]


def test_without_window_or_group_there_are_no_windows():
    result = summarize_cells(
        request(DAY, DAY + timedelta(days=1)), single_cells(*_events_for_groups())
    )
    assert (result.value, result.event_count, result.windows) == (31, 5, [])


def test_group_by_without_window_spans_the_period_per_group():
    result = summarize_cells(
        request(DAY, DAY + timedelta(days=1), group_by=["region"]),
        single_cells(*_events_for_groups()),
    )
    assert [(w.group_by, w.value, w.event_count) for w in result.windows] == [
        ({"region": ""}, 16, 1),
        ({"region": "eu"}, 3, 2),
        ({"region": "us"}, 12, 2),
    ]
    assert {(w.window_start, w.window_end) for w in result.windows} == {
        (DAY, DAY + timedelta(days=1))
    }


def test_group_by_user_and_dimension_per_hour_lists_only_windows_with_events():
    result = summarize_cells(
        request(DAY, DAY + timedelta(hours=4), window_size="hour", group_by=["userId", "region"]),
        single_cells(*_events_for_groups()),
    )
    assert [(w.window_start.hour, w.group_by, w.value) for w in result.windows] == [
        (1, {"userId": "u1", "region": "eu"}, 3),
        (1, {"userId": "u2", "region": "us"}, 4),
        (3, {"userId": "u1", "region": "us"}, 8),
        (3, {"userId": "u3", "region": ""}, 16),
    ]
    assert (result.value, result.event_count) == (31, 5)


def test_without_group_by_every_window_is_listed_even_empty_ones():
    result = summarize_cells(
        request(DAY, DAY + timedelta(hours=4), aggregation="max", window_size="hour"),
        single_cells(*_events_for_groups()),
    )
    assert [(w.window_start.hour, w.value, w.event_count) for w in result.windows] == [
        (0, None, 0),
        (1, 4, 3),
        (2, None, 0),
        (3, 16, 2),
    ]


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"region": frozenset({"eu", "us"})}, 15),
        ({"userId": frozenset({"u1", "u3"}), "tier": frozenset({"a"})}, 19),
        ({"region": frozenset({""})}, 16),  # a missing dimension reads as ""
        ({"tier": frozenset({"b", "c"}), "region": frozenset({"eu"})}, 0),
        ({"userId": frozenset()}, 0),
    ],
)
def test_filters_allow_any_of_their_values_and_all_must_match(filters, expected):
    result = summarize_cells(
        request(DAY, DAY + timedelta(days=1), filters=filters), single_cells(*_events_for_groups())
    )
    assert result.value == expected


# --- aggregations --------------------------------------------------------------------------

AGGREGATION_EVENTS = [
    ev("u1", 5, DAY + timedelta(hours=1), created=1, key=9),
    ev("u2", -3, DAY + timedelta(hours=2), created=2, key=1),
    ev("u1", 7, DAY + timedelta(hours=2), created=2, key=2),
    ev("u1", 1, DAY + timedelta(hours=2), created=1, key=99),
]


@pytest.mark.parametrize(
    "aggregation, unique_by, expected, empty",
    [
        ("sum", None, 10, 0),
        ("count", None, 4, 0),
        ("last", None, 7, None),  # same timestamp: created decides, then the key id
        ("min", None, -3, None),
        ("max", None, 7, None),
        ("avg", None, 2.5, None),
        ("unique_count", "userId", 2, 0),
    ],
)
def test_every_aggregation_and_its_empty_value(aggregation, unique_by, expected, empty):
    result = summarize_cells(
        request(
            DAY, DAY + timedelta(hours=4), aggregation, window_size="hour", unique_by=unique_by
        ),
        single_cells(*AGGREGATION_EVENTS),
    )
    assert (result.value, result.event_count) == (expected, 4)
    assert next(w.value for w in result.windows) == empty
    assert [w.event_count for w in result.windows] == [0, 1, 3, 0]
    nothing = summarize_cells(
        request(DAY, DAY + timedelta(hours=1), aggregation, unique_by=unique_by), []
    )
    assert (nothing.value, nothing.event_count, nothing.windows) == (empty, 0, [])


def test_sums_stay_exact_beyond_floats():
    big = 2**70 + 1
    result = summarize_cells(
        request(DAY, DAY + timedelta(hours=1)), single_cells(ev("u", big, DAY), ev("u", big, DAY))
    )
    assert result.value == 2 * big


def test_unique_count_over_user_and_over_a_dimension():
    events = _events_for_groups()
    by_user = summarize_cells(
        request(
            DAY, DAY + timedelta(hours=4), "unique_count", window_size="hour", unique_by="userId"
        ),
        single_cells(*events),
    )
    assert (by_user.value, [w.value for w in by_user.windows]) == (3, [0, 2, 0, 2])
    by_region = summarize_cells(
        request(
            DAY, DAY + timedelta(hours=4), "unique_count", unique_by="region", group_by=["userId"]
        ),
        single_cells(*events),
    )
    assert by_region.value == 3  # eu, us and "" (u3 has no region)
    assert [(w.group_by["userId"], w.value) for w in by_region.windows] == [
        ("u1", 2),
        ("u2", 1),
        ("u3", 1),
    ]


def test_cells_without_events_do_not_count_as_series():
    cells = single_cells(ev("u1", 1, DAY)) + [(Series("u2"), DAY, Cell())]
    result = summarize_cells(
        request(
            DAY, DAY + timedelta(hours=1), "unique_count", unique_by="userId", group_by=["userId"]
        ),
        cells,
    )
    assert result.value == 1 and [w.group_by for w in result.windows] == [{"userId": "u1"}]


def test_shards_of_one_series_and_slot_merge():
    events = [ev("u", value, DAY + timedelta(minutes=value)) for value in range(1, 6)]
    cells = single_cells(*events)
    assert len({(series, slot) for series, slot, _ in cells}) == 1
    result = summarize_cells(request(DAY, DAY + timedelta(hours=1), "last"), cells)
    assert (result.value, result.event_count) == (5, 5)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"aggregation": "median"},
        {"aggregation": "unique_count"},
        {"unique_by": "userId"},
        {"window_size": "week"},
        {"time_zone": "Mars/Olympus_Mons"},
        {"period_start": datetime(2026, 1, 1)},
        {"period_end": DAY - timedelta(days=1)},
        {"group_by": ("userId", "userId")},
    ],
)
def test_malformed_requests_are_refused(change):
    fields = {"start": DAY, "end": DAY + timedelta(days=1)}
    if "period_start" in change:
        fields["start"] = change.pop("period_start")
    if "period_end" in change:
        fields["end"] = change.pop("period_end")
    with pytest.raises(ValueError):
        request(**fields, **change)


def test_a_cell_outside_the_period_is_refused():
    with pytest.raises(ValueError, match="outside the period"):
        summarize_cells(
            request(DAY, DAY + timedelta(hours=1)),
            single_cells(ev("u", 1, DAY + timedelta(hours=1))),
        )


# --- property: cells agree with a brute force over the raw events --------------------------

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe"]
CLOCK_ZONES = [
    "America/New_York",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
    "America/Santiago",
    "Asia/Beirut",
    "America/Havana",
    "Pacific/Chatham",
    "Europe/London",
]
NAMES = ["userId", "region", "tier"]
VALUES = {"userId": ["u1", "u2", "u3"], "region": ["eu", "us", ""], "tier": ["a", "b"]}
BASES = [at(2026, 3, 1), at(2026, 9, 25)]  # NY and Lord Howe both change clocks in each
SPAN_SLOTS = 40 * 96  # ~40 days of 15-minute slots


@functools.cache
def _clock_changes(zone_name: str, start: datetime, slots: int) -> tuple[int, ...]:
    """Slot numbers (from start) where the zone's offset changes: hourly scan, then refined."""
    zone, changes = ZoneInfo(zone_name), []

    def offset(n):
        return (start + n * SLOT).astimezone(zone).utcoffset()

    for hour in range(0, slots - 4, 4):
        if offset(hour) != offset(hour + 4):
            changes.append(next(n for n in range(hour + 1, hour + 5) if offset(n) != offset(hour)))
    return tuple(changes)


def _anchors(base: datetime) -> list[int]:
    return sorted({n for zone in ZONES for n in _clock_changes(zone, base, SPAN_SLOTS)})


def _near(anchors, spread):
    return st.sampled_from(anchors).flatmap(lambda n: st.integers(n - spread, n + spread))


@st.composite
def scenarios(draw):
    """(request, events, cells): events in the period, their cells split over random shards.

    Period bounds and event times lean towards clock changes, where windows are odd."""
    base = draw(st.sampled_from(BASES))
    anchors = _anchors(base)
    bound = st.one_of(st.integers(0, SPAN_SLOTS), _near(anchors, 8))
    start, end = sorted(base + draw(bound) * SLOT for _ in range(2))
    events = draw(st.lists(_event_st(base, anchors), max_size=30))
    events = [Event(*e[:5], key=i) for i, e in enumerate(events) if start <= e[2] < end]
    aggregation = draw(
        st.sampled_from(sorted({"sum", "count", "last", "min", "max", "avg", "unique_count"}))
    )
    unique_by = draw(st.sampled_from(NAMES)) if aggregation == "unique_count" else None
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2))
    filters = {
        name: draw(st.frozensets(st.sampled_from(VALUES[name] + [""]), min_size=1))
        for name in names
    }
    req = request(
        start,
        end,
        aggregation,
        draw(st.sampled_from([None, "hour", "day", "month"])),
        draw(st.sampled_from(ZONES)),
        draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2)),
        filters,
        unique_by,
    )
    return req, events, draw(st.permutations(_sharded_cells(draw, events)))


def _event_st(base, anchors):
    seconds = st.one_of(
        st.integers(0, SPAN_SLOTS * 900 - 1),
        _near([n * 900 for n in anchors], 3 * 3600),
        st.sampled_from([n * 900 for n in anchors]),
    )  # equal timestamps
    return st.tuples(
        st.sampled_from(VALUES["userId"]),
        st.integers(-1000, 10**18),
        seconds.map(lambda n: base + timedelta(seconds=n)),
        st.fixed_dictionaries(
            {},
            optional={
                "region": st.sampled_from(VALUES["region"]),
                "tier": st.sampled_from(VALUES["tier"]),
            },
        ).map(lambda dims: tuple(sorted(dims.items()))),
        st.integers(0, 2),
    )


def _sharded_cells(draw, events):
    cells = {}
    for event in events:
        shard = (event.series, slot_of(event.ts), draw(st.integers(0, 2)))
        cells.setdefault(shard, Cell()).add_event(event.value, event.rank)
    out = [(series, slot, cell) for (series, slot, _), cell in cells.items()]
    if events and draw(st.booleans()):
        out.append((Series("u9"), slot_of(events[0].ts), Cell()))  # an empty shard
    return out


def _oracle_bounds(req):
    """Windows as maximal runs of slots on one local hour (at one offset), day or month."""
    if req.window_size is None:
        return [(req.period_start, req.period_end)]
    zone = ZoneInfo(req.time_zone)

    def key(slot):
        local = slot.astimezone(zone)
        return {
            "hour": (local.date(), local.hour, local.utcoffset()),
            "day": local.date(),
            "month": (local.year, local.month),
        }[req.window_size]

    slots = [
        req.period_start + n * SLOT for n in range((req.period_end - req.period_start) // SLOT)
    ]
    runs = [list(run) for _, run in itertools.groupby(slots, key)]
    return [(run[0], run[-1] + SLOT) for run in runs]


def _oracle_value(req, events):
    if not events:
        return 0 if req.aggregation in ("sum", "count", "unique_count") else None
    values = [e.value for e in events]
    return {
        "sum": lambda: sum(values),
        "count": lambda: len(values),
        "min": lambda: min(values),
        "max": lambda: max(values),
        "avg": lambda: sum(values) / len(values),
        "last": lambda: max(events, key=lambda e: e.rank).value,
        "unique_count": lambda: len({e.value_of(req.unique_by) for e in events}),
    }[req.aggregation]()


def _oracle(req, events):
    events = [
        e
        for e in events
        if all(e.value_of(name) in allowed for name, allowed in req.filters.items())
    ]
    bounds = _oracle_bounds(req)
    buckets = {}
    for e in events:
        index = next(i for i, (s, end) in enumerate(bounds) if s <= e.ts < end)
        group = tuple(e.value_of(name) for name in req.group_by)
        buckets.setdefault((index, group), []).append(e)
    if req.window_size is None and not req.group_by:
        keys = []
    else:
        keys = sorted(buckets) if req.group_by else [(i, ()) for i in range(len(bounds))]
    windows = [
        (
            *bounds[i],
            _oracle_value(req, buckets.get((i, g), [])),
            len(buckets.get((i, g), [])),
            dict(zip(req.group_by, g)),
        )
        for i, g in keys
    ]
    return _oracle_value(req, events), len(events), windows


def _plain(result, zone):
    for w in result.windows:
        assert w.window_start.tzinfo is zone and w.window_end.tzinfo is zone
    return (
        result.value,
        result.event_count,
        [
            (
                w.window_start.astimezone(UTC),
                w.window_end.astimezone(UTC),
                w.value,
                w.event_count,
                w.group_by,
            )
            for w in result.windows
        ],
    )


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_summaries_from_cells_match_a_brute_force_over_events(scenario):
    req, events, cells = scenario
    assert _plain(summarize_cells(req, cells), ZoneInfo(req.time_zone)) == _oracle(req, events)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CLOCK_ZONES), st.sampled_from(["hour", "day", "month"]), st.data())
def test_window_bounds_around_clock_changes_match_a_slot_scan(zone, size, data):
    """More zones than above (2-hour, midnight and 45-minute changes), bounds only."""
    year = at(2026, 1, 1)
    anchor = data.draw(st.sampled_from(_clock_changes(zone, year, 365 * 96)))
    start = year + (anchor - data.draw(st.integers(0, 3 * 96))) * SLOT
    end = year + (anchor + data.draw(st.integers(0, 3 * 96))) * SLOT
    req = request(start, end, window_size=size, time_zone=zone)
    assert [
        (s.astimezone(UTC), e.astimezone(UTC)) for s, e in window_bounds(req)
    ] == _oracle_bounds(req)
