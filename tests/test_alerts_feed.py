"""The usage feed: written in the batch's commit only for meters with alert rules."""

from __future__ import annotations

import json

from app.models import AlertFeed, root_key
from tests.support.alerts import create_rule, minutes_ago
from tests.support.http import Api


def _usage(answer) -> dict[str, int]:
    header = answer.headers["X-Datastore-Usage"]
    return {name: int(value) for name, value in (p.strip().split("=") for p in header.split(";"))}


def _batch(meter: dict) -> list[dict]:
    at = minutes_ago(30)
    return [
        {"meterId": meter["id"], "userId": f"user-{i % 3}", "value": i, "timestamp": at}
        for i in range(1, 7)
    ]


def _record(api: Api, meter: dict) -> dict[str, int]:
    answer = api.post("/v1/billing/meter-events", json={"events": _batch(meter)})
    assert answer.status_code == 201, answer.text
    return _usage(answer)


def _feeds(ndb_client, org) -> list[AlertFeed]:
    with ndb_client.context(namespace=org["namespace"]):
        return list(AlertFeed.query(ancestor=root_key()).fetch())


def test_a_batch_writes_a_feed_only_for_a_meter_with_rules(serve, org, ndb_client):
    # A long cache: the one read that refreshes it must not fall between the batches compared.
    # (issue 16: the cache of meters with usage limits too)
    api = Api(serve(alert_rule_cache_seconds=600, limit_cache_seconds=600), org["apiKey"])
    quiet = api.create_meter(eventName="quiet")
    watched = api.create_meter(eventName="watched")
    _record(api, quiet)  # the rule cache is filled here (no rules)
    before = _record(api, quiet)
    _record(api, watched)
    assert _record(api, watched) == before  # no rule anywhere: nothing read or written more
    assert _feeds(ndb_client, org) == []

    create_rule(api, watched, scope="org")
    _record(api, quiet)  # the cache, cleared by the rule's creation, is filled again here
    assert _record(api, quiet) == before  # a meter without rules: exactly as before
    assert _feeds(ndb_client, org) == []

    with_rule = _record(api, watched)
    assert with_rule == {**before, "written": before["written"] + 1}  # one feed, nothing read
    [feed] = _feeds(ndb_client, org)
    assert feed.meter_id == watched["id"]
    contributions = sorted(
        (user, total, count, high)
        for user, _dims, _day, _slot, total, count, high in json.loads(feed.contributions)
    )
    assert contributions == [
        ("user-0", 3 + 6, 2, 6),
        ("user-1", 1 + 4, 2, 4),
        ("user-2", 2 + 5, 2, 5),
    ]


def test_a_cancel_writes_a_negative_feed_in_its_transaction(api, org, ndb_client):
    meter = api.create_meter()
    create_rule(api, meter)
    [event] = api.record(
        {"meterId": meter["id"], "userId": "u", "value": 7, "timestamp": minutes_ago(5)}
    )["events"]
    assert len(_feeds(ndb_client, org)) == 1
    answer = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": event["id"]}]})
    assert answer.status_code == 200
    feeds = _feeds(ndb_client, org)
    [cancel] = [f for f in feeds if f.recompute]
    [[user, _dims, _day, _slot, total, count, _high]] = json.loads(cancel.contributions)
    assert (user, total, count) == ("u", -7, -1)
    again = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": event["id"]}]})
    assert again.json()["events"][0]["status"] == "already_cancelled"
    assert len(_feeds(ndb_client, org)) == 2  # cancelling again writes nothing


def test_no_feed_is_left_when_a_batch_is_refused(api, org, ndb_client):
    meter = api.create_meter()
    create_rule(api, meter)
    bad = _batch(meter) + [{"meterId": meter["id"], "userId": "u", "value": "x"}]
    assert api.post("/v1/billing/meter-events", json={"events": bad}).status_code == 400
    assert _feeds(ndb_client, org) == []
