"""Recent events of a meter: newest first, with status, searchable, paged, validated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.http import error_of

NOW = datetime.now(UTC).replace(microsecond=0)


def _at(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def _events(api, **params) -> dict:
    answer = api.get("/v1/billing/meter-events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _record_three(api, meter):
    """Three events of ann and bob; the meter must declare the dimension `model`."""
    return [
        e["id"]
        for e in api.record(
            {
                "meterId": meter["id"],
                "userId": "ann",
                "value": 1,
                "timestamp": _at(30),
                "idempotency": "req-1",
                "dimensions": {"model": "a"},
            },
            {"meterId": meter["id"], "userId": "bob", "value": 2, "timestamp": _at(10)},
            {
                "meterId": meter["id"],
                "userId": "ann",
                "value": 4,
                "timestamp": _at(20),
                "idempotency": "req-3",
            },
        )["events"]
    ]


def test_events_are_listed_newest_first_with_every_field(api):
    meter = api.create_meter(dimensions=["model"])
    first, second, third = _record_three(api, meter)
    answer = _events(api, meterId=meter["id"])
    assert [e["id"] for e in answer["events"]] == [second, third, first]
    assert (answer["count"], answer["nextCursor"]) == (3, None)
    oldest = answer["events"][-1]
    assert {
        k: oldest[k]
        for k in ("meterId", "userId", "value", "timestamp", "idempotency", "dimensions", "status")
    } == {
        "meterId": meter["id"],
        "userId": "ann",
        "value": 1,
        "timestamp": _at(30),
        "idempotency": "req-1",
        "dimensions": {"model": "a"},
        "status": "active",
    }
    assert answer["events"][0]["idempotency"] == ""


def test_cancelled_events_stay_listed_and_say_so(api):
    meter = api.create_meter(dimensions=["model"])
    first, second, _third = _record_three(api, meter)
    cancel = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": first}]})
    assert cancel.status_code == 200, cancel.text
    statuses = {e["id"]: e["status"] for e in _events(api, meterId=meter["id"])["events"]}
    assert statuses[first] == "cancelled" and statuses[second] == "active"


def test_search_by_user(api):
    meter = api.create_meter(dimensions=["model"])
    first, _second, third = _record_three(api, meter)
    answer = _events(api, meterId=meter["id"], userId="ann")
    assert [e["id"] for e in answer["events"]] == [third, first]
    assert _events(api, meterId=meter["id"], userId="nobody")["events"] == []


def test_search_by_idempotency_key_is_scoped_to_the_meter(api):
    meter = api.create_meter(dimensions=["model"])
    other = api.create_meter(name="Other", eventName="other")
    first, *_ = _record_three(api, meter)
    assert [e["id"] for e in _events(api, meterId=meter["id"], idempotency="req-1")["events"]] == [
        first
    ]
    assert _events(api, meterId=other["id"], idempotency="req-1")["events"] == []
    assert _events(api, meterId=meter["id"], idempotency="req-1", userId="bob")["events"] == []
    assert _events(api, meterId=meter["id"], idempotency="unknown")["events"] == []


def test_pages_follow_the_cursor_without_gaps_or_repeats(api):
    meter = api.create_meter()
    api.record(
        *[
            {"meterId": meter["id"], "userId": "u", "value": n, "timestamp": _at(n)}
            for n in range(7)
        ]
    )
    seen, cursor = [], None
    while True:
        params = {"meterId": meter["id"], "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = _events(api, **params)
        seen += [e["value"] for e in page["events"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(range(7))


def test_one_org_cannot_list_anothers_events(api, other_api):
    meter = api.create_meter(dimensions=["model"])
    _record_three(api, meter)
    answer = other_api.get("/v1/billing/meter-events", params={"meterId": meter["id"]})
    assert answer.status_code == 404
    assert error_of(answer)["param"] == "meterId"


@pytest.mark.parametrize(
    "params, param",
    [
        ({}, "meterId"),
        ({"meterId": "M", "limit": "0"}, "limit"),
        ({"meterId": "M", "limit": "101"}, "limit"),
        ({"meterId": "M", "limit": "many"}, "limit"),
        ({"meterId": "M", "userId": ""}, "userId"),
        ({"meterId": "M", "idempotency": "k", "cursor": "abc"}, "cursor"),
        ({"meterId": "M", "colour": "red"}, "colour"),
    ],
)
def test_bad_queries_name_the_field(api, params, param):
    answer = api.get("/v1/billing/meter-events", params=params)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


def test_a_bad_cursor_is_a_400(api):
    meter = api.create_meter()
    answer = api.get(
        "/v1/billing/meter-events", params={"meterId": meter["id"], "cursor": "not!a!cursor"}
    )
    assert answer.status_code == 400
    assert error_of(answer)["param"] == "cursor"


def test_listing_needs_a_key(anonymous):
    answer = anonymous.get("/v1/billing/meter-events", params={"meterId": "x"})
    assert answer.status_code == 401
    assert error_of(answer)["code"] == "unauthorized"
