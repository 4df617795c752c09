"""Org-wide rollups and shards: summaries of all users cost days, not users, and stay exact.

Two read paths answer a summary of all users: the org-wide rollups (one series per
dimension combination, sharded) and the per-user rollups (what `filter[userId]` and
`groupBy=userId` read). They are written by the same commits and must agree exactly,
for every aggregation, window, zone, dimension group and filter, before and after
compaction, cancels and rebuilds; each test compares them, and a brute force over
the events sent where it is simple.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore
from google.cloud.datastore.query import PropertyFilter

from app.core.aggregation import AGGREGATION_TYPES
from app.services import compact, rebuild
from app.services.meters import get_meter
from app.storage import rollups

EVENTS = "/v1/billing/meter-events"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
DAYS = 4


def _at(hours: float) -> str:
    return (DAY + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _usage(answer) -> dict[str, int]:
    header = answer.headers["X-Datastore-Usage"]
    return {name: int(value) for name, value in (p.split("=") for p in header.split("; "))}


def _meter(api, aggregation: str) -> dict:
    fields = {"aggregationType": aggregation, "dimensions": ["region", "model"]}
    if aggregation == "unique_count":
        fields["uniqueBy"] = "model"
    return api.create_meter(eventName=f"m_{aggregation}", **fields)


def _events(meter: dict, users: int, rng: random.Random, count: int) -> list[dict]:
    return [
        {
            "meterId": meter["id"],
            "userId": f"user-{rng.randrange(users)}",
            "value": rng.randrange(-50, 1000),
            # distinct microseconds: `last` has one answer a brute force can name
            "timestamp": _at(rng.randrange(DAYS * 24 * 3600 * 1000) / 3600_000 + index * 1e-9),
            "dimensions": {"region": rng.choice(["eu", "us"]), "model": rng.choice("abc")},
        }
        for index in range(count)
    ]


def _queries(meter: dict) -> list[list[tuple[str, str]]]:
    base = [("meterId", meter["id"]), ("periodStart", _at(0)), ("periodEnd", _at(DAYS * 24))]
    return [
        base,
        [("meterId", meter["id"])],
        [*base, ("windowSize", "day"), ("timeZone", "Asia/Kolkata")],
        [*base, ("windowSize", "hour"), ("groupBy", "region")],
        [*base, ("groupBy", "region"), ("groupBy", "model"), ("filter[region]", "eu")],
        [*base, ("windowSize", "day"), ("timeZone", "America/New_York"), ("groupBy", "model")],
        # an unaligned period: raw events at both edges
        [("meterId", meter["id"]), ("periodStart", _at(1.01)), ("periodEnd", _at(50.37))],
    ]


def _summary(api, params) -> dict:
    answer = api.get(f"{EVENTS}/summary", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _per_user(api, params, users: int) -> dict:
    """The same summary read through the per-user rollups: every user named in a filter."""
    answer = _summary(api, [*params, *(("filter[userId]", f"user-{u}") for u in range(users))])
    return answer


def _assert_paths_agree(api, meter: dict, users: int) -> None:
    for params in _queries(meter):
        org_wide, per_user = _summary(api, params), _per_user(api, params, users)
        assert org_wide == per_user, params


def _brute_total(aggregation: str, events: list[dict]):
    values = [e["value"] for e in events]
    if not events:
        return None if aggregation in ("min", "max", "last", "avg") else 0
    return {
        "sum": sum(values),
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "avg": sum(values) / len(values),
        "last": max(events, key=lambda e: e["timestamp"])["value"],
        "unique_count": len({e["dimensions"]["model"] for e in events}),
    }[aggregation]


@pytest.mark.parametrize("aggregation", AGGREGATION_TYPES)
def test_org_wide_answers_equal_the_per_user_ones_and_a_brute_force(api, aggregation):
    rng = random.Random(aggregation)
    meter = _meter(api, aggregation)
    sent = _events(meter, 30, rng, 400)
    for first in range(0, len(sent), 100):
        api.record(*sent[first : first + 100])
    total = _summary(api, _queries(meter)[0])
    assert total["eventCount"] == len(sent)
    expected = _brute_total(aggregation, sent)
    assert total["value"] == (pytest.approx(expected) if aggregation == "avg" else expected)
    _assert_paths_agree(api, meter, 30)


def _org_rollups(config, org, meter_id: str) -> int:
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    query = raw.query(kind="meter-org-rollup")
    query.add_filter(filter=PropertyFilter("MeterId", "=", meter_id))
    return sum(1 for _ in query.fetch())


def test_an_org_wide_summary_reads_days_times_shards_whatever_the_users(
    api, config, org, emulator_kind
):
    reads = {}
    for users in (5, 500):
        meter = api.create_meter(eventName=f"m_{users}", aggregationType="sum")
        batch = [
            {
                "meterId": meter["id"],
                "userId": f"user-{u}",
                "value": u,
                "timestamp": _at((u % DAYS) * 24 + 12),
            }
            for u in range(users)
        ]
        for first in range(0, len(batch), 100):
            api.record(*batch[first : first + 100])
        params = {"meterId": meter["id"], "periodStart": _at(0), "periodEnd": _at(DAYS * 24)}
        answer = api.get(f"{EVENTS}/summary", params=params)
        assert answer.json()["value"] == sum(range(users))
        reads[users] = _usage(answer)["read"]
        shards = config.rollup_shards if emulator_kind == "firestore" else 1
        # the API key, org and meter, then the org-wide rollups: at most days x shards
        assert reads[users] == 3 + _org_rollups(config, org, meter["id"])
        assert reads[users] <= 3 + (DAYS + 2) * shards
    # with 100 times the users the summary reads no more than the shards written allow
    assert reads[500] <= 3 + DAYS * config.rollup_shards


def test_concurrent_batches_spread_over_shards_stay_exact_and_compaction_merges_them(
    api, config, org, ndb_client, emulator_kind
):
    meter = _meter(api, "max")
    rng = random.Random(7)
    batches = [_events(meter, 3, rng, 50) for _ in range(24)]
    failures = []

    def send(mine):
        for batch in mine:
            answer = api.post(EVENTS, json={"events": batch})
            if answer.status_code != 201:
                failures.append(answer.text)

    threads = [threading.Thread(target=send, args=(batches[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    sent = [event for batch in batches for event in batch]
    assert _summary(api, _queries(meter)[0])["value"] == max(e["value"] for e in sent)
    before = [_summary(api, params) for params in _queries(meter)]
    _assert_paths_agree(api, meter, 3)
    if emulator_kind == "firestore":
        assert _org_rollups(config, org, meter["id"]) > DAYS  # some day took several shards
    with ndb_client.context(namespace=org["namespace"]):
        compact.compact_org()
    # one entity per (dimension combination, day) is left of the org-wide shards
    combinations_days = {
        (e["dimensions"]["region"], e["dimensions"]["model"], e["timestamp"][:10]) for e in sent
    }
    assert _org_rollups(config, org, meter["id"]) == len(combinations_days)
    assert [_summary(api, params) for params in _queries(meter)] == before


@pytest.mark.parametrize("aggregation", ["last", "min", "max", "sum", "unique_count"])
def test_cancels_and_rebuilds_keep_both_paths_equal(api, org, ndb_client, aggregation):
    """Cancelling takes events out of org-wide slots by subtraction where that is exact,
    and from the raw events where a cancelled event may be the minimum, maximum or latest."""
    meter = _meter(api, aggregation)
    rng = random.Random(11)
    sent = _events(meter, 10, rng, 200)
    for index, event in enumerate(sent):
        event["idempotency"] = f"k{index}"
    api.record(*sent[:100])
    api.record(*sent[100:])
    extremes = [max(sent, key=lambda e: e[field]) for field in ("timestamp", "value")]
    extremes.append(min(sent, key=lambda e: e["value"]))
    cancelled = [*extremes, *(e for e in rng.sample(sent, 20) if e not in extremes)]
    answer = api.post(
        f"{EVENTS}/cancel",
        json={
            "events": [{"meterId": meter["id"], "idempotency": e["idempotency"]} for e in cancelled]
        },
    )
    assert answer.status_code == 200, answer.text
    live = [e for e in sent if e not in cancelled]
    assert _summary(api, _queries(meter)[0])["value"] == _brute_total(aggregation, live)
    _assert_paths_agree(api, meter, 10)
    before = [_summary(api, params) for params in _queries(meter)]
    with ndb_client.context(namespace=org["namespace"]):
        assert rebuild.rebuild_meter(get_meter(meter["id"])) > 0
    assert [_summary(api, params) for params in _queries(meter)] == before


def test_a_meter_without_complete_org_wide_rollups_reads_user_rollups_until_rebuilt(
    api, config, org, ndb_client
):
    """A meter older than org-wide rollups: its events have user rollups only. Summaries
    of all users read those (exact, slower) until a rebuild writes the org-wide ones."""
    meter = api.create_meter(aggregationType="sum", dimensions=["region"])
    api.record(
        *(
            {
                "meterId": meter["id"],
                "userId": f"user-{u}",
                "value": u,
                "timestamp": _at(u % 40),
                "dimensions": {"region": "eu" if u % 3 else "us"},
            }
            for u in range(60)
        )
    )
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    with ndb_client.context(namespace=org["namespace"]):
        meter_key_id = get_meter(meter["id"]).key.id()
    # as before this release: no marker, no org-wide rollups
    raw.delete(raw.key("synckey", 1, rollups.ORG_WIDE_KIND, str(meter_key_id)))
    query = raw.query(kind="meter-org-rollup")
    raw.delete_multi([entity.key for entity in query.fetch()])
    rollups._org_wide_known.clear()  # the service runs in this process: forget the marker

    params = [("meterId", meter["id"]), ("periodStart", _at(0)), ("periodEnd", _at(48))]
    answer = api.get(f"{EVENTS}/summary", params=[*params, ("groupBy", "region")])
    before = answer.json()
    assert sum(w["value"] for w in before["windows"]) == sum(range(60))
    assert _usage(answer)["read"] >= 60  # every user's rollup
    with ndb_client.context(namespace=org["namespace"]):
        rebuild.rebuild_meter(get_meter(meter["id"]))
    answer = api.get(f"{EVENTS}/summary", params=[*params, ("groupBy", "region")])
    assert answer.json() == before
    assert _usage(answer)["read"] <= 3 + 1 + 2 * 2  # marker, org-wide rollups of 2 days x 2 regions


def test_unique_count_of_users_reads_the_user_rollups(api):
    meter = api.create_meter(aggregationType="unique_count", uniqueBy="userId")
    api.record(
        *(
            {"meterId": meter["id"], "userId": f"user-{u % 7}", "value": 1, "timestamp": _at(u)}
            for u in range(30)
        )
    )
    answer = _summary(
        api,
        [
            ("meterId", meter["id"]),
            ("windowSize", "day"),
            ("periodStart", _at(0)),
            ("periodEnd", _at(48)),
        ],
    )
    assert answer["value"] == 7
