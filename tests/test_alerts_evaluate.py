"""Alert evaluation: crossings for each scope and period, exactly once, resolutions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.models import AlertFeed, root_key
from app.services.alerts import evaluate as evaluate_module
from app.services.alerts import seed as seed_module
from tests.support.alerts import (
    create_rule,
    crossings,
    minutes_ago,
    rfc3339,
    run_evaluator,
    triggers,
)


@pytest.fixture
def evaluate(app, ndb_client, org):
    return lambda: run_evaluator(app, ndb_client, org)


def _event(meter, user, value, minutes=5, **extra):
    return {
        "meterId": meter["id"],
        "userId": user,
        "value": value,
        "timestamp": minutes_ago(minutes),
        **extra,
    }


def test_a_user_crossing_a_threshold_triggers_once(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10, 20])
    api.record(_event(meter, "alice", 4), _event(meter, "bob", 12))
    evaluate()
    assert sorted(crossings(api, rule)) == [("alert.triggered", "bob", 10)]
    api.record(_event(meter, "alice", 7), _event(meter, "bob", 1))
    evaluate()
    evaluate()
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", "alice", 10),
        ("alert.triggered", "bob", 10),
    ]
    found = next(t for t in triggers(api, rule) if t["userId"] == "alice")
    assert found["value"] == 11 and found["alertId"] == rule["id"]
    assert found["messageId"].startswith("msg_") and len(found["messageId"]) == 30


def test_the_org_scope_counts_every_user_together(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, scope="org", thresholds=[10])
    api.record(_event(meter, "alice", 4), _event(meter, "bob", 5))
    evaluate()
    assert crossings(api, rule) == []
    api.record(_event(meter, "carol", 1))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", None, 10)]
    assert triggers(api, rule)[0]["value"] == 10


def test_a_one_user_scope_watches_that_user_only(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, scope={"userId": "bob"}, thresholds=[3])
    api.record(_event(meter, "alice", 50), _event(meter, "bob", 2))
    evaluate()
    assert crossings(api, rule) == []
    api.record(_event(meter, "bob", 1))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "bob", 3)]


def test_several_thresholds_crossed_by_one_batch_trigger_one_each(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[5, 10, 20, 1000])
    api.record(_event(meter, "alice", 15), _event(meter, "alice", 6))
    evaluate()
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", "alice", 5),
        ("alert.triggered", "alice", 10),
        ("alert.triggered", "alice", 20),
    ]
    assert {t["value"] for t in triggers(api, rule)} == {21}
    assert len({t["messageId"] for t in triggers(api, rule)}) == 3


def test_the_filter_counts_matching_events_only(api, evaluate):
    meter = api.create_meter(dimensions=["model"])
    rule = create_rule(api, meter, thresholds=[10], filter={"model": "gpt-4"})
    api.record(
        _event(meter, "alice", 9, dimensions={"model": "gpt-3"}),
        _event(meter, "alice", 9, dimensions={"model": "gpt-4"}),
        _event(meter, "alice", 9),
    )
    evaluate()
    assert crossings(api, rule) == []
    api.record(_event(meter, "alice", 1, dimensions={"model": "gpt-4"}))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "alice", 10)]


def _kolkata_day_edges():
    """(23:50 local the day before D, 00:10 local on D, 00:20 local on D, D's start in
    UTC) for the latest local day D whose 00:20 has passed."""
    zone = ZoneInfo("Asia/Kolkata")
    local_now = datetime.now(zone)
    day = (
        local_now.date()
        if local_now.hour or local_now.minute > 25
        else local_now.date() - timedelta(days=1)
    )
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return (
        midnight - timedelta(minutes=10),
        midnight + timedelta(minutes=10),
        midnight + timedelta(minutes=20),
        midnight.astimezone(UTC),
    )


def test_day_periods_follow_the_rules_time_zone(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10], period="day", timeZone="Asia/Kolkata")
    late, early, later, day_start = _kolkata_day_edges()
    events = [(late, 6), (early, 6)]
    api.record(
        *[
            {"meterId": meter["id"], "userId": "u", "value": value, "timestamp": rfc3339(at)}
            for at, value in events
        ]
    )
    evaluate()
    assert crossings(api, rule) == []  # 6 on each local day, though 12 within 20 minutes
    api.record({"meterId": meter["id"], "userId": "u", "value": 4, "timestamp": rfc3339(later)})
    evaluate()
    [trigger] = triggers(api, rule)
    assert trigger["value"] == 10
    assert trigger["periodStart"] == rfc3339(day_start)
    assert trigger["periodEnd"] == rfc3339(day_start + timedelta(days=1))


def test_month_periods_in_a_zone(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[2], period="month", timeZone="Asia/Kolkata")
    api.record(_event(meter, "u", 2))
    evaluate()
    [trigger] = triggers(api, rule)
    zone = ZoneInfo("Asia/Kolkata")
    now = datetime.now(zone) - timedelta(minutes=5)
    start = datetime(now.year, now.month, 1, tzinfo=zone)
    assert trigger["periodStart"] == rfc3339(start)


def test_a_cancel_below_a_triggered_threshold_resolves_once_then_it_can_fire_again(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10], notifyOnResolve=True)
    [big] = api.record(_event(meter, "u", 12, idempotency="big"))["events"]
    evaluate()
    cancel = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": big["id"]}]})
    assert cancel.status_code == 200, cancel.text
    evaluate()
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 10), ("alert.resolved", "u", 10)]
    assert triggers(api, rule)[1]["value"] == 0
    api.record(_event(meter, "u", 10))
    evaluate()
    assert crossings(api, rule) == [
        ("alert.triggered", "u", 10),
        ("alert.resolved", "u", 10),
        ("alert.triggered", "u", 10),
    ]
    assert len({t["id"] for t in triggers(api, rule)}) == 3


def test_without_notify_on_resolve_a_cancel_announces_nothing_and_nothing_refires(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    [big] = api.record(_event(meter, "u", 12))["events"]
    evaluate()
    api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": big["id"]}]})
    evaluate()
    api.record(_event(meter, "u", 12))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 10)]


def test_a_max_meter_cancel_recomputes_the_maximum(api, evaluate):
    meter = api.create_meter(aggregationType="max")
    rule = create_rule(api, meter, thresholds=[10], notifyOnResolve=True)
    api.record(_event(meter, "u", 4))
    [big] = api.record(_event(meter, "u", 15))["events"]
    evaluate()
    api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": big["id"]}]})
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 10), ("alert.resolved", "u", 10)]
    assert triggers(api, rule)[1]["value"] == 4


def test_count_and_unique_count_meters_cross(api, evaluate):
    counted = api.create_meter(eventName="calls", aggregationType="count")
    unique = api.create_meter(
        eventName="models", aggregationType="unique_count", uniqueBy="model", dimensions=["model"]
    )
    count_rule = create_rule(api, counted, thresholds=[3], scope="org")
    unique_rule = create_rule(api, unique, thresholds=[2])
    api.record(
        {"meterId": counted["id"], "userId": "a", "timestamp": minutes_ago(3)},
        {"meterId": counted["id"], "userId": "b", "timestamp": minutes_ago(3)},
        *[_event(unique, "a", 1, dimensions={"model": "m1"}) for _ in range(3)],
    )
    evaluate()
    assert crossings(api, count_rule) == [] and crossings(api, unique_rule) == []
    api.record(
        {"meterId": counted["id"], "userId": "c", "timestamp": minutes_ago(3)},
        _event(unique, "a", 1, dimensions={"model": "m2"}),
    )
    evaluate()
    assert crossings(api, count_rule) == [("alert.triggered", None, 3)]
    assert crossings(api, unique_rule) == [("alert.triggered", "a", 2)]


def test_a_rule_created_mid_period_is_seeded_with_the_usage_already_there(api, evaluate):
    meter = api.create_meter()
    api.record(_event(meter, "u", 8, minutes=20), _event(meter, "v", 30, minutes=20))
    rule = create_rule(api, meter, thresholds=[10, 40])
    api.record(_event(meter, "u", 1))
    evaluate()
    assert crossings(api, rule) == []  # u has 9: the seed is exact, not 1 and not 8 + 1 + 1
    api.record(_event(meter, "u", 1))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 10)]
    assert triggers(api, rule)[0]["value"] == 10
    api.record(_event(meter, "v", 1))
    evaluate()
    assert crossings(api, rule)[-1] == ("alert.triggered", "v", 10)
    assert triggers(api, rule)[-1]["value"] == 31


@pytest.mark.parametrize("entities", [seed_module.GROUPED_ENTITIES, 1])
def test_a_chunks_new_tallies_of_one_spec_are_seeded_by_one_grouped_read(
    api, evaluate, monkeypatch, entities
):
    """Several users' tallies of one spec and period, new in one chunk, come from one read
    grouped by user (filter and all); past its entity cap, one summary each: same values."""
    monkeypatch.setattr(seed_module, "GROUPED_ENTITIES", entities)
    grouped = []
    real = seed_module._grouped_values
    monkeypatch.setattr(
        seed_module,
        "_grouped_values",
        lambda meter, touches: grouped.append(real(meter, touches)) or grouped[-1],
    )
    meter = api.create_meter(dimensions=["model"])
    m1, m2 = {"dimensions": {"model": "m1"}}, {"dimensions": {"model": "m2"}}
    api.record(
        _event(meter, "u", 8, minutes=20, **m1),
        _event(meter, "v", 30, minutes=20, **m1),
        _event(meter, "v", 50, minutes=20, **m2),
        _event(meter, "w", 5, minutes=20, **m2),
        _event(meter, "x", 9, minutes=20, **m1),
    )
    rule = create_rule(api, meter, thresholds=[10, 40], filter={"model": "m1"})
    api.record(
        *[_event(meter, user, 1, **m1) for user in ("u", "v", "x")],
        _event(meter, "w", 10, **m2),
        _event(meter, "y", 10, **m1),
    )
    evaluate()
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", user, 10) for user in ("v", "x", "y")
    ]
    assert {t["userId"]: t["value"] for t in triggers(api, rule)} == {"v": 31, "x": 10, "y": 10}
    # Within the rule's first half minute the period is seeded whole (one read of every
    # user, `seed.seed_periods`); past the cap, one grouped read is tried, then summaries.
    assert grouped == ([] if entities > 1 else [None])
    api.record(_event(meter, "u", 1, **m1), _event(meter, "v", 9, **m1))
    evaluate()
    assert sorted(crossings(api, rule)) == sorted(
        [("alert.triggered", user, 10) for user in ("u", "v", "x", "y")]
        + [("alert.triggered", "v", 40)]
    )


def _period_start(moment: datetime, period: str, zone: str) -> datetime:
    local = moment.astimezone(ZoneInfo(zone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (start.replace(day=1) if period == "month" else start).astimezone(UTC)


@pytest.mark.parametrize("together", [True, False])
def test_a_chunks_new_org_tallies_of_several_periods_are_seeded_by_one_read(
    api, evaluate, monkeypatch, together
):
    """Org tallies new in one chunk (three days of one rule, the Kolkata month of another
    with a filter) are seeded from one read of the org's cells (`seed._org_values`); read
    one summary each instead (its fallback), the values are the same."""
    grouped, summaries = [], []
    real_grouped, real_summary = seed_module._org_values, seed_module._summary_value
    monkeypatch.setattr(
        seed_module,
        "_org_values",
        lambda meter, touches: (
            grouped.append(len(touches)) or (real_grouped(meter, touches) if together else None)
        ),
    )
    monkeypatch.setattr(
        seed_module,
        "_summary_value",
        lambda meter, touch: summaries.append(touch.spec) or real_summary(meter, touch),
    )
    meter = api.create_meter(dimensions=["model"])
    now = datetime.now(UTC)
    moments = [now - timedelta(minutes=10), now - timedelta(days=1), now - timedelta(days=2)]

    def event(user, value, model, moment):
        return {
            "meterId": meter["id"],
            "userId": user,
            "value": value,
            "timestamp": rfc3339(moment),
            "dimensions": {"model": model},
        }

    before = [("u", 30, "m1", 2), ("v", 20, "m2", 2), ("u", 25, "m1", 1), ("w", 40, "m1", 0)]
    after = [("x", 5, "m1", 2), ("y", 5, "m2", 1), ("z", 15, "m1", 0)]
    api.record(*[event(user, value, model, moments[at]) for user, value, model, at in before])
    days = create_rule(api, meter, scope="org", period="day", thresholds=[52])
    month = create_rule(
        api,
        meter,
        scope="org",
        period="month",
        timeZone="Asia/Kolkata",
        thresholds=[100],
        filter={"model": "m1"},
    )
    api.record(*[event(user, value, model, moments[at]) for user, value, model, at in after])
    evaluate()

    def expected(period, zone, threshold, model=None) -> dict:
        totals: dict[datetime, list[int]] = {}
        for batch, events in enumerate((before, after)):
            for _user, value, of, at in events:
                if model is None or of == model:
                    start = _period_start(moments[at], period, zone)
                    totals.setdefault(start, [0, 0])[batch] += value
        return {
            rfc3339(start): pre + added
            for start, (pre, added) in totals.items()
            if pre < threshold <= pre + added
        }

    def fired(rule) -> dict:
        return {t["periodStart"]: t["value"] for t in triggers(api, rule)}

    assert fired(days) == expected("day", "UTC", 52) and len(fired(days)) == 2
    assert fired(month) == expected("month", "Asia/Kolkata", 100, "m1")
    assert grouped == [
        len(moments) + len({_period_start(m, "month", "Asia/Kolkata") for m in moments})
    ]
    assert len(summaries) == (0 if together else grouped[0])


def test_thresholds_added_later_fire_when_already_passed_and_archived_rules_do_not(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[100])
    archived = create_rule(api, meter, thresholds=[1])
    api.delete(f"/v1/billing/alerts/{archived['id']}")
    api.record(_event(meter, "u", 50))
    evaluate()
    assert crossings(api, rule) == []
    api.patch(f"/v1/billing/alerts/{rule['id']}", json={"thresholds": [20, 100]})
    api.record(_event(meter, "u", 1))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 20)]
    assert triggers(api, rule)[0]["value"] == 51
    assert crossings(api, archived) == []


def test_concurrent_batches_crossing_one_threshold_give_one_trigger(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[40], scope="org")
    user_rule = create_rule(api, meter, thresholds=[5])

    def send(client):
        for _ in range(3):
            api.record(*[_event(meter, f"user-{client}", 1) for _ in range(2)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(8)))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", None, 40)]
    assert sorted(crossings(api, user_rule)) == [
        ("alert.triggered", f"user-{client}", 5) for client in range(8)
    ]


def test_two_evaluators_at_once_give_one_trigger_per_crossing(api, app, ndb_client, org):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[3, 6], scope="org")
    stop = threading.Event()
    errors = []

    def evaluator():
        while not stop.is_set():
            try:
                run_evaluator(app, ndb_client, org)
            except Exception as error:  # noqa: BLE001  (reported below)
                errors.append(error)

    threads = [threading.Thread(target=evaluator) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(8):
            api.record(_event(meter, "u", 1))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    run_evaluator(app, ndb_client, org)
    assert errors == []
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", None, 3),
        ("alert.triggered", None, 6),
    ]


def test_a_changed_filter_makes_a_new_tally_seeded_from_the_usage_there(api, evaluate):
    meter = api.create_meter(dimensions=["model"])
    rule = create_rule(api, meter, thresholds=[8], filter={"model": "a"})
    api.record(
        _event(meter, "u", 5, dimensions={"model": "a"}),
        _event(meter, "u", 6, dimensions={"model": "b"}),
    )
    evaluate()
    changed = api.patch(f"/v1/billing/alerts/{rule['id']}", json={"filter": {"model": "b"}})
    assert changed.status_code == 200
    api.record(_event(meter, "u", 1, dimensions={"model": "b"}))
    evaluate()
    assert crossings(api, rule) == []  # b holds 7: not 1, and not the 5 of a
    api.record(_event(meter, "u", 1, dimensions={"model": "b"}))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 8)]
    assert triggers(api, rule)[0]["value"] == 8


def _die_after_three_parts(app, ndb_client, org, monkeypatch) -> None:
    """Run the evaluator with commits of one tally and its triggers at most, dying after
    three parts of a feed are committed (the crash logged and reported); then commits
    as before."""
    monkeypatch.setattr(evaluate_module, "MAX_MUTATIONS", 7)
    real_commit = evaluate_module._commit_chunk
    calls: list[int] = []

    def crashing(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("the evaluator died between two parts")
        result = real_commit(*args, **kwargs)
        calls.append(result)
        return result

    monkeypatch.setattr(evaluate_module, "_commit_chunk", crashing)
    with pytest.raises(evaluate_module.EvaluationFailed):
        run_evaluator(app, ndb_client, org)
    monkeypatch.setattr(evaluate_module, "_commit_chunk", real_commit)


def test_a_feed_too_big_for_one_commit_is_applied_in_parts_exactly_once(
    api, app, ndb_client, org, monkeypatch
):
    meter = api.create_meter()
    monthly = create_rule(api, meter, thresholds=[1, 2])
    daily = create_rule(api, meter, thresholds=[1], period="day", timeZone="Asia/Tokyo")
    api.record(*[_event(meter, f"user-{n}", 3) for n in range(10)])
    _die_after_three_parts(app, ndb_client, org, monkeypatch)
    with ndb_client.context(namespace=org["namespace"]):
        [feed] = AlertFeed.query(ancestor=root_key()).fetch()
        assert feed.done  # some parts were applied, and remembered
    assert run_evaluator(app, ndb_client, org) == 1
    users = [f"user-{n}" for n in range(10)]
    assert sorted(crossings(api, monthly)) == sorted(
        [("alert.triggered", u, t) for u in users for t in (1, 2)]
    )
    assert sorted(crossings(api, daily)) == [("alert.triggered", u, 1) for u in users]


def test_a_feed_left_half_applied_does_not_hold_back_the_feeds_after_it(
    api, app, ndb_client, org, monkeypatch
):
    """A feed whose first parts were applied before its evaluator died, then a batch that
    adds to the same tallies: one chunk applies both, the later feed's share counted in
    full and the first feed's applied parts not again. (A chunk holding both was given up
    as stale at every try, so the meter's feeds stayed pending.)"""
    meter = api.create_meter()
    monthly = create_rule(api, meter, thresholds=[1, 2, 5])
    daily = create_rule(api, meter, thresholds=[1, 5], period="day", timeZone="Asia/Tokyo")
    api.record(*[_event(meter, f"user-{n}", 3) for n in range(10)])
    _die_after_three_parts(app, ndb_client, org, monkeypatch)
    with ndb_client.context(namespace=org["namespace"]):
        [feed] = AlertFeed.query(ancestor=root_key()).fetch()
        assert feed.done  # left half applied
    monkeypatch.setattr(evaluate_module, "MAX_MUTATIONS", 500)  # both feeds fit one commit
    api.record(*[_event(meter, f"user-{n}", 3) for n in range(10)])
    assert run_evaluator(app, ndb_client, org) == 2
    users = [f"user-{n}" for n in range(10)]
    assert sorted(crossings(api, monthly)) == sorted(
        [("alert.triggered", u, t) for u in users for t in (1, 2, 5)]
    )
    assert sorted(crossings(api, daily)) == sorted(
        [("alert.triggered", u, t) for u in users for t in (1, 5)]
    )


