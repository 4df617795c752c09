"""Breakdowns by user over HTTP: pages of users and top users, exact against a brute force
over the recorded events, cursors bound to their query, and a page's cost bounded by its
users."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.cloud import datastore

from tests.support.http import error_of
from tests.test_cursors import _decodings

SUMMARY = "/v1/billing/meter-events/summary"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
AGGREGATIONS = ("sum", "min", "max", "last", "avg", "count", "unique_count")
USERS = [f"user-{n:02d}" for n in range(9)]
MODELS = ("gpt", "claude", "")  # "" records an event without the dimension


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _events(seed: int = 7) -> list[dict]:
    """Events of 9 users over 3 days, distinct timestamps (so `last` has no ties), some
    a few minutes from the unaligned period bounds the tests use."""
    rng = random.Random(seed)
    moments = rng.sample(range(0, 3 * 24 * 60), 120)  # minutes after DAY
    moments += [67 + 2, 67 - 3, 2 * 24 * 60 + 320 - 4, 2 * 24 * 60 + 320 + 1]  # near the edges
    events = []
    for number, minute in enumerate(moments):
        model = rng.choice(MODELS)
        events.append(
            {
                "userId": rng.choice(USERS[:-1]) if number % 5 else USERS[number % 2],
                "value": rng.randint(-50, 1000),
                "timestamp": _iso(DAY + timedelta(minutes=minute, microseconds=number)),
                "idempotency": f"e{number}",
                **({"dimensions": {"model": model}} if model else {}),
            }
        )
    return events


def _record(api, aggregation: str, events: list[dict]) -> dict:
    extra = {"uniqueBy": "model"} if aggregation == "unique_count" else {}
    meter = api.create_meter(
        eventName=f"m_{aggregation}",
        aggregationType=aggregation,
        dimensions=["model"],
        **extra,
    )
    for start in range(0, len(events), 100):
        api.record(*[{"meterId": meter["id"], **e} for e in events[start : start + 100]])
    return meter


def _value(aggregation: str, chosen: list[dict]):
    values = [e["value"] for e in chosen]
    if aggregation == "sum":
        return sum(values)
    if aggregation == "count":
        return len(values)
    if aggregation == "min":
        return min(values)
    if aggregation == "max":
        return max(values)
    if aggregation == "avg":
        return sum(values) / len(values)
    if aggregation == "last":
        return max(chosen, key=lambda e: e["timestamp"])["value"]
    return len({e.get("dimensions", {}).get("model", "") for e in chosen})


def _brute(aggregation, events, start, end, *, zone="UTC", by_day=False, group_by=(), only=None):
    """{(local window date or None, group values): (value, eventCount)} and the total."""
    chosen = [e for e in events if start <= _at(e) < end and (only is None or only(e))]
    buckets = defaultdict(list)
    for event in chosen:
        window = _at(event).astimezone(ZoneInfo(zone)).date().isoformat() if by_day else None
        buckets[window, tuple(_field(event, name) for name in group_by)].append(event)
    entries = {key: (_value(aggregation, found), len(found)) for key, found in buckets.items()}
    total = _value(aggregation, chosen) if chosen else None
    return entries, total, len(chosen)


def _at(event) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _field(event, name):
    return event["userId"] if name == "userId" else event.get("dimensions", {}).get(name, "")


def _pages(api, params: list[tuple[str, str]], limit: int) -> list[dict]:
    pages, cursor = [], None
    while True:
        page_params = params + [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        answer = api.get(SUMMARY, params=page_params)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "paging does not end"


def _entries(windows, by_day, group_by) -> dict:
    return {
        (w["windowStart"][:10] if by_day else None, tuple(w["groupBy"][n] for n in group_by)): (
            w["value"],
            w["eventCount"],
        )
        for w in windows
    }


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_pages_of_users_add_up_to_the_brute_force(api, aggregation):
    events = _events()
    meter = _record(api, aggregation, events)
    start = DAY + timedelta(minutes=67)  # unaligned bounds: edge events come raw
    end = DAY + timedelta(days=2, minutes=320)
    zone, group_by = "Asia/Kolkata", ("model", "userId")
    params = [
        ("meterId", meter["id"]),
        ("periodStart", _iso(start)),
        ("periodEnd", _iso(end)),
        ("windowSize", "day"),
        ("timeZone", zone),
        ("groupBy", "model"),
        ("groupBy", "userId"),
    ]
    expected, total, count = _brute(
        aggregation, events, start, end, zone=zone, by_day=True, group_by=group_by
    )
    assert len({user for _, (_, user) in expected}) >= 7  # several pages of 2 users
    pages = _pages(api, params, limit=2)
    assert len(pages) >= 4
    seen_users: list[str] = []
    for page in pages:
        users = sorted({w["groupBy"]["userId"] for w in page["windows"]})
        assert len(users) <= 2
        assert not seen_users or not users or seen_users[-1] < users[0]  # ascending, whole
        seen_users += users
        assert (page["value"], page["eventCount"]) == (total, count)  # the whole period's
    windows = [w for page in pages for w in page["windows"]]
    assert len(windows) == len(expected)
    assert _entries(windows, True, group_by) == expected
    # one page holding every user is the answer of one request, in the engine's order
    whole = api.get(SUMMARY, params=params + [("limit", "1000")]).json()
    assert whole["nextCursor"] is None
    key = lambda w: (w["groupBy"]["userId"], w["windowStart"], w["groupBy"]["model"])  # noqa: E731
    assert sorted(windows, key=key) == sorted(whole["windows"], key=key)


def test_paging_with_filters_and_a_user_filter(api):
    events = _events(seed=11)
    meter = _record(api, "sum", events)
    start, end = DAY, DAY + timedelta(days=3)
    base = [("meterId", meter["id"]), ("periodStart", _iso(start)), ("periodEnd", _iso(end))]
    base += [("groupBy", "userId"), ("filter[model]", "gpt"), ("filter[model]", "")]
    only = lambda e: _field(e, "model") in ("gpt", "")  # noqa: E731
    expected, _, _ = _brute("sum", events, start, end, group_by=("userId",), only=only)
    pages = _pages(api, base, limit=3)
    assert _entries([w for p in pages for w in p["windows"]], False, ("userId",)) == expected
    named = base + [("filter[userId]", u) for u in ("user-05", "user-01", "user-03", "nobody")]
    pages = _pages(api, named, limit=2)
    windows = [w for p in pages for w in p["windows"]]
    assert [w["groupBy"]["userId"] for w in windows] == ["user-01", "user-03", "user-05"]
    wanted = {
        key: v for key, v in expected.items() if key[1][0] in ("user-01", "user-03", "user-05")
    }
    assert _entries(windows, False, ("userId",)) == wanted


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("order", ["-value", "value"])
def test_top_users_are_the_brute_force_s(api, aggregation, order):
    events = _events(seed=3)
    meter = _record(api, aggregation, events)
    start, end = DAY + timedelta(minutes=67), DAY + timedelta(days=2, minutes=320)
    expected, _, _ = _brute(aggregation, events, start, end, group_by=("userId",))
    sign = -1 if order == "-value" else 1
    ranked = sorted(expected.items(), key=lambda item: (sign * item[1][0], item[0][1][0]))
    answer = api.summary(
        meterId=meter["id"],
        periodStart=_iso(start),
        periodEnd=_iso(end),
        groupBy="userId",
        orderBy=order,
        limit=4,
    )
    assert answer["nextCursor"] is None
    got = [(w["groupBy"]["userId"], w["value"], w["eventCount"]) for w in answer["windows"]]
    assert got == [(key[1][0], value, count) for key, (value, count) in ranked[:4]]


def test_top_users_break_ties_by_user_id(api):
    meter = api.create_meter()
    at = _iso(DAY + timedelta(hours=3))
    api.record(
        *[{"meterId": meter["id"], "userId": u, "value": 5, "timestamp": at} for u in "dbca"]
    )
    api.record({"meterId": meter["id"], "userId": "e", "value": 9, "timestamp": at})
    answer = api.summary(meterId=meter["id"], groupBy="userId", orderBy="-value", limit=3)
    assert [w["groupBy"]["userId"] for w in answer["windows"]] == ["e", "a", "b"]
    answer = api.summary(meterId=meter["id"], groupBy="userId", orderBy="value", limit=2)
    assert [w["groupBy"]["userId"] for w in answer["windows"]] == ["a", "b"]


def _cursor(api, meter, **extra) -> tuple[list[tuple[str, str]], str]:
    params = [("meterId", meter["id"]), ("groupBy", "userId"), ("limit", "1")]
    params += [(name, value) for name, value in extra.items()]
    cursor = api.get(SUMMARY, params=params).json()["nextCursor"]
    assert cursor
    return params, cursor


def test_a_cursor_is_valid_only_for_its_query(api, other_api):
    meter = api.create_meter(dimensions=["model"])
    other = api.create_meter(eventName="other", dimensions=["model"])
    at = _iso(DAY + timedelta(hours=2))
    for m in (meter, other):
        api.record(*[{"meterId": m["id"], "userId": u, "value": 1, "timestamp": at} for u in "abc"])
    params, cursor = _cursor(api, meter)
    follows = api.get(SUMMARY, params=params + [("cursor", cursor)])
    assert follows.status_code == 200 and follows.json()["windows"][0]["groupBy"] == {"userId": "b"}
    changed = [
        [("meterId", other["id"]), ("groupBy", "userId")],
        params + [("filter[model]", "x")],
        params + [("periodStart", _iso(DAY))],
        params + [("windowSize", "day"), ("periodStart", _iso(DAY))],
        params + [("timeZone", "Europe/Paris")],
        params + [("groupBy", "model")],
    ]
    for wrong in changed:
        answer = api.get(SUMMARY, params=wrong + [("cursor", cursor)])
        assert answer.status_code == 400, wrong
        assert error_of(answer)["param"] == "cursor"
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    answer = api.get(SUMMARY, params=params + [("cursor", tampered)])
    assert error_of(answer)["param"] == "cursor"
    foreign = other_api.create_meter()
    answer = other_api.get(
        SUMMARY, params=[("meterId", foreign["id"]), ("groupBy", "userId")] + [("cursor", cursor)]
    )
    assert answer.status_code == 400 and error_of(answer)["param"] == "cursor"


@pytest.mark.parametrize(
    "params, param",
    [
        ({"orderBy": "-value", "windowSize": "day", "periodStart": "2026-01-01"}, "orderBy"),
        ({"orderBy": "-value", "groupBy": ["userId", "model"]}, "orderBy"),
        ({"orderBy": "-value"}, "orderBy"),
        ({"orderBy": "value", "groupBy": "model"}, "orderBy"),
        ({"orderBy": "largest", "groupBy": "userId"}, "orderBy"),
        ({"orderBy": "-value", "groupBy": "userId", "cursor": "abc"}, "cursor"),
        ({"limit": 5}, "limit"),
        ({"limit": 5, "groupBy": "model"}, "limit"),
        ({"cursor": "abc", "groupBy": "model"}, "cursor"),
        ({"limit": 0, "groupBy": "userId"}, "limit"),
        ({"limit": 1001, "groupBy": "userId"}, "limit"),
        ({"limit": 1001, "groupBy": "userId", "orderBy": "-value"}, "limit"),
        ({"cursor": "", "groupBy": "userId"}, "cursor"),
    ],
)
def test_refusals_name_the_parameter(api, params, param):
    meter = api.create_meter(dimensions=["model"])
    answer = api.get(SUMMARY, params={"meterId": meter["id"], **params})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


def test_summaries_not_by_user_keep_their_shape(api):
    meter = api.create_meter(dimensions=["model"])
    api.record({"meterId": meter["id"], "userId": "a", "value": 3, "timestamp": _iso(DAY)})
    assert "nextCursor" not in api.summary(meterId=meter["id"])
    assert "nextCursor" not in api.summary(meterId=meter["id"], groupBy="model")
    assert api.summary(meterId=meter["id"], groupBy="userId")["nextCursor"] is None


def _reads(answer) -> int:
    fields = dict(
        part.strip().split("=") for part in answer.headers["X-Datastore-Usage"].split(";")
    )
    return int(fields["read"])


def test_a_page_reads_the_rollups_of_its_users_only(api):
    """40 users with events on 2 days: a page of 3 users reads their rollups (3 x 2) and
    one past, beside what the period's total reads; 10 times the users, 10 times that."""
    meter = api.create_meter()
    days = (DAY + timedelta(hours=5), DAY + timedelta(days=1, hours=7))
    events = [
        {"meterId": meter["id"], "userId": f"u{n:03d}", "value": n, "timestamp": _iso(at)}
        for n in range(40)
        for at in days
    ]
    for start in range(0, len(events), 100):
        api.record(*events[start : start + 100])
    period = {
        "meterId": meter["id"],
        "periodStart": _iso(DAY),
        "periodEnd": _iso(DAY + timedelta(days=2)),
    }
    total = _reads(api.get(SUMMARY, params=period))
    for limit in (3, 30):
        page = api.get(SUMMARY, params={**period, "groupBy": "userId", "limit": limit})
        assert len(page.json()["windows"]) == limit
        extra = _reads(page) - total
        assert limit * 2 <= extra <= limit * 2 + 2, (limit, extra)
    # unaligned edges: raw events are read for the page's users, and only if they have some
    edged = {**period, "periodStart": _iso(DAY + timedelta(hours=5, minutes=1))}
    page = api.get(SUMMARY, params={**edged, "groupBy": "userId", "limit": 3})
    values = {w["groupBy"]["userId"]: w["value"] for w in page.json()["windows"]}
    assert values == {"u000": 0, "u001": 1, "u002": 2}  # the 05:00 events are out
    assert _reads(page) - _reads(api.get(SUMMARY, params=edged)) <= 3 * 2 + 2


