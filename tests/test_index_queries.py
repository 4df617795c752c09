"""One summary per composite index of index.yaml, each reaching the query that needs it.

On the legacy emulator (--require_indexes) these prove index.yaml declares enough;
scripts/check_indexes.py runs them with each index removed in turn to prove that
every declared index is needed. Periods between slot boundaries read raw events at
their edges (meter-event indexes); periods on day boundaries read rollups only
(meter-rollup and meter-org-rollup indexes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.services.alerts import rules
from tests.support.alerts import create_rule, run_evaluator

BASE = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
# Outside, inside, inside, outside the unaligned period [BASE+10m, BASE+55m).
MINUTES = (7, 20, 50, 56)


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _record_two_users(api) -> dict:
    meter = api.create_meter()
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": user,
                "value": value,
                "timestamp": _at(BASE + timedelta(minutes=minute)),
            }
            for user, value in (("u1", 1), ("u2", 100))
            for minute in MINUTES
        ]
    )
    return meter


def _unaligned(**params) -> dict:
    return {
        "periodStart": _at(BASE + timedelta(minutes=10)),
        "periodEnd": _at(BASE + timedelta(minutes=55)),
        **params,
    }


def _whole_days(**params) -> dict:
    return {
        "periodStart": (BASE - timedelta(days=1)).date().isoformat(),
        "periodEnd": (BASE + timedelta(days=1)).date().isoformat(),
        **params,
    }


def test_events_of_a_meter_in_a_time_range_all_users(api):
    """meter-event (MeterId, Timestamp)."""
    meter = _record_two_users(api)
    assert api.summary(meterId=meter["id"], **_unaligned())["value"] == 2 * 101


def test_events_of_a_meter_and_user_in_a_time_range(api):
    """meter-event (MeterId, UserId, Timestamp)."""
    meter = _record_two_users(api)
    assert api.summary(meterId=meter["id"], **_unaligned(userId="u2"))["value"] == 200


def test_org_wide_rollups_of_a_meter_over_days(api):
    """meter-org-rollup (MeterId, Day): a summary of all users."""
    meter = _record_two_users(api)
    assert api.summary(meterId=meter["id"], **_whole_days())["value"] == 4 * 101


def test_rollups_of_a_meter_over_days_all_users(api):
    """meter-rollup (MeterId, Day): every user's rollups, as a filter on users reads them."""
    meter = _record_two_users(api)
    answer = api.get(
        "/v1/billing/meter-events/summary",
        params=[
            ("meterId", meter["id"]),
            *_whole_days().items(),
            ("filter[userId]", "u1"),
            ("filter[userId]", "u2"),
        ],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["value"] == 4 * 101


def test_rollups_of_a_meter_and_user_over_days(api):
    """meter-rollup (MeterId, UserId, Day)."""
    meter = _record_two_users(api)
    assert api.summary(meterId=meter["id"], **_whole_days(userId="u1"))["value"] == 4


def _listed(api, **params) -> list[int]:
    answer = api.get("/v1/billing/meter-events", params=params)
    assert answer.status_code == 200, answer.text
    return [event["value"] for event in answer.json()["events"]]


def test_recent_events_of_a_meter(api):
    """meter-event (MeterId, Timestamp desc): the event list, newest first."""
    meter = _record_two_users(api)
    assert sorted(_listed(api, meterId=meter["id"], limit=2)) == [1, 100]  # both at minute 56


def test_recent_events_of_a_user(api):
    """meter-event (MeterId, UserId, Timestamp desc): the event list searched by user."""
    meter = _record_two_users(api)
    assert _listed(api, meterId=meter["id"], userId="u1") == [1, 1, 1, 1]


# -- issue 14, alerts ------------------------------------------------------------------


def _alerted(api, app, ndb_client, org) -> dict:
    """A rule whose threshold a recorded event crossed, with the evaluator run."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[1, 2])
    api.record({"meterId": meter["id"], "userId": "u1", "value": 5})
    assert run_evaluator(app, ndb_client, org) == 1
    return rule


def test_triggers_of_an_alert_rule_newest_first(api, app, ndb_client, org):
    """alert-trigger (AlertId, At desc): a rule's triggers, read by the service itself so
    that a missing index fails here with the emulator's own words."""
    rule = _alerted(api, app, ndb_client, org)
    with app.test_request_context(), ndb_client.context(namespace=org["namespace"]):
        page, _cursor = rules.list_triggers(rule["id"], 10, None)
    assert sorted(t.threshold for t in page) == [1, 2]


# -- issue 14, webhooks --------------------------------------------------------------------


def _endpoint_with_a_message(api) -> dict:
    endpoint = api.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/x"}).json()
    assert api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test").status_code == 202
    return endpoint


def test_due_webhook_messages(api, admin):
    """webhook-message (Status, NextAttemptAt)."""
    _endpoint_with_a_message(api)
    answer = admin.get("/v1/cron/deliver")  # port 9 refuses: one attempt, failed
    assert answer.status_code == 200, answer.text
    assert answer.json()["sent"] == 1


def test_an_endpoints_message_log(api):
    """webhook-message (EndpointId, CreatedAt desc)."""
    endpoint = _endpoint_with_a_message(api)
    answer = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages")
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1


def test_an_endpoints_message_log_of_one_status(api):
    """webhook-message (EndpointId, Status, CreatedAt desc)."""
    endpoint = _endpoint_with_a_message(api)
    answer = api.get(
        f"/v1/webhooks/endpoints/{endpoint['id']}/messages", params={"status": "pending"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1


# -- issue 17, corrections --


def test_corrections_of_an_org_newest_first(api):
    """meter-correction (CreatedAt desc): the org's corrections, newest first."""
    meter = _record_two_users(api)
    answer = api.post(
        "/v1/billing/meter-events/cancel",
        json={
            "meterId": meter["id"],
            "periodStart": _at(BASE),
            "periodEnd": _at(BASE + timedelta(minutes=30)),
        },
    )
    assert answer.status_code == 200, answer.text
    listed = api.get("/v1/billing/meter-events/corrections")
    assert listed.status_code == 200, listed.text
    assert [c["cancelled"] for c in listed.json()["corrections"]] == [4]
