"""Tallies stored many subjects to an entity (session 8): packing, the byte cap, and the
tallies of the old shape (one entity per subject) folded in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import ndb

from app.models import AlertTally, AlertTallyBucket, AlertTallySpill, root_key
from app.services.alerts import retention, tallies
from app.services.alerts import rules as rule_service
from tests.support.alerts import create_rule, crossings, minutes_ago, run_evaluator, triggers


@pytest.fixture
def evaluate(app, ndb_client, org):
    return lambda: run_evaluator(app, ndb_client, org)


@pytest.fixture(autouse=True)
def fresh_caches():
    """Bucket names depend on BUCKETS, which some tests change; what a process knows of
    old-shape tallies is per org, but is dropped here too so no test sees another's."""
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    yield
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()


def _event(meter, user, value):
    return {"meterId": meter["id"], "userId": user, "value": value, "timestamp": minutes_ago(5)}


def _stored(ndb_client, org, model):
    with ndb_client.context(namespace=org["namespace"]):
        return list(model.query(ancestor=root_key()).fetch())


def _subjects(bucket: AlertTallyBucket) -> dict:
    return tallies.records_of(bucket.subjects)


def test_a_chunk_of_many_users_writes_at_most_one_entity_per_bucket(api, evaluate, ndb_client, org):
    meter = api.create_meter()
    monthly = create_rule(api, meter, thresholds=[5])
    daily = create_rule(api, meter, thresholds=[5], period="day", timeZone="Asia/Kolkata")
    users = [f"user-{n:02d}" for n in range(60)]
    api.record(*[_event(meter, user, 3 + n % 4) for n, user in enumerate(users)])
    evaluate()
    buckets = _stored(ndb_client, org, AlertTallyBucket)
    # two specs, one period each here (5 minutes ago lies in one day and one month of
    # each zone, unless this ran right after a midnight: then a day has two)
    assert len(buckets) <= 2 * 2 * tallies.BUCKETS
    assert _stored(ndb_client, org, AlertTally) == []  # nothing in the old shape
    assert _stored(ndb_client, org, AlertTallySpill) == []
    packed = [record for bucket in buckets for record in _subjects(bucket).values()]
    assert len(packed) == 2 * len(users)  # each user once per spec
    assert sorted(r[1] for r in packed) == sorted(2 * [3 + n % 4 for n in range(60)])
    # only thresholds that fired are kept in a record's states
    crossed = [user for n, user in enumerate(users) if 3 + n % 4 >= 5]
    assert all(bool(r[4]) == (r[0] in crossed) for r in packed)
    assert sorted(crossings(api, monthly)) == [("alert.triggered", u, 5) for u in crossed]
    assert sorted(crossings(api, daily)) == [("alert.triggered", u, 5) for u in crossed]


def test_a_bucket_at_its_byte_cap_spills_subjects_and_they_still_count_once(
    api, evaluate, ndb_client, org, monkeypatch
):
    """One bucket per period that holds about three records: the others are stored on
    their own, and go on counting there; every threshold fires once, with the value of
    its crossing (a subject whose state were lost would fire again, overwriting its
    trigger's value with the later one)."""
    monkeypatch.setattr(tallies, "BUCKETS", 1)
    monkeypatch.setattr(tallies, "MAX_BUCKET_BYTES", 150)
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[5, 10])
    users = [f"u{n}" for n in range(6)]
    for value in (3, 3, 5):  # 3, 6 (crosses 5), 11 (crosses 10)
        api.record(*[_event(meter, user, value) for user in users])
        evaluate()
    [bucket] = _stored(ndb_client, org, AlertTallyBucket)
    assert bucket.full and len(bucket.subjects) <= 150
    kept = _subjects(bucket)
    spilled = {s.user_id: s for s in _stored(ndb_client, org, AlertTallySpill)}
    assert 0 < len(kept) < len(users) and set(kept) | set(spilled) == set(users)
    assert not set(kept) & set(spilled)
    assert {u: r[1] for u, r in kept.items()} | {u: int(s.value) for u, s in spilled.items()} == {
        u: 11 for u in users
    }
    assert sorted(crossings(api, rule)) == sorted(
        [("alert.triggered", u, t) for u in users for t in (5, 10)]
    )
    assert {(t["userId"], t["threshold"]): t["value"] for t in triggers(api, rule)} == {
        (u, t): 6 if t == 5 else 11 for u in users for t in (5, 10)
    }


