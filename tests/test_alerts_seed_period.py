"""A per-user (spec, period) that began before its rules is seeded whole, once (session 9):
every user's value at one cut, stored in the period's buckets, which are marked with the
basis; a user new to the period afterwards needs no seed of its own.

Seeding whole waits for the basis (the rules' creation plus the rule cache's TTL and the
request deadline) to pass. These tests set that delay to 0 (`_settings`), so that it has
passed as soon as a rule exists; the server runs in the test's process, where creating a
rule drops the rule cache at once."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from google.cloud import ndb

from app.models import AlertTallyBucket, AlertTallySpill, Meter, root_key
from app.services.alerts import evaluate as evaluate_module
from app.services.alerts import seed as seed_module
from app.services.alerts import tallies
from app.storage import first_events
from tests.support.alerts import create_rule, crossings, minutes_ago, run_evaluator, triggers
from tests.test_alerts_properties import test_triggers_equal_the_brute_force as brute_force


@pytest.fixture(autouse=True)
def basis_passed_at_once(monkeypatch):
    real = evaluate_module._settings
    monkeypatch.setattr(
        evaluate_module,
        "_settings",
        lambda hand_off=None: dataclasses.replace(real(hand_off), complete=timedelta(0)),
    )
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    seed_module._too_big.clear()  # grouped reads given up on by earlier tests' meters
    yield
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()


@pytest.fixture
def seeds(monkeypatch):
    """What was seeded: ("period", spec) per whole period, ("tally", subject) per tally
    seeded on its own."""
    asked: list[tuple[str, object]] = []
    real_periods, real_all = seed_module.seed_periods, seed_module.seed_all

    def seed_periods(meter, touches, basis=None):
        asked.extend(("period", touch.spec) for touch in touches)
        return real_periods(meter, touches, basis)

    def seed_all(meter, touches, *limit):
        found = real_all(meter, touches, *limit)  # may refuse: then nothing was seeded
        asked.extend(("tally", touch.subject) for touch in touches)
        return found

    monkeypatch.setattr(seed_module, "seed_periods", seed_periods)
    monkeypatch.setattr(seed_module, "seed_all", seed_all)
    return asked


def _event(meter, user, value, minutes=5):
    return {
        "meterId": meter["id"],
        "userId": user,
        "value": value,
        "timestamp": minutes_ago(minutes),
    }


def _buckets(ndb_client, org):
    with ndb_client.context(namespace=org["namespace"]):
        return list(AlertTallyBucket.query(ancestor=root_key()).fetch())


def _values(ndb_client, org) -> dict:
    return {
        subject: record[1]
        for bucket in _buckets(ndb_client, org)
        for subject, record in tallies.records_of(bucket.subjects).items()
    }


def test_a_period_is_seeded_whole_once_and_new_users_need_no_seed(api, app, ndb_client, org, seeds):
    meter = api.create_meter()
    api.record(
        _event(meter, "u", 8, minutes=20),
        _event(meter, "v", 30, minutes=20),
        _event(meter, "w", 5, minutes=20),
    )
    rule = create_rule(api, meter, thresholds=[10, 40])
    api.record(_event(meter, "u", 1), _event(meter, "y", 10))
    run_evaluator(app, ndb_client, org)
    assert seeds == [("period", seeds[0][1])]  # one read for the period, no tally alone
    assert crossings(api, rule) == [("alert.triggered", "y", 10)]  # u has 9: exact
    # every user with usage is stored, those the chunk did not touch included
    assert _values(ndb_client, org) == {"u": 9, "v": 30, "w": 5, "y": 10}
    buckets = _buckets(ndb_client, org)
    assert len(buckets) == tallies.BUCKETS  # the period's every bucket is marked
    assert len({b.whole for b in buckets}) == 1 and buckets[0].whole is not None
    api.record(_event(meter, "v", 10), _event(meter, "w", 5), _event(meter, "z", 3))
    run_evaluator(app, ndb_client, org)
    assert len(seeds) == 1  # z is new: no seed; v and w were stored by the period's seed
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", "v", 10),
        ("alert.triggered", "v", 40),
        ("alert.triggered", "w", 10),
        ("alert.triggered", "y", 10),
    ]
    assert {(t["userId"], t["threshold"]): t["value"] for t in triggers(api, rule)} == {
        ("v", 10): 40,
        ("v", 40): 40,
        ("w", 10): 10,
        ("y", 10): 10,
    }
    assert _values(ndb_client, org) == {"u": 9, "v": 40, "w": 10, "y": 10, "z": 3}


def test_a_period_too_big_for_its_buckets_is_seeded_a_tally_at_a_time(
    api, app, ndb_client, org, seeds, monkeypatch
):
    """Seeding whole would spill (one bucket, a few records' worth of bytes): nothing is
    marked, each new tally is seeded on its own, and the values are as exact."""
    monkeypatch.setattr(tallies, "BUCKETS", 1)
    monkeypatch.setattr(tallies, "MAX_BUCKET_BYTES", 120)
    meter = api.create_meter()
    users = [f"user-{n}" for n in range(6)]
    api.record(*[_event(meter, user, 9, minutes=20) for user in users])
    rule = create_rule(api, meter, thresholds=[10])
    api.record(_event(meter, users[0], 1), _event(meter, users[1], 1))
    run_evaluator(app, ndb_client, org)
    assert [kind for kind, _ in seeds] == ["period", "tally", "tally"]
    assert all(b.whole is None for b in _buckets(ndb_client, org))
    api.record(*[_event(meter, user, 1) for user in users[2:]])
    run_evaluator(app, ndb_client, org)
    assert sorted(crossings(api, rule)) == [("alert.triggered", u, 10) for u in users]
    with ndb_client.context(namespace=org["namespace"]):
        spilled = {s.user_id: int(s.value) for s in AlertTallySpill.query(ancestor=root_key())}
    assert _values(ndb_client, org) | spilled == {u: 10 for u in users}


def test_two_evaluators_seeding_one_period_at_once_count_once(
    api, app, ndb_client, org, monkeypatch
):
    """Both think they hold the lease: each may seed the period, and each transaction
    keeps what the other stored first (a user already in its bucket keeps its record)."""
    monkeypatch.setattr(evaluate_module, "_take_lease", lambda meter_id, holder: True)
    meter = api.create_meter()
    api.record(*[_event(meter, f"old-{n}", 3, minutes=20) for n in range(6)])
    rule = create_rule(api, meter, thresholds=[4, 8])
    org_rule = create_rule(api, meter, thresholds=[20, 30], scope="org")
    barrier = threading.Barrier(2)

    def evaluator():
        barrier.wait()
        return run_evaluator(app, ndb_client, org)

    for round_number in range(3):
        api.record(*[_event(meter, f"old-{n}", 2) for n in range(round_number, round_number + 2)])
        with ThreadPoolExecutor(2) as pool:
            assert sum(pool.map(lambda _: evaluator(), range(2))) == 1
    # old-0: 3+2 = 5; old-1: 3+2+2 = 7; old-2: 7; old-3: 5; old-4, old-5: 3
    assert sorted(crossings(api, rule)) == [("alert.triggered", f"old-{n}", 4) for n in range(4)]
    assert crossings(api, org_rule) == [
        ("alert.triggered", None, 20),
        ("alert.triggered", None, 30),
    ]
    assert _values(ndb_client, org) == {
        "old-0": 5,
        "old-1": 7,
        "old-2": 7,
        "old-3": 5,
        "old-4": 3,
        "old-5": 3,
        None: 30,
    }


def test_triggers_equal_the_brute_force_with_periods_seeded_whole(server, admin, app, ndb_client):
    """The property test of tests/test_alerts_properties.py, its rules' basis passed at
    once: every period of its streams is seeded whole (cancellations, max meters and
    concurrent batches included)."""
    brute_force(server=server, admin=admin, app=app, ndb_client=ndb_client)


@pytest.fixture
def rollup_reads(monkeypatch):
    """How often a period's users' rollups were read (`seed._users_cells`)."""
    calls: list[int] = []
    real = seed_module._users_cells

    def spy(meter, touches):
        calls.append(len(touches))
        return real(meter, touches)

    monkeypatch.setattr(seed_module, "_users_cells", spy)
    return calls


def test_a_new_meters_periods_are_seeded_whole_without_reading_its_rollups(
    api, app, ndb_client, org, rollup_reads
):
    """Its every event was written after the rules' basis, so each wrote a feed: the
    period is marked whole from one small record, and the values are as exact."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10, 40])
    api.record(_event(meter, "u", 8), _event(meter, "v", 30), _event(meter, "w", 5))
    api.record(_event(meter, "u", 3), _event(meter, "v", 12))
    run_evaluator(app, ndb_client, org)
    assert rollup_reads == []
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", "u", 10),
        ("alert.triggered", "v", 10),
        ("alert.triggered", "v", 40),
    ]
    assert _values(ndb_client, org) == {"u": 11, "v": 42, "w": 5}
    assert all(b.whole is not None for b in _buckets(ndb_client, org))
    api.record(_event(meter, "w", 5), _event(meter, "z", 10))
    run_evaluator(app, ndb_client, org)
    assert rollup_reads == []
    assert _values(ndb_client, org) == {"u": 11, "v": 42, "w": 10, "z": 10}
    assert len(crossings(api, rule)) == 5


