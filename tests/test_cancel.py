"""Cancelling events: out of every summary, kept for audit, harmless twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.http import error_of

NOW = datetime.now(UTC).replace(microsecond=0)


def _at(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def _cancel(api, *targets, expect=200):
    answer = api.post("/v1/billing/meter-events/cancel", json={"events": list(targets)})
    assert answer.status_code == expect, answer.text
    return answer.json()


@pytest.mark.parametrize(
    "aggregation, cancelled, before, after",
    [
        ("sum", 1, 14, 12),
        ("count", 1, 3, 2),
        ("max", 0, 7, 5),
        ("min", 1, 2, 5),
        ("last", 2, 5, 2),
        ("avg", 0, 14 / 3, 3.5),
    ],
)
def test_a_cancelled_event_leaves_the_summary(api, aggregation, cancelled, before, after):
    meter = api.create_meter(aggregationType=aggregation)
    ids = [
        e["id"]
        for e in api.record(
            {"meterId": meter["id"], "userId": "u", "value": 7, "timestamp": _at(30)},
            {
                "meterId": meter["id"],
                "userId": "u",
                "value": 2,
                "timestamp": _at(20),
                "idempotency": "small",
            },
            {"meterId": meter["id"], "userId": "u", "value": 5, "timestamp": _at(10)},
        )["events"]
    ]
    assert api.summary(meterId=meter["id"])["value"] == pytest.approx(before)
    target = {"id": ids[cancelled]}
    if aggregation == "count":  # by meter and idempotency key instead of id
        target = {"meterId": meter["id"], "idempotency": "small"}
    result = _cancel(api, target)
    assert [e["status"] for e in result["events"]] == ["cancelled"]
    assert api.summary(meterId=meter["id"])["value"] == pytest.approx(after)


def test_cancelling_twice_is_harmless_and_unknown_events_are_reported(api):
    meter = api.create_meter()
    event_id = api.record({"meterId": meter["id"], "userId": "u", "value": 3, "idempotency": "k"})[
        "events"
    ][0]["id"]
    first = _cancel(
        api,
        {"id": event_id},
        {"eventName": meter["eventName"], "idempotency": "k"},
        {"id": "nonsense"},
        {"meterId": meter["id"], "idempotency": "other"},
    )
    assert [e["status"] for e in first["events"]] == [
        "cancelled",
        "already_cancelled",
        "not_found",
        "not_found",
    ]
    assert first["events"][0]["id"] == first["events"][1]["id"] == event_id
    again = _cancel(api, {"id": event_id})
    assert again["events"] == [{"id": event_id, "status": "already_cancelled"}]
    summary = api.summary(meterId=meter["id"])
    assert (summary["value"], summary["eventCount"]) == (0, 0)


def test_a_cancelled_key_stays_taken(api):
    meter = api.create_meter()
    event = {"meterId": meter["id"], "userId": "u", "value": 3, "idempotency": "once"}
    event_id = api.record(event)["events"][0]["id"]
    _cancel(api, {"id": event_id})
    retry = api.record(event)["events"][0]
    assert retry == {"id": event_id, "status": "duplicate"}
    assert api.summary(meterId=meter["id"])["value"] == 0


def test_cancelled_events_stay_stored_for_audit(api, org, config):
    from google.cloud import datastore

    meter = api.create_meter()
    event_id = api.record({"meterId": meter["id"], "userId": "u", "value": 3})["events"][0]["id"]
    _cancel(api, {"id": event_id})
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    stored = [e for e in raw.query(kind="meter-event").fetch()]
    assert len(stored) == 1 and stored[0]["Deleted"] is True and stored[0]["Id_"] == event_id


def test_one_org_cannot_cancel_anothers_events(api, other_api):
    meter = api.create_meter()
    event_id = api.record({"meterId": meter["id"], "userId": "u", "value": 3})["events"][0]["id"]
    result = _cancel(other_api, {"id": event_id})
    assert result["events"] == [{"id": None, "status": "not_found"}]
    assert api.summary(meterId=meter["id"])["value"] == 3


@pytest.mark.parametrize(
    "target, param",
    [
        ({}, "events[0].id"),
        ({"id": "x", "idempotency": "k"}, "events[0].id"),
        ({"idempotency": "k"}, "events[0].meterId"),
        ({"meterId": "m"}, "events[0].id"),
        ({"meterId": "m", "eventName": "e", "idempotency": "k"}, "events[0].meterId"),
    ],
)
def test_bad_cancel_requests_name_the_field(api, target, param):
    answer = api.post("/v1/billing/meter-events/cancel", json={"events": [target]})
    assert answer.status_code == 400
    assert error_of(answer)["param"] == param