def _to_old_shape(ndb_client, org, user: str) -> None:
    """Store `user`'s tallies as sessions 6 and 7 did (one `alert-tally` entity each, every
    threshold's state written out), and remove their buckets: a database from before."""
    with ndb_client.context(namespace=org["namespace"]):
        rules = [r for r in rule_service.all_rules() if not r.deleted]
        for bucket in AlertTallyBucket.query(ancestor=root_key()).fetch():
            records = _subjects(bucket)
            for rule in rules:
                spec = rule_service.spec_of(rule)
                if tallies.bucket_name(spec, bucket.period_start, user) != bucket.key.string_id():
                    continue
                _subject, value, seeded_at, basis, states = records[user]
                for threshold in rule.thresholds:
                    states.setdefault(rule.id_, {}).setdefault(str(threshold), [False, 0])
                AlertTally(
                    key=ndb_key(AlertTally, tallies.tally_name(spec, user, bucket.period_start)),
                    meter_id=rule.meter_id,
                    user_id=user,
                    period_start=bucket.period_start,
                    value=str(value),
                    states=states,
                    seeded_at=tallies._moment(seeded_at),
                    basis=tallies._moment(basis),
                ).put()
            bucket.key.delete()


def ndb_key(model, name):
    return ndb.Key(model, name, parent=root_key())


def test_a_tally_of_the_old_shape_counts_and_is_folded_into_its_bucket(
    api, evaluate, ndb_client, org
):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[5, 10], notifyOnResolve=True)
    api.record(_event(meter, "alice", 6))
    evaluate()
    [first] = triggers(api, rule)
    _to_old_shape(ndb_client, org, "alice")
    tallies.forget_legacy()  # the process started after the upgrade: it has not looked yet
    assert len(_stored(ndb_client, org, AlertTally)) == 1
    assert _stored(ndb_client, org, AlertTallyBucket) == []
    api.record(_event(meter, "alice", 5), _event(meter, "bob", 7))
    evaluate()
    # 5 fired once, at 6: its state came from the old entity (lost, it would fire again
    # with the value 11 and a later time); 10 fires at 11
    assert sorted(crossings(api, rule)) == [
        ("alert.triggered", "alice", 5),
        ("alert.triggered", "alice", 10),
        ("alert.triggered", "bob", 5),
    ]
    by_threshold = {t["threshold"]: t for t in triggers(api, rule) if t["userId"] == "alice"}
    assert by_threshold[5] == first and by_threshold[10]["value"] == 11
    assert _stored(ndb_client, org, AlertTally) == []  # folded in, and deleted
    records = {
        user: record
        for stored in _stored(ndb_client, org, AlertTallyBucket)
        for user, record in _subjects(stored).items()
    }
    assert records["alice"][1] == 11 and records["alice"][4] == {
        rule["id"]: {"5": [True, 0], "10": [True, 0]}
    }


def test_old_shape_tallies_of_periods_long_over_are_swept(api, evaluate, ndb_client, org, config):
    """Over: past the horizon after which the evaluator applies nothing to a period
    (session 9, `retention`); 70 days is not, a cancel may still reach it."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[5])
    now = datetime.now(UTC)
    old = now - retention.tally_keep(config) - retention.SWEEP_LAG - timedelta(days=1)
    with ndb_client.context(namespace=org["namespace"]):
        for name, start in (
            ("t_old", old),
            ("t_reachable", now - timedelta(days=70)),
            ("t_recent", now),
        ):
            AlertTally(
                key=ndb_key(AlertTally, name), period_start=start, value="1", states={}
            ).put()
    api.record(_event(meter, "alice", 1))
    evaluate()
    assert [t.key.string_id() for t in _stored(ndb_client, org, AlertTally)] == [
        "t_reachable",
        "t_recent",
    ]
