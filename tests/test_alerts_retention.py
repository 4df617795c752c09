"""Retention of the alert state of ended periods (`app.services.alerts.retention`).

The sweep's clock is moved forward (`retention._now`, which the evaluator's horizon reads
too) instead of writing entities of old periods by hand: the buckets, spills and triggers
swept are the ones the real evaluator wrote for real events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.cloud import ndb

from app.models import AlertLease, AlertTallyBucket, AlertTallySpill, AlertTrigger, root_key
from app.services.alerts import retention, tallies
from tests.support.alerts import create_rule, crossings, minutes_ago, run_evaluator, triggers


@pytest.fixture
def evaluate(app, ndb_client, org):
    return lambda: run_evaluator(app, ndb_client, org)


@pytest.fixture
def sweep(app, ndb_client, org):
    def run(limit: int = retention.PAGE) -> retention.Swept:
        with app.app_context(), ndb_client.context(namespace=org["namespace"]):
            return retention.sweep_now(limit)

    return run


@pytest.fixture
def stored(ndb_client, org):
    """The org's entities of a kind, or (with `period_indexed`) those a query on the
    PeriodStart index finds."""

    def read(model, period_indexed: bool = False) -> list:
        with ndb_client.context(namespace=org["namespace"]):
            if period_indexed:
                recent = model.period_start > retention._now() - timedelta(days=400)
                return list(model.query(recent).fetch(keys_only=True))  # as the sweep
            return list(model.query(ancestor=root_key()).fetch())

    return read


@pytest.fixture(autouse=True)
def fresh_caches():
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    retention.forget()
    yield
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    retention.forget()


@pytest.fixture
def move_clock(monkeypatch, config):
    """Move the retention clock forward by a span; "over" is just past when the periods of
    today (a day, or this month) are deleted."""
    real = retention._now

    def move(by: timedelta | str) -> None:
        if by == "over":
            by = retention.tally_keep(config) + retention.SWEEP_LAG + timedelta(days=2)
        monkeypatch.setattr(retention, "_now", lambda: real() + by)

    return move


def _event(meter, user, value, **extra):
    return {
        "meterId": meter["id"],
        "userId": user,
        "value": value,
        "timestamp": minutes_ago(5),
        **extra,
    }


def test_periods_still_open_to_events_and_cancels_keep_their_state(api, evaluate, sweep, stored):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    api.record(_event(meter, "u", 12))
    evaluate()
    buckets = stored(AlertTallyBucket)
    assert buckets
    assert sweep() == retention.Swept(scanned=0)
    assert [b.key for b in stored(AlertTallyBucket)] == [b.key for b in buckets]
    api.record(_event(meter, "u", 5))
    evaluate()
    assert crossings(api, rule) == [("alert.triggered", "u", 10)]  # its state was kept


def test_tallies_of_periods_long_over_are_swept_and_their_triggers_kept(
    api, evaluate, sweep, stored, move_clock
):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    create_rule(api, meter, thresholds=[10], period="day")
    api.record(_event(meter, "u", 12), _event(meter, "v", 3))
    evaluate()
    buckets = stored(AlertTallyBucket)
    fired = triggers(api, rule)
    assert len(fired) == 1 and buckets
    move_clock("over")
    swept = sweep()
    assert (swept.buckets, swept.spills, swept.triggers) == (len(buckets), 0, 0)
    assert stored(AlertTallyBucket) == []
    assert triggers(api, rule) == fired  # the tenant's history stays


def test_triggers_are_swept_after_their_retention(api, evaluate, sweep, move_clock, config):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    api.record(_event(meter, "u", 12))
    evaluate()
    fired = triggers(api, rule)
    move_clock(config.alert_trigger_retention - timedelta(days=1))
    assert sweep().triggers == 0
    assert triggers(api, rule) == fired
    move_clock(config.alert_trigger_retention + timedelta(days=1))
    assert sweep().triggers == 1
    assert triggers(api, rule) == []


def test_spills_of_periods_long_over_are_swept(
    api, evaluate, sweep, stored, move_clock, monkeypatch
):
    monkeypatch.setattr(tallies, "BUCKETS", 1)
    monkeypatch.setattr(tallies, "MAX_BUCKET_BYTES", 150)  # about three records
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[10])
    api.record(*[_event(meter, f"user-{n}", 1) for n in range(8)])
    evaluate()
    spills = stored(AlertTallySpill)
    assert spills and stored(AlertTallyBucket)
    move_clock("over")
    swept = sweep()
    assert (swept.buckets, swept.spills) == (1, len(spills))
    assert stored(AlertTallySpill) == [] and stored(AlertTallyBucket) == []


def test_one_sweep_deletes_at_most_its_page_of_each_kind(
    api, evaluate, sweep, stored, move_clock, config
):
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[1])
    create_rule(api, meter, thresholds=[1], period="day")
    api.record(*[_event(meter, f"user-{n:02d}", 2) for n in range(40)])
    evaluate()
    buckets = len(stored(AlertTallyBucket))
    fired = len(stored(AlertTrigger))
    assert buckets > 6 and fired == 80
    move_clock(config.alert_trigger_retention + timedelta(days=1))
    first = sweep(limit=3)
    assert (first.buckets, first.triggers) == (3, 3)
    assert len(stored(AlertTallyBucket)) == buckets - 3
    assert len(stored(AlertTrigger)) == fired - 3
    while sweep(limit=3).full:
        pass
    assert stored(AlertTallyBucket) == [] and stored(AlertTrigger) == []


def test_a_late_cancel_of_a_swept_period_never_fires_its_crossing_again(
    api, evaluate, sweep, stored, move_clock
):
    """Without its tally, the period's next contribution would start a new one, seeded
    from the rollups (the rule is younger than the month), reach the threshold again and
    store the same trigger and message keys anew: the message sent a second time. The
    evaluator drops contributions to periods past the horizon instead, and the sweep
    deletes only tallies past it."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    [_big, small] = api.record(
        _event(meter, "u", 20, idempotency="big"), _event(meter, "u", 3, idempotency="small")
    )["events"]
    evaluate()
    fired = triggers(api, rule)
    assert [(t["userId"], t["value"]) for t in fired] == [("u", 23)]
    move_clock("over")
    assert sweep().buckets > 0
    cancel = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": small["id"]}]})
    assert cancel.status_code == 200, cancel.text
    assert evaluate() == 1  # the cancel's feed, applied to nothing
    assert triggers(api, rule) == fired  # same value and time: not detected again
    assert stored(AlertTallyBucket) == []  # no tally started for the period


