"""Alert evaluation: crossings for each scope and period, exactly once, resolutions."""

from __future__ import annotations

import pytest

from tests.support.alerts import create_rule, crossings, minutes_ago, run_evaluator, triggers


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
    found = [t for t in triggers(api, rule) if t["userId"] == "alice"][0]
    assert found["value"] == 11 and found["alertId"] == rule["id"]
    assert found["messageId"].startswith("msg_") and len(found["messageId"]) == 30
