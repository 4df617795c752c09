"""Recording events: validation of whole batches, and exactly-once by idempotency key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.http import error_of


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def meter(api):
    return api.create_meter(dimensions=["model", "region"])


def test_a_batch_answers_one_outcome_per_event(api, meter):
    answer = api.record(
        *[{"meterId": meter["id"], "userId": f"u{i}", "value": i} for i in range(3)]
    )
    assert answer["count"] == 3
    assert [e["status"] for e in answer["events"]] == ["created"] * 3
    assert len({e["id"] for e in answer["events"]}) == 3


def test_events_may_name_their_meter_by_event_name(api, meter):
    api.record({"eventName": meter["eventName"], "userId": "u", "value": 2})
    assert api.summary(meterId=meter["id"])["value"] == 2


def test_count_meters_need_no_value(api):
    counter = api.create_meter(eventName="calls", aggregationType="count")
    api.record({"meterId": counter["id"], "userId": "u"}, {"meterId": counter["id"], "userId": "u"})
    assert api.summary(meterId=counter["id"])["value"] == 2


def _bad(meter_id, **changes):
    event = {"meterId": meter_id, "userId": "u", "value": 1, **changes}
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"userId": None}, "events[1].userId"),
        ({"userId": ""}, "events[1].userId"),
        ({"meterId": None}, "events[1].meterId"),
        ({"meterId": "unknown-meter"}, "events[1].meterId"),
        ({"value": None}, "events[1].value"),
        ({"value": "5"}, "events[1].value"),
        ({"value": 1.5}, "events[1].value"),
        ({"value": True}, "events[1].value"),
        ({"value": 1 << 63}, "events[1].value"),
        ({"value": -(1 << 63) - 1}, "events[1].value"),
        ({"timestamp": "yesterday"}, "events[1].timestamp"),
        ({"timestamp": "2026-11-20T10:00:00"}, "events[1].timestamp"),
        ({"timestamp": "2026-13-20T10:00:00Z"}, "events[1].timestamp"),
        ({"timestamp": 1700000000}, "events[1].timestamp"),
        ({"dimensions": {"colour": "red"}}, "events[1].dimensions.colour"),
        ({"dimensions": {"model": 4}}, "events[1].dimensions.model"),
        ({"dimensions": ["model"]}, "events[1].dimensions"),
        ({"idempotency": 12}, "events[1].idempotency"),
        ({"extra": 1}, "events[1].extra"),
    ],
)
def test_one_bad_event_rejects_the_whole_batch_and_writes_nothing(api, meter, changes, param):
    good = _bad(meter["id"])
    answer = api.post(
        "/v1/billing/meter-events", json={"events": [good, _bad(meter["id"], **changes), good]}
    )
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param
    assert api.summary(meterId=meter["id"])["eventCount"] == 0


def test_timestamps_must_lie_in_the_allowed_window(api, meter):
    now = _now()
    for moment, message in [
        (now + timedelta(minutes=6), "future"),
        (now - timedelta(days=35, minutes=1), "past"),
    ]:
        answer = api.post(
            "/v1/billing/meter-events", json={"events": [_bad(meter["id"], timestamp=_iso(moment))]}
        )
        assert answer.status_code == 400
        error = error_of(answer)
        assert error["param"] == "events[0].timestamp" and message in error["message"]
    ok = [
        _bad(meter["id"], timestamp=_iso(now + timedelta(minutes=4))),
        _bad(meter["id"], timestamp=_iso(now - timedelta(days=34, hours=23))),
    ]
    assert [e["status"] for e in api.record(*ok)["events"]] == ["created", "created"]


def test_every_problem_of_a_batch_is_listed(api, meter):
    answer = api.post(
        "/v1/billing/meter-events",
        json={
            "events": [
                _bad(meter["id"], value="x"),
                _bad(meter["id"]),
                _bad(meter["id"], userId=None),
            ]
        },
    )
    error = error_of(answer)
    assert [e["param"] for e in error["errors"]] == ["events[0].value", "events[2].userId"]


@pytest.mark.parametrize(
    "body", [{}, {"events": []}, {"events": None}, {"events": {}}, {"events": [1]}, {"events": "x"}]
)
def test_a_batch_needs_one_to_a_hundred_events(api, body):
    answer = api.post("/v1/billing/meter-events", json=body)
    assert answer.status_code == 400
    assert error_of(answer)["param"].startswith("events")


def test_a_batch_over_the_limit_is_refused(api, meter):
    events = [_bad(meter["id"]) for _ in range(101)]
    answer = api.post("/v1/billing/meter-events", json={"events": events})
    assert answer.status_code == 400 and error_of(answer)["param"] == "events"
    assert len(api.record(*events[:100])["events"]) == 100


def test_a_repeated_idempotency_key_is_stored_once(api, meter):
    event = _bad(meter["id"], idempotency="req-1", value=5)
    first = api.record(event)["events"][0]
    again = api.record(event, _bad(meter["id"], idempotency="req-2", value=1))["events"]
    assert again[0] == {"id": first["id"], "status": "duplicate"}
    assert again[1]["status"] == "created"
    assert api.summary(meterId=meter["id"])["value"] == 6


def test_a_key_repeated_inside_one_batch_is_stored_once(api, meter):
    event = _bad(meter["id"], idempotency="same", value=5)
    outcomes = api.record(event, event)["events"]
    assert [o["status"] for o in outcomes] == ["created", "duplicate"]
    assert outcomes[0]["id"] == outcomes[1]["id"]
    assert api.summary(meterId=meter["id"])["value"] == 5


def test_a_key_reused_with_another_payload_is_a_conflict_not_a_merge(api, meter):
    api.record(_bad(meter["id"], idempotency="k", value=5))
    outcome = api.record(_bad(meter["id"], idempotency="k", value=6))["events"][0]
    assert outcome["status"] == "conflict"
    assert api.summary(meterId=meter["id"])["value"] == 5


def test_idempotency_keys_are_scoped_per_meter(api, meter):
    other = api.create_meter(eventName="output_tokens")
    outcomes = api.record(
        _bad(meter["id"], idempotency="request-7", value=3),
        _bad(other["id"], idempotency="request-7", value=4),
    )["events"]
    assert [o["status"] for o in outcomes] == ["created", "created"]


def test_racing_requests_with_one_key_store_one_event(api, meter):
    event = _bad(meter["id"], idempotency="racy", value=10)

    def send(_):
        return api.post("/v1/billing/meter-events", json={"events": [event]})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    outcomes = [a.json()["events"][0] for a in answers]
    assert sorted(o["status"] for o in outcomes) == ["created"] + ["duplicate"] * 7
    assert len({o["id"] for o in outcomes}) == 1
    summary = api.summary(meterId=meter["id"])
    assert (summary["value"], summary["eventCount"]) == (10, 1)


def test_racing_overlapping_batches_store_each_event_once(api, meter):
    batches = [
        [_bad(meter["id"], idempotency=f"k{(start + i) % 30}", value=1) for i in range(20)]
        for start in range(0, 30, 5)
    ]

    def send(batch):
        return api.post("/v1/billing/meter-events", json={"events": batch})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, batches))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    created = sum(o["status"] == "created" for a in answers for o in a.json()["events"])
    assert created == 30
    assert api.summary(meterId=meter["id"])["eventCount"] == 30


def test_each_answer_reports_its_datastore_work(api, meter, emulator_kind):
    api.record(_bad(meter["id"]))  # the process's first batch also probes the Datastore once
    events = [_bad(meter["id"], userId="u1", idempotency=f"w{i}") for i in range(100)]
    answer = api.post("/v1/billing/meter-events", json={"events": events})
    usage = dict(part.split("=") for part in answer.headers["X-Datastore-Usage"].split("; "))
    # 100 events of one user in one slot: 100 event inserts, one update of the user's
    # rollup and one of the org-wide rollup.
    assert int(usage["written"]) == 102
    if emulator_kind == "firestore":
        assert int(usage["read"]) <= 3  # the key, the org and the meter; no event is read
    else:  # no server-side increments: the transaction reads events and rollups first
        assert int(usage["read"]) <= 3 + 102
