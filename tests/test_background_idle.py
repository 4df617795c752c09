"""The background loops' visits of an org with nothing to do (issue 14, session 10): one
keys-only check for pending feeds, no read of the org's rules, a lease kept between
rounds still let go once its meter is idle, and idle orgs visited less often by the
timed passes."""

from __future__ import annotations

import time
from datetime import timedelta

from app import background
from app.models import AlertLease, root_key, utcnow
from app.services import periodic
from app.services.alerts import evaluate
from app.services.alerts import rules as rule_service
from tests.support.alerts import create_rule, triggers


def _leases(ndb_client, org) -> list[str]:
    with ndb_client.context(namespace=org["namespace"]):
        return [
            key.string_id() for key in AlertLease.query(ancestor=root_key()).fetch(keys_only=True)
        ]


def test_a_visit_of_an_org_with_no_pending_feed_reads_no_rule(
    app, ndb_client, org, api, monkeypatch
):
    """The loops visit every registered org every second: with no feed pending, the visit
    is one keys-only query, not a read of the org's rules (20 entities through NDB for the
    benchmark's org, every second, in every worker)."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[3])

    def no_rules_read():
        raise AssertionError("the org's rules were read with no feed pending")

    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        with monkeypatch.context() as idle:
            idle.setattr(rule_service, "all_rules", no_rules_read)
            assert evaluate.evaluate_org(100) == 0
        api.record({"meterId": meter["id"], "userId": "a", "value": 5})
        assert evaluate.evaluate_org(100) == 1  # a pending feed: the rules are read
        assert evaluate.evaluate_org(100) == 0


def test_a_lease_kept_between_rounds_is_let_go_once_its_meter_is_idle(
    app, ndb_client, org, api, monkeypatch
):
    """The holder keeps its meter's lease between rounds and lets go of it once nothing is
    pending IDLE_RELEASE_SECONDS after its last applied feed, also now that a visit of an
    org with no feed stops before it looks at any meter."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[3])
    api.record({"meterId": meter["id"], "userId": "a", "value": 5})
    monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 60.0)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100) == 1
        assert evaluate.evaluate_org(100) == 0  # idle, not long enough: kept
    assert _leases(ndb_client, org) == [meter["id"]]
    assert org["namespace"] in evaluate.held_orgs()
    monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 0.0)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100) == 0
    assert _leases(ndb_client, org) == []
    assert org["namespace"] not in evaluate.held_orgs()


def test_a_lease_another_thread_is_using_is_not_let_go(app, ndb_client, org, api, monkeypatch):
    """A meter whose lease a thread of this process holds the lock of (it is evaluating)
    keeps its lease, however idle it looked."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[3])
    api.record({"meterId": meter["id"], "userId": "a", "value": 5})
    monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 0.0)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 60.0)
        assert evaluate.evaluate_org(100) == 1
        monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 0.0)
        held = evaluate._held_of(meter["id"])
        with held.lock:
            assert evaluate.evaluate_org(100) == 0
    assert _leases(ndb_client, org) == [meter["id"]]
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100) == 0  # free now: let go
    assert _leases(ndb_client, org) == []


def test_a_round_of_a_held_meter_reads_its_pending_feeds_once_renewal_included(
    app, ndb_client, org, api, monkeypatch
):
    """Session 13: while this process holds a meter's lease, a round skips the org-wide
    check and reads the meter's first chunk as its check, renewing the lease when due;
    before, a renewal round read a pending key, renewed, then read the chunk."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[3])
    event = {"meterId": meter["id"], "userId": "a", "value": 2}
    api.record(event)
    calls: list[str] = []
    real_org, real_pending, real_renew = evaluate._org_pending, evaluate._pending, evaluate._renew

    def org_pending():
        calls.append("org")
        return real_org()

    def pending(meter_id, limit, keys_only=False):
        calls.append("keys" if keys_only else "feeds")
        return real_pending(meter_id, limit, keys_only)

    def renew(meter_id):
        calls.append("renew")
        real_renew(meter_id)

    monkeypatch.setattr(evaluate, "_org_pending", org_pending)
    monkeypatch.setattr(evaluate, "_pending", pending)
    monkeypatch.setattr(evaluate, "_renew", renew)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100, pace=1.0) == 1  # takes the lease
        assert calls == ["org", "keys", "feeds"]
        calls.clear()
        api.record(event)
        evaluate._rounds.set(None)  # not paced: the next round comes at once
        assert evaluate.evaluate_org(100, pace=1.0) == 1
        assert calls == ["feeds"]  # the check is the chunk's read; no lease write
        calls.clear()
        api.record(event)
        evaluate._rounds.set(None)
        held = evaluate._held_of(meter["id"])
        held.until = time.monotonic() + evaluate.RENEW_BEFORE_SECONDS / 2  # due for renewal
        assert evaluate.evaluate_org(100, pace=1.0) == 1
        assert calls == ["feeds", "renew"]
        assert held.until > time.monotonic() + evaluate.RENEW_BEFORE_SECONDS
    assert _leases(ndb_client, org) == [meter["id"]]
    assert len(triggers(api, rule)) == 1  # 2, 4, 6: the threshold 3 crossed once


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _passes(idle: background._IdleOrgs, clock: _Clock, names: list[str], busy: set[str]):
    """Timed passes a second apart: which orgs each visits (`busy` ones find work)."""
    visited = []
    for _ in range(12):
        due = idle.due(names)
        visited.append(due)
        run = periodic.DeliveryRun(
            quiet=[n for n in due if n not in busy], active=[n for n in due if n in busy]
        )
        idle.visited(run)
        clock.now += 1.0
    return visited


