"""Within a rule's first half minute (before its basis: batches of processes whose rule
cache was stale may still commit without a feed) a per-user period is seeded whole too,
provisionally (session 9): a user new to it needs no seed of its own until the basis has
passed; then the period is seeded whole again and what the provisional read could not
know (a batch committed without a feed) is counted."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from app.services.alerts import evaluate as evaluate_module
from app.services.alerts import feed as feed_module
from app.services.alerts import seed as seed_module
from app.services.alerts import tallies
from tests import test_alerts_seed_period as by_period
from tests.support.alerts import create_rule, run_evaluator, triggers
from tests.test_alerts_seed_period import _buckets, _event, _values

seeds = by_period.seeds  # the fixture: what was read, whole or a tally at a time


@pytest.fixture
def window(monkeypatch):
    """The delay from a rule's creation to its basis: an hour (within it) until the test
    sets `passed` (then 0: the basis has passed)."""
    state = {"passed": False}
    real = evaluate_module._settings

    def settings(hand_off=None):
        complete = timedelta(0) if state["passed"] else timedelta(hours=1)
        return dataclasses.replace(real(hand_off), complete=complete)

    monkeypatch.setattr(evaluate_module, "_settings", settings)
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    seed_module._too_big.clear()
    yield state
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()


def _fired(api, rule) -> dict:
    return {(t["userId"], t["threshold"]): t["value"] for t in triggers(api, rule)}


def test_a_period_seeded_whole_within_the_window_is_seeded_again_once_it_has_passed(
    api, app, ndb_client, org, window, seeds, monkeypatch
):
    meter = api.create_meter()
    api.record(_event(meter, "u", 8, minutes=20), _event(meter, "v", 30, minutes=20))
    rule = create_rule(api, meter, thresholds=[10, 40])
    api.record(_event(meter, "u", 1), _event(meter, "y", 10))
    run_evaluator(app, ndb_client, org)
    assert [kind for kind, _spec in seeds] == ["period"]  # provisional: one read
    assert all(b.whole is not None and b.whole_at is not None for b in _buckets(ndb_client, org))
    assert _values(ndb_client, org) == {"u": 9, "v": 30, "y": 10}
    # Users new to the period within the window need no read of their own.
    api.record(_event(meter, "v", 10), _event(meter, "z", 3))
    run_evaluator(app, ndb_client, org)
    assert [kind for kind, _spec in seeds] == ["period"]
    assert _fired(api, rule) == {("y", 10): 10, ("v", 10): 40, ("v", 40): 40}
    # A batch of a process whose rule cache was stale: stored without a feed.
    with monkeypatch.context() as stale:
        stale.setattr(feed_module, "meters_with_rules", lambda meter_key_ids: set())
        api.record(_event(meter, "q", 50))
    window["passed"] = True
    api.record(_event(meter, "q", 1), _event(meter, "z", 1))
    run_evaluator(app, ndb_client, org)
    assert seeds.count(("period", seeds[0][1])) == 2  # seeded whole again, for good
    assert all(b.whole_at is None for b in _buckets(ndb_client, org))
    assert _fired(api, rule) == {
        ("y", 10): 10,
        ("v", 10): 40,
        ("v", 40): 40,
        ("q", 10): 51,
        ("q", 40): 51,
    }
    assert _values(ndb_client, org) == {"u": 9, "v": 40, "y": 10, "z": 4, "q": 51}


def test_a_chunk_that_would_seed_too_many_tallies_one_at_a_time_is_halved(
    api, app, ndb_client, org, window, seeds, monkeypatch
):
    """Session 16: with the grouped read too big, a chunk seeded each of its tallies with
    a summary of its own, all in one read-only transaction; with 500 users that
    outlived the transaction, and the chunk failed again at every round. A chunk of
    several feeds now seeds at most SINGLE_SEEDS that way, and is halved past it."""
    window["passed"] = True
    monkeypatch.setattr(seed_module, "GROUPED_ENTITIES", 1)  # every grouped read too big
    monkeypatch.setattr(seed_module, "SINGLE_SEEDS", 2)
    seed_module._too_big.clear()
    refused: list[int] = []
    real_values = seed_module._values

    def values(meter, touches, single_limit=None):
        try:
            return real_values(meter, touches, single_limit)
        except seed_module.TooManySingle:
            refused.append(len(touches))
            raise

    monkeypatch.setattr(seed_module, "_values", values)
    meter = api.create_meter()
    users = [f"user-{n}" for n in range(6)]
    api.record(*[_event(meter, user, 5, minutes=20) for user in users])  # before the rule
    rule = create_rule(api, meter, thresholds=[10, 40])
    api.record(*[_event(meter, user, 5) for user in users[:3]])  # one feed
    api.record(*[_event(meter, user, 5) for user in users[3:]])  # another
    api.record(_event(meter, users[0], 40))  # and a third
    run_evaluator(app, ndb_client, org)
    assert refused and max(refused) > 2  # the whole chunk was refused, then halved
    tally_seeds = [subject for kind, subject in seeds if kind == "tally"]
    assert sorted(tally_seeds) == sorted(users)  # each user's tally seeded once
    fired = _fired(api, rule)  # feeds apply in any order: user-0's third may come first
    assert set(fired) == {*((user, 10) for user in users), (users[0], 40)}
    assert all(fired[(user, 10)] == 10 for user in users[1:])
    assert _values(ndb_client, org) == {**dict.fromkeys(users, 10), users[0]: 50}