def test_org_wide_rollups_are_never_a_user_of_a_page(api, config, org):
    """Rollups with UserId "" (org-wide, written beside the per-user ones) sort before
    every user id: pages start after "" and never show them."""
    meter = api.create_meter()
    at = _iso(DAY + timedelta(hours=2))
    api.record(*[{"meterId": meter["id"], "userId": u, "value": 4, "timestamp": at} for u in "ab"])
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    stored = next(iter(raw.query(kind="meter-rollup").fetch()))
    org_wide = datastore.Entity(
        raw.key(*stored.key.flat_path[:-2], "meter-rollup", "org-wide-test"),
        exclude_from_indexes=("Series_", "Slots_"),
    )
    org_wide.update({**stored, "UserId": "", "Series_": '{"d":{},"u":""}'})
    raw.put(org_wide)
    pages = _pages(api, [("meterId", meter["id"]), ("groupBy", "userId")], limit=1)
    assert [[w["groupBy"]["userId"] for w in p["windows"]] for p in pages] == [["a"], ["b"]]


def test_the_same_page_has_the_same_cursor_and_it_hides_the_user(api):
    meter = api.create_meter()
    at = _iso(DAY + timedelta(hours=2))
    api.record(
        *[
            {"meterId": meter["id"], "userId": u, "value": 1, "timestamp": at}
            for u in ("alice-secret", "bob")
        ]
    )
    params = [("meterId", meter["id"]), ("groupBy", "userId"), ("limit", "1")]
    cursors = {api.get(SUMMARY, params=params).json()["nextCursor"] for _ in range(2)}
    assert len(cursors) == 1 and None not in cursors
    for blob in _decodings(cursors.pop()):
        assert b"alice-secret" not in blob