def test_the_timed_passes_visit_an_idle_org_less_and_less_often_down_to_a_floor():
    """Each loop's timed pass visited every registered org every second, a query each
    (with 50 orgs most of an idle worker's CPU): an org found idle in a row of timed visits
    is visited every 1, 2, then IDLE_STRIDE_MAX passes; an org with work every pass."""
    clock = _Clock()
    idle = background._IdleOrgs(1.0, clock)
    visited = _passes(idle, clock, ["idle", "busy"], {"busy"})
    assert all("busy" in due for due in visited)
    idle_at = [number for number, due in enumerate(visited) if "idle" in due]
    assert idle_at == [0, 1, 3, 7, 11]  # gaps of 1, 2, then IDLE_STRIDE_MAX (4)
    assert background.IDLE_STRIDE_MAX == 4


def test_an_org_woken_or_found_with_work_is_visited_by_the_next_pass_again():
    clock = _Clock()
    idle = background._IdleOrgs(1.0, clock)
    _passes(idle, clock, ["a", "b"], set())
    assert idle.due(["a", "b"]) == []  # both idle a while: skipped now
    idle.forget(["a"])  # a commit of this process woke the loop for it
    assert idle.due(["a", "b"]) == ["a"]
    idle.visited(periodic.DeliveryRun(failed=["b"]))
    assert idle.due(["a", "b"]) == ["a", "b"]


def test_wakes_leave_an_org_to_the_process_holding_its_meters(
    app, ndb_client, org, api, monkeypatch
):
    """Another process holds the org's only meter: this process's wakes (one per batch
    it records) leave the org to it without a round trip until OTHER_HOLDER_RECHECK_SECONDS
    have passed; then it looks again, and applies the feeds once the holder let go."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[3])
    with ndb_client.context(namespace=org["namespace"]):
        lease_key = evaluate._lease_key(meter["id"])
        until = utcnow() + timedelta(seconds=60)
        AlertLease(key=lease_key, holder="another-process", until=until).put()
    api.record({"meterId": meter["id"], "userId": "a", "value": 5})
    monkeypatch.setattr(evaluate, "OTHER_HOLDER_RECHECK_SECONDS", 0.5)

    def no_round_trip(*_args, **_kwargs):
        raise AssertionError("a wake looked at an org whose meters another process holds")

    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100) == 0  # looked: another process holds it
        with monkeypatch.context() as skipped:
            skipped.setattr(evaluate.queries, "first_keys", no_round_trip)
            skipped.setattr(rule_service, "current_rules", no_round_trip)
            assert evaluate.evaluate_org(100) == 0
        lease_key.delete()  # the holder lets go
        time.sleep(0.6)
        assert evaluate.evaluate_org(100) == 1