@pytest.mark.parametrize("seeding", [True, False])
def test_exactly_once_holds_without_the_lease(api, app, ndb_client, org, monkeypatch, seeding):
    """Two evaluators that both think they hold the meter's lease (one expired under a slow
    evaluator) still give one trigger per crossing: the transaction re-reads the feeds (and
    a seeded tally's state). Without seeding: as if the rules were old (no usage predates
    them here, so the tallies' values are the same)."""
    monkeypatch.setattr(evaluate_module, "_acquire", lambda meter_id: lambda: None)
    if not seeding:
        monkeypatch.setattr(evaluate_module, "_needs_seed", lambda *args: False)
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[2, 4, 6], scope="org")
    user_rule = create_rule(api, meter, thresholds=[1])
    barrier = threading.Barrier(2)

    def evaluator():
        barrier.wait()
        return run_evaluator(app, ndb_client, org)

    for round_number in range(4):
        api.record(*[_event(meter, f"u{round_number}-{n}", 1) for n in range(2)])
        with ThreadPoolExecutor(2) as pool:
            applied = sum(pool.map(lambda _: evaluator(), range(2)))
        assert applied == 1  # the one feed, applied by one of the two
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", None, 2),
        ("alert.triggered", None, 4),
        ("alert.triggered", None, 6),
    ]
    assert len(crossings(api, user_rule)) == 8


def test_triggers_are_listed_newest_first_a_page_at_a_time(api, evaluate):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[1, 2, 3])
    for _ in range(3):
        api.record(_event(meter, "u", 1))
        evaluate()
    first = api.get(f"/v1/billing/alerts/{rule['id']}/triggers", params={"limit": 2}).json()
    assert [t["threshold"] for t in first["triggers"]] == [3, 2] and first["count"] == 2
    rest = api.get(
        f"/v1/billing/alerts/{rule['id']}/triggers",
        params={"limit": 2, "cursor": first["nextCursor"]},
    ).json()
    assert [t["threshold"] for t in rest["triggers"]] == [1] and rest["nextCursor"] is None
    assert all(t["type"] == "alert.triggered" and t["userId"] == "u" for t in first["triggers"])