def test_a_meter_with_events_before_its_rules_basis_reads_its_rollups(
    api, app, ndb_client, org, rollup_reads
):
    meter = api.create_meter()
    api.record(_event(meter, "u", 8, minutes=20))
    rule = create_rule(api, meter, thresholds=[10])
    api.record(_event(meter, "u", 3), _event(meter, "v", 4))
    run_evaluator(app, ndb_client, org)
    assert len(rollup_reads) == 1
    assert crossings(api, rule) == [("alert.triggered", "u", 10)]
    assert _values(ndb_client, org) == {"u": 11, "v": 4}


def test_a_meter_older_than_its_first_event_record_reads_its_rollups(
    api, app, ndb_client, org, rollup_reads
):
    """Created before the record existed: unknown, so never taken for "no events"."""
    meter = api.create_meter()
    with ndb_client.context(namespace=org["namespace"]):
        meter_key_id = Meter.get_by_public_id(meter["id"]).key.id()
        ndb.Key(first_events.KIND, str(meter_key_id), parent=root_key()).delete()
    rule = create_rule(api, meter, thresholds=[10])
    api.record(_event(meter, "u", 12))
    run_evaluator(app, ndb_client, org)
    assert len(rollup_reads) == 1
    assert crossings(api, rule) == [("alert.triggered", "u", 10)]
