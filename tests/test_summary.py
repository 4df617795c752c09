"""Summaries: the original's parameters and answer, exact for every aggregation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support.http import error_of

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


def _at(hours: float) -> str:
    moment = DAY + timedelta(hours=hours)
    return moment.isoformat().replace("+00:00", "Z")


def _event(meter, user, value, hours, **extra):
    return {
        "meterId": meter["id"],
        "userId": user,
        "value": value,
        "timestamp": _at(hours),
        **extra,
    }


def test_the_answer_has_the_original_shape(api):
    meter = api.create_meter()
    api.record(_event(meter, "u1", 5, 1))
    summary = api.summary(meterId=meter["id"], userId="u1")
    assert summary == {
        "meterId": meter["id"],
        "meterName": meter["name"],
        "userId": "u1",
        "aggregationType": "sum",
        "value": 5,
        "eventCount": 1,
        "periodStart": None,
        "periodEnd": None,
    }


@pytest.mark.parametrize("aggregation, expected", [("sum", 10), ("count", 3), ("last", 2)])
def test_each_aggregation(api, aggregation, expected):
    meter = api.create_meter(aggregationType=aggregation)
    api.record(_event(meter, "u1", 7, 2), _event(meter, "u1", 2, 5), _event(meter, "u1", 1, 3))
    assert api.summary(meterId=meter["id"], userId="u1")["value"] == expected


def test_last_is_the_latest_timestamp_whatever_the_arrival_order(api):
    meter = api.create_meter(aggregationType="last")
    api.record(_event(meter, "u1", 30, 3))
    api.record(_event(meter, "u1", 10, 1))  # older, arrives later
    assert api.summary(meterId=meter["id"], userId="u1")["value"] == 30
    api.record(_event(meter, "u1", 40, 4))
    assert api.summary(meterId=meter["id"], userId="u1")["value"] == 40


def test_last_with_tied_timestamps_takes_the_event_recorded_last(api):
    meter = api.create_meter(aggregationType="last")
    for value in (5, 9, 3):
        api.record(_event(meter, "u1", value, 2))
    answers = {api.summary(meterId=meter["id"], userId="u1")["value"] for _ in range(3)}
    assert answers == {3}


def test_without_user_the_summary_covers_every_user(api):
    meter = api.create_meter()
    api.record(_event(meter, "u1", 1, 1), _event(meter, "u2", 2, 1), _event(meter, "u3", 4, 1))
    summary = api.summary(meterId=meter["id"])
    assert (summary["value"], summary["eventCount"], summary["userId"]) == (7, 3, "")
    assert api.summary(meterId=meter["id"], userId="u2")["value"] == 2


def test_the_period_is_start_inclusive_end_exclusive(api):
    meter = api.create_meter()
    api.record(*[_event(meter, "u1", 1 << h, h) for h in range(6)])
    summary = api.summary(meterId=meter["id"], periodStart=_at(1), periodEnd=_at(4))
    assert summary["value"] == 2 + 4 + 8
    assert (summary["periodStart"], summary["periodEnd"]) == (_at(1), _at(4))


def test_a_date_only_end_includes_that_whole_day(api):
    meter = api.create_meter()
    day = DAY.date().isoformat()
    api.record(
        _event(meter, "u1", 1, 0),
        _event(meter, "u1", 2, 23.99),
        _event(meter, "u1", 4, 24),
        _event(meter, "u1", 8, -0.01),
    )
    summary = api.summary(meterId=meter["id"], periodStart=day, periodEnd=day)
    assert summary["value"] == 3
    assert summary["periodEnd"] == _at(24)


def test_bounds_with_offsets_are_read_in_their_zone(api):
    meter = api.create_meter()
    api.record(_event(meter, "u1", 1, 1), _event(meter, "u1", 2, 3))
    start = (DAY + timedelta(hours=2)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    summary = api.summary(meterId=meter["id"], periodStart=start.isoformat())
    assert summary["value"] == 2


@pytest.mark.parametrize(
    "params, status, param",
    [
        ({}, 400, "meterId"),
        ({"meterId": "nope"}, 404, "meterId"),
        ({"periodStart": "2026-02-30"}, 400, "periodStart"),
        ({"periodEnd": "soon"}, 400, "periodEnd"),
        ({"periodStart": "2026-11-10", "periodEnd": "2026-11-01"}, 400, "periodEnd"),
        ({"unknown": "1"}, 400, "unknown"),
    ],
)
def test_bad_summary_queries(api, params, status, param):
    meter = api.create_meter()
    if params and "meterId" not in params:
        params = {"meterId": meter["id"], **params}
    answer = api.get("/v1/billing/meter-events/summary", params=params)
    assert answer.status_code == status
    assert error_of(answer)["param"] == param


def test_random_streams_match_a_brute_force_computation(api):
    rng = random.Random(20261127)
    meters = {
        kind: api.create_meter(eventName=f"m_{kind}", aggregationType=kind)
        for kind in ("sum", "count", "last")
    }
    sent = []
    seconds = iter(rng.sample(range(72 * 3600), 240))  # distinct: no ties for `last`
    for _ in range(4):
        batch = []
        for _ in range(60):
            kind = rng.choice(list(meters))
            key = f"k{rng.randrange(150)}"
            event = _event(
                meters[kind],
                rng.choice(["a", "b", "c"]),
                rng.randrange(-5, 100),
                next(seconds) / 3600,
                idempotency=key,
            )
            batch.append((kind, event))
        api.record(*[event for _, event in batch])
        sent += batch
    first_by_key = {}
    for kind, event in sent:
        first_by_key.setdefault((kind, event["idempotency"]), event)
    for kind, meter in meters.items():
        for user in (None, "a", "b"):
            for start, end in [(None, None), (6, 30), (0, 72)]:
                stored = [
                    e
                    for (k, _), e in first_by_key.items()
                    if k == kind
                    and (user is None or e["userId"] == user)
                    and (start is None or _in(e, start, end))
                ]
                params = {
                    "meterId": meter["id"],
                    **({"userId": user} if user else {}),
                    **(
                        {"periodStart": _at(start), "periodEnd": _at(end)}
                        if start is not None
                        else {}
                    ),
                }
                summary = api.summary(**params)
                assert summary["eventCount"] == len(stored)
                assert summary["value"] == _brute_force(kind, stored), (kind, user, start)


def _in(event, start_hours, end_hours):
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    return DAY + timedelta(hours=start_hours) <= moment < DAY + timedelta(hours=end_hours)


def _brute_force(kind, events):
    if kind == "count":
        return len(events)
    if kind == "sum":
        return sum(e["value"] for e in events)
    latest = max(
        events,
        key=lambda e: datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")),
        default=None,
    )
    return latest["value"] if latest else 0


def test_hourly_windows_in_a_half_hour_zone(api):
    meter = api.create_meter()
    # 04:29 and 04:31 UTC sit in different Kolkata hours (09:59 and 10:01, +05:30).
    base = DAY.replace(hour=4)
    api.record(
        *[
            _event(meter, "u1", v, (base - DAY).total_seconds() / 3600 + m / 60)
            for v, m in [(1, 29), (2, 31), (4, 95)]
        ]
    )
    answer = api.summary(
        meterId=meter["id"],
        periodStart=_at(4),
        periodEnd=_at(6),
        windowSize="hour",
        timeZone="Asia/Kolkata",
    )
    windows = [(w["windowStart"], w["value"], w["eventCount"]) for w in answer["windows"]]
    day = DAY.date().isoformat()
    assert windows == [
        (f"{day}T09:30:00+05:30", 1, 1),
        (f"{day}T10:00:00+05:30", 2, 1),
        (f"{day}T11:00:00+05:30", 4, 1),
    ]
    assert answer["windows"][-1]["windowEnd"] == f"{day}T11:30:00+05:30"


def test_group_by_user_and_dimension_with_filters(api):
    meter = api.create_meter(dimensions=["model", "region"])
    api.record(
        _event(meter, "a", 1, 1, dimensions={"model": "x", "region": "eu"}),
        _event(meter, "a", 2, 2, dimensions={"model": "y", "region": "eu"}),
        _event(meter, "b", 4, 3, dimensions={"model": "x", "region": "us"}),
        _event(meter, "b", 8, 4, dimensions={"model": "x"}),
    )
    answer = api.get(
        "/v1/billing/meter-events/summary",
        params=[
            ("meterId", meter["id"]),
            ("groupBy", "userId"),
            ("groupBy", "model"),
            ("filter[region]", "eu"),
            ("filter[region]", "us"),
        ],
    ).json()
    assert answer["value"] == 7
    assert [(w["groupBy"], w["value"]) for w in answer["windows"]] == [
        ({"userId": "a", "model": "x"}, 1),
        ({"userId": "a", "model": "y"}, 2),
        ({"userId": "b", "model": "x"}, 4),
    ]


def test_unique_count_counts_distinct_values(api):
    users = api.create_meter(eventName="active", aggregationType="unique_count", uniqueBy="userId")
    models = api.create_meter(
        eventName="models", aggregationType="unique_count", dimensions=["model"], uniqueBy="model"
    )
    api.record(*[_event(users, u, 1, h) for u, h in [("a", 1), ("b", 2), ("a", 3)]])
    api.record(
        *[
            _event(models, "u", 1, h, dimensions={"model": m})
            for m, h in [("x", 1), ("y", 2), ("x", 30)]
        ]
    )
    assert api.summary(meterId=users["id"])["value"] == 2
    daily = api.summary(meterId=models["id"], periodStart=DAY.date().isoformat(), windowSize="day")
    assert [w["value"] for w in daily["windows"]][:2] == [2, 1]


@pytest.mark.parametrize(
    "params, param",
    [
        ({"windowSize": "week", "periodStart": "2026-11-01"}, "windowSize"),
        ({"windowSize": "hour"}, "periodStart"),
        ({"timeZone": "Mars/Olympus", "periodStart": "2026-11-01"}, "timeZone"),
        ({"timeZone": "../../etc/passwd"}, "timeZone"),
        ({"groupBy": "colour"}, "groupBy"),
        ({"filter[colour]": "red"}, "filter[colour]"),
        ({"filter": "red"}, "filter"),
        ({"windowSize": "hour", "periodStart": "2000-01-01"}, "windowSize"),
    ],
)
def test_bad_window_and_group_parameters(api, params, param):
    meter = api.create_meter()
    answer = api.get("/v1/billing/meter-events/summary", params={"meterId": meter["id"], **params})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


def test_an_open_ended_summary_includes_events_up_to_the_allowed_lead(api):
    meter = api.create_meter()
    ahead = datetime.now(UTC) + timedelta(minutes=4)
    api.record(
        {
            "meterId": meter["id"],
            "userId": "u1",
            "value": 6,
            "timestamp": ahead.isoformat().replace("+00:00", "Z"),
        }
    )
    assert api.summary(meterId=meter["id"])["value"] == 6