def test_buckets_written_before_period_start_was_indexed_are_scanned_once(
    api, evaluate, sweep, stored, monkeypatch
):
    """Buckets the previous release wrote are in no PeriodStart index: the one-time scan
    rewrites those still kept (then the index finds them) and their tallies go on."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    create_rule(api, meter, thresholds=[10], period="day")
    with monkeypatch.context() as old_release:
        old_release.setattr(AlertTallyBucket.period_start, "_indexed", False)
        api.record(*[_event(meter, f"user-{n:02d}", 6) for n in range(20)])
        evaluate()
    buckets = stored(AlertTallyBucket)
    assert len(buckets) > 3 and stored(AlertTallyBucket, period_indexed=True) == []
    monkeypatch.setattr(retention, "SCAN_PAGE", 3)
    scanned = 0
    while (page := sweep()).scanned:
        assert page.rewritten == page.scanned and page.buckets == 0
        scanned += page.scanned
    assert scanned == len(buckets)
    assert len(stored(AlertTallyBucket, period_indexed=True)) == len(buckets)
    assert sweep().scanned == 0  # done: never read again
    api.record(*[_event(meter, f"user-{n:02d}", 6) for n in range(20)])
    evaluate()
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", f"user-{n:02d}", 10) for n in range(20)
    ]


def test_the_scan_deletes_unindexed_buckets_of_periods_long_over(
    api, evaluate, sweep, stored, monkeypatch, move_clock
):
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[10])
    with monkeypatch.context() as old_release:
        old_release.setattr(AlertTallyBucket.period_start, "_indexed", False)
        api.record(*[_event(meter, f"user-{n:02d}", 6) for n in range(20)])
        evaluate()
    buckets = stored(AlertTallyBucket)
    assert buckets
    move_clock("over")
    swept = sweep()
    assert swept.buckets == 0  # the index does not know them
    assert (swept.scanned, swept.rewritten) == (len(buckets), 0)
    assert stored(AlertTallyBucket) == []


def test_leftover_leases_go_and_a_held_one_stays(app, ndb_client, org, sweep, stored):
    now = retention._now()
    with ndb_client.context(namespace=org["namespace"]):
        for meter_id, until in (("m_killed", now - timedelta(hours=2)), ("m_held", now)):
            AlertLease(
                key=ndb.Key(AlertLease, meter_id, parent=root_key()), holder="h", until=until
            ).put()
    assert sweep().leases == 1
    assert [lease.key.string_id() for lease in stored(AlertLease)] == ["m_held"]


def test_a_process_sweeps_an_org_once_per_period_and_a_failure_stops_no_other_org(
    app, ndb_client, org, other_org, monkeypatch, caplog
):
    def broken(limit):
        raise RuntimeError("Datastore said no")

    with app.app_context(), ndb_client.context(namespace=other_org["namespace"]):
        assert retention.sweep() is not None
        assert retention.sweep() is None  # not again before RECHECK_SECONDS
    monkeypatch.setattr(retention, "sweep_now", broken)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert retention.sweep() is None  # logged, not raised: the evaluator goes on
    assert f"alert retention sweep failed for org '{org['namespace']}'" in caplog.text
