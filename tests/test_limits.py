"""Usage limits over HTTP (issue 16): definitions, every refusal, and the limit check.

The check's answers are compared with totals the test keeps itself (a brute force over
what it recorded), on a server whose counters are trusted at once (`counting`, one
process: `limit_counting_delay=0`) and on the default one (summary engine first).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.alerts import crossings, minutes_ago, run_evaluator
from tests.support.http import Api, error_of

LIMITS = "/v1/billing/limits"
CHECK = "/v1/billing/limits/check"


@pytest.fixture
def counting(serve, org) -> Api:
    """The org's caller on a server of its own that trusts counters from the start."""
    return Api(serve(limit_counting_delay=0.0), org["apiKey"])


def create_limit(api, meter: dict, **fields) -> dict:
    answer = api.post(
        LIMITS, json={"meterId": meter["id"], "limit": 100, "period": "month", **fields}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def check(api, user: str, **params) -> dict:
    answer = api.get(CHECK, params={"userId": user, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()


def usage_of(answer) -> dict[str, int]:
    header = answer.headers["X-Datastore-Usage"]
    return {name: int(value) for name, value in (p.strip().split("=") for p in header.split(";"))}


def reads_of(answer) -> int:
    return usage_of(answer)["read"]


def event(user: str, value: int, key: str, **fields) -> dict:
    return {
        "eventName": "input_tokens",
        "userId": user,
        "value": value,
        "idempotency": key,
        **fields,
    }


# -- definitions ---------------------------------------------------------------------


def test_limits_are_created_read_listed_changed_and_deleted(api):
    meter = api.create_meter()
    default = create_limit(api, meter, limit=1000, timeZone="Europe/Paris")
    override = create_limit(api, meter, limit=5000, userId="big-customer", timeZone="Europe/Paris")
    assert default["userId"] is None and default["limit"] == 1000
    assert default["period"] == "month" and default["timeZone"] == "Europe/Paris"
    assert set(default) == {
        "id",
        "meterId",
        "userId",
        "limit",
        "period",
        "timeZone",
        "createdAt",
        "updatedAt",
    }
    assert api.get(f"{LIMITS}/{override['id']}").json() == override

    listed = api.get(LIMITS, params={"meterId": meter["id"]}).json()
    assert {x["id"] for x in listed["limits"]} == {default["id"], override["id"]}
    assert listed["count"] == 2 and listed["nextCursor"] is None
    page = api.get(LIMITS, params={"limit": 1}).json()
    assert page["count"] == 1 and page["nextCursor"]

    changed = api.patch(f"{LIMITS}/{default['id']}", json={"limit": 2000})
    assert changed.status_code == 200 and changed.json()["limit"] == 2000

    deleted = api.delete(f"{LIMITS}/{override['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == override["id"]
    assert api.get(f"{LIMITS}/{override['id']}").status_code == 404
    assert [x["id"] for x in api.get(LIMITS).json()["limits"]] == [default["id"]]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 1 << 63}, "limit"),
        ({"period": "week"}, "period"),
        ({"timeZone": "localtime"}, "timeZone"),
        ({"userId": ""}, "userId"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(api, fields, param):
    meter = api.create_meter()
    body = {"meterId": meter["id"], "limit": 10, "period": "day", **fields}
    answer = api.post(LIMITS, json=body)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param
    assert api.get(LIMITS).json()["count"] == 0


def test_a_meter_whose_value_may_fall_cannot_have_a_limit(api):
    meter = api.create_meter(aggregationType="last")
    answer = api.post(LIMITS, json={"meterId": meter["id"], "limit": 10, "period": "day"})
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "meter_not_limitable"
    missing = api.post(LIMITS, json={"meterId": "nope", "limit": 10, "period": "day"})
    assert missing.status_code == 400 and error_of(missing)["code"] == "meter_not_found"


def test_one_limit_per_meter_and_user_and_one_period_per_meter(api):
    meter = api.create_meter()
    create_limit(api, meter, userId="u-1")
    again = api.post(
        LIMITS, json={"meterId": meter["id"], "limit": 5, "period": "month", "userId": "u-1"}
    )
    assert again.status_code == 409 and error_of(again)["code"] == "limit_exists"
    other = api.post(LIMITS, json={"meterId": meter["id"], "limit": 5, "period": "day"})
    assert other.status_code == 400 and error_of(other)["code"] == "limit_period_mismatch"
    assert api.get(LIMITS).json()["count"] == 1


def test_another_orgs_limits_are_not_found(api, other_api):
    meter = api.create_meter()
    limit = create_limit(api, meter)
    for method in ("GET", "DELETE"):
        answer = other_api.request(method, f"{LIMITS}/{limit['id']}")
        assert answer.status_code == 404 and error_of(answer)["code"] == "limit_not_found"
    patched = other_api.patch(f"{LIMITS}/{limit['id']}", json={"limit": 1})
    assert patched.status_code == 404
    foreign = other_api.get(CHECK, params={"meterId": meter["id"], "userId": "u"})
    assert foreign.status_code == 404
    assert api.get(f"{LIMITS}/{limit['id']}").json()["limit"] == 100


# -- the check -----------------------------------------------------------------------


def test_the_check_counts_the_users_period_and_the_override_wins(counting):
    meter = counting.create_meter()
    create_limit(counting, meter, limit=100)
    create_limit(counting, meter, limit=1000, userId="vip")
    counting.record(event("alice", 60, "a1"), event("alice", 30, "a2"), event("vip", 500, "v1"))
    counting.record(event("bob", 7, "b1"), event("alice", 30, "a1"))  # a1: a duplicate

    alice = check(counting, "alice", meterId=meter["id"])
    assert (alice["used"], alice["limit"], alice["remaining"], alice["allowed"]) == (
        90,
        100,
        10,
        True,
    )
    counting.record(event("alice", 10, "a3"))
    alice = check(counting, "alice", eventName="input_tokens")
    assert (alice["used"], alice["remaining"], alice["allowed"]) == (100, 0, False)
    vip = check(counting, "vip", meterId=meter["id"])
    assert (vip["used"], vip["limit"], vip["allowed"]) == (500, 1000, True)
    nobody = check(counting, "carol", meterId=meter["id"])
    assert nobody["used"] == 0 and nobody["allowed"] is True

    now = datetime.now(UTC)
    start = datetime.fromisoformat(alice["periodStart"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(alice["resetsAt"].replace("Z", "+00:00"))
    assert start <= now < end and start.day == 1 and alice["periodEnd"] == alice["resetsAt"]
    assert alice["asOf"] and alice["userId"] == "alice"


def test_a_check_reads_a_constant_number_of_entities(counting):
    meter = counting.create_meter(dimensions=["model"])
    create_limit(counting, meter, limit=10**9)
    for batch in range(5):
        counting.record(
            *[
                event(
                    "alice",
                    1,
                    f"{batch}-{n}",
                    dimensions={"model": f"m{n % 7}"},
                    timestamp=minutes_ago(20 * n),
                )
                for n in range(50)
            ]
        )
    answers = [
        counting.get(CHECK, params={"meterId": meter["id"], "userId": "alice"}) for _ in range(3)
    ]
    assert [a.json()["used"] for a in answers] == [250] * 3
    # The first check of (user, period) reads its seed from the summary engine (the
    # limit came before these events, so the period's start may predate its counters);
    # every later one, of a key this process knows: ONE lookup of the key, the two
    # limits, the counters' 8 shards and the seed, never a rollup, whatever the usage
    # (the org comes from what the process remembers of the key, the meter's limit spec
    # from its copy of `limits.index`, however old: the limit read says if it was right).
    steady = [usage_of(a) for a in answers[1:]]
    assert [(u["rpcs"], u["read"]) for u in steady] == [(1, 12)] * 2, steady


def test_the_check_starts_from_events_recorded_before_the_limit(counting):
    meter = counting.create_meter()
    counting.record(
        event("alice", 40, "early-1"), event("alice", 2, "early-2", timestamp=minutes_ago(90))
    )
    create_limit(counting, meter, limit=50)
    assert check(counting, "alice", meterId=meter["id"])["used"] == 42  # seeded
    counting.record(event("alice", 9, "late"))
    assert check(counting, "alice", meterId=meter["id"])["used"] == 51
    assert check(counting, "alice", meterId=meter["id"])["allowed"] is False


def test_until_every_process_counts_the_check_asks_the_summary(api):
    meter = api.create_meter()
    create_limit(api, meter, limit=50)  # the default server: counters trusted ~30 s later
    api.record(event("alice", 20, "x1"), event("alice", 5, "x2"))
    assert check(api, "alice", meterId=meter["id"])["used"] == 25


@pytest.mark.parametrize(
    ("aggregation", "expected"), [("count", 3), ("max", 70), ("unique_count", 2)]
)
def test_count_max_and_unique_count_meters(counting, aggregation, expected):
    extra = {"uniqueBy": "model", "dimensions": ["model"]} if aggregation == "unique_count" else {}
    meter = counting.create_meter(aggregationType=aggregation, **extra)
    create_limit(counting, meter, limit=5)
    dims = (lambda n: {"dimensions": {"model": f"m{n % 2}"}}) if extra else (lambda n: {})
    counting.record(
        *[event("alice", value, f"k{n}", **dims(n)) for n, value in enumerate((5, 70, 3))]
    )
    assert check(counting, "alice", meterId=meter["id"])["used"] == expected


def test_bad_checks_are_refused(counting):
    meter = counting.create_meter()
    for params, status, param in [
        ({"userId": "u"}, 400, "meterId"),
        ({"userId": "u", "meterId": meter["id"], "eventName": "input_tokens"}, 400, "meterId"),
        ({"meterId": meter["id"]}, 400, "userId"),
        ({"userId": "u", "meterId": meter["id"]}, 404, "meterId"),  # no limit yet
        ({"userId": "u", "eventName": "nothing_here"}, 404, "eventName"),
        ({"userId": "u", "meterId": "garbage"}, 404, "meterId"),
    ]:
        answer = counting.get(CHECK, params=params)
        assert answer.status_code == status, (params, answer.text)
        assert error_of(answer)["param"] == param


def _record_retrying(api, events: list[dict]) -> None:
    """Record a batch the way a client does: a 503 (the legacy emulator aborts contended
    commits) is sent again, unchanged; the idempotency keys make it count once."""
    for _ in range(10):
        answer = api.post("/v1/billing/meter-events", json={"events": events})
        if answer.status_code != 503:
            break
    assert answer.status_code == 201, answer.text


def test_checks_are_exact_under_eight_concurrent_recording_clients(counting):
    """Every check counts at least every batch answered 201 before it began and at most
    what was sent before it ended; at the end it equals the brute-force total."""
    meter = counting.create_meter()
    create_limit(counting, meter, limit=10**12)
    acknowledged = [0] * 8  # per client: the total of its batches answered 201
    sent = [0] * 8  # per client: the total of its batches sent (answered or not)
    lock = threading.Lock()
    done = threading.Event()

    def record(client: int) -> None:
        for batch in range(12):
            events = [
                event("hot", client * 100 + batch + n, f"{client}-{batch}-{n}") for n in range(5)
            ]
            total = sum(e["value"] for e in events)
            with lock:
                sent[client] += total
            _record_retrying(counting, events)
            if batch % 3 == 0:  # a retry: all duplicates, counted nowhere
                _record_retrying(counting, events)
            with lock:
                acknowledged[client] += total

    def watch() -> list[tuple[int, int, int]]:
        seen = []
        while not done.is_set():
            with lock:
                floor = sum(acknowledged)
            used = check(counting, "hot", meterId=meter["id"])["used"]
            with lock:
                ceiling = sum(sent)
            seen.append((floor, used, ceiling))
        return seen

    with ThreadPoolExecutor(9) as pool:
        watcher = pool.submit(watch)
        for future in [pool.submit(record, client) for client in range(8)]:
            future.result()
        done.set()
        seen = watcher.result()
    assert seen and all(floor <= used <= ceiling for floor, used, ceiling in seen), seen
    assert check(counting, "hot", meterId=meter["id"])["used"] == sum(acknowledged)
    period_start = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    summary = counting.summary(meterId=meter["id"], userId="hot", periodStart=period_start)
    assert summary["value"] == sum(acknowledged)


@pytest.mark.parametrize(("aggregation", "before", "after"), [("sum", 75, 5), ("max", 70, 5)])
def test_a_cancelled_event_leaves_the_check(counting, aggregation, before, after):
    meter = counting.create_meter(aggregationType=aggregation)
    create_limit(counting, meter, limit=100)
    counting.record(event("alice", 5, "keep"), event("alice", 70, "wrong"))
    assert check(counting, "alice", meterId=meter["id"])["used"] == before
    counting.record(event("alice", 0, "more"))  # counted after the seed
    answer = counting.post(
        "/v1/billing/meter-events/cancel",
        json={"events": [{"meterId": meter["id"], "idempotency": "wrong"}]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"][0]["status"] == "cancelled"
    assert check(counting, "alice", meterId=meter["id"])["used"] == after


# -- alerts at a limit's percentages -------------------------------------------------


def test_an_alert_rule_at_percentages_of_a_limit(api, app, ndb_client, org):
    meter = api.create_meter()
    default = create_limit(api, meter, limit=1000, period="day", timeZone="Asia/Kolkata")
    override = create_limit(
        api, meter, limit=33, period="day", timeZone="Asia/Kolkata", userId="vip"
    )

    answer = api.post(f"{LIMITS}/{default['id']}/alerts", json={"percentages": [100, 80, 80]})
    assert answer.status_code == 201, answer.text
    rule = answer.json()
    assert (rule["meterId"], rule["thresholds"], rule["scope"]) == (
        meter["id"],
        [800, 1000],
        "user",
    )
    assert (rule["period"], rule["timeZone"]) == ("day", "Asia/Kolkata")
    one = api.post(f"{LIMITS}/{override['id']}/alerts", json={"percentages": [50, 100]}).json()
    assert one["thresholds"] == [17, 33] and one["scope"] == {"userId": "vip"}  # rounded up

    api.record(event("alice", 850, "p1"), event("bob", 700, "p2"), event("vip", 20, "p3"))
    run_evaluator(app, ndb_client, org)
    assert sorted(crossings(api, rule)) == [("alert.triggered", "alice", 800)]
    assert sorted(crossings(api, one)) == [("alert.triggered", "vip", 17)]

    for body, status in [
        ({"percentages": []}, 400),
        ({"percentages": [0]}, 400),
        ({"percentages": [True]}, 400),
        ({"percentages": [80], "extra": 1}, 400),
    ]:
        assert api.post(f"{LIMITS}/{default['id']}/alerts", json=body).status_code == status
    assert api.post(f"{LIMITS}/nope/alerts", json={"percentages": [80]}).status_code == 404


# -- corrections (issue 17) keep the check exact -------------------------------------


@pytest.mark.parametrize("aggregation", ["sum", "max"])
def test_range_cancels_and_amendments_move_the_check(counting, aggregation):
    meter = counting.create_meter(aggregationType=aggregation)
    create_limit(counting, meter, limit=1000)
    now = datetime.now(UTC)
    early, late = (now - timedelta(minutes=m) for m in (50, 10))
    counting.record(
        event("alice", 7, "early", timestamp=early.isoformat()),
        event("alice", 30, "late", timestamp=late.isoformat()),
    )
    assert check(counting, "alice", meterId=meter["id"])["used"] == (
        37 if aggregation == "sum" else 30
    )
    late_id = counting.get(
        "/v1/billing/meter-events", params={"meterId": meter["id"], "idempotency": "late"}
    ).json()["events"][0]["id"]
    answer = counting.post(f"/v1/billing/meter-events/{late_id}/amend", json={"value": 12})
    assert answer.status_code == 200, answer.text
    assert check(counting, "alice", meterId=meter["id"])["used"] == (
        19 if aggregation == "sum" else 12
    )
    body = {
        "meterId": meter["id"],
        "periodStart": (early - timedelta(minutes=1)).isoformat(),
        "periodEnd": (early + timedelta(minutes=1)).isoformat(),
    }
    answer = counting.post("/v1/billing/meter-events/cancel", json=body)
    assert answer.status_code == 200, answer.text
    assert check(counting, "alice", meterId=meter["id"])["used"] == 12
