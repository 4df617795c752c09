"""Alert messages delivered for real: the outbox of the webhooks work, a loopback receiver,
and the `standardwebhooks` package as the independent verifier."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from app import background, create_app
from app.models import AlertFeed, root_key
from app.services import periodic
from app.services.alerts import evaluate
from app.services.webhooks import dispatch, outbox
from app.storage import journal
from tests.support.alerts import create_rule, minutes_ago, triggers
from tests.support.http import Api
from tests.support.receiver import Receiver
from tests.support.server import LiveServer
from tests.support.waiting import eventually

QUICK = dispatch.Settings(production=False, timeout_seconds=5.0, retry_scale=0.0)


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def deliver(app, ndb_client):
    """One delivery call (alert evaluation, then sends), as the cron route runs it."""

    def run() -> periodic.DeliveryRun:
        with app.app_context(), ndb_client.context():
            return periodic.deliver_all_orgs(100, settings=QUICK)

    return run


def _endpoint(api, receiver) -> dict:
    answer = api.post("/v1/webhooks/endpoints", json={"url": receiver.url})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _alerts(receiver) -> list:
    """What the receiver got of alert.* messages (meter.* announcements left out)."""
    return [r for r in receiver.received if json.loads(r.body)["type"].startswith("alert.")]


def _payloads(receiver, secret) -> list[dict]:
    return [Webhook(secret).verify(r.body, r.headers) for r in _alerts(receiver)]


@contextlib.contextmanager
def _served(config, org, receiver):
    """`metering serve`'s background loop in a served app (its timed pass 60 s away, far
    longer than any wait here), with an endpoint on the receiver: (api, endpoint)."""
    app = create_app(config.replace(background_delivery_seconds=60))
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        yield api, _endpoint(api, receiver)
    finally:
        server.stop()


def test_a_crossing_and_its_resolution_arrive_signed_once_each(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10], notifyOnResolve=True)
    [event] = api.record(
        {"meterId": meter["id"], "userId": "u", "value": 12, "timestamp": minutes_ago(5)}
    )["events"]
    deliver()
    deliver()
    [triggered] = _payloads(receiver, endpoint["secret"])
    [trigger] = triggers(api, rule)
    assert _alerts(receiver)[0].headers["webhook-id"] == trigger["messageId"]
    assert triggered["type"] == "alert.triggered"
    assert triggered["data"] == {
        "alertId": rule["id"],
        "meterId": meter["id"],
        "userId": "u",
        "threshold": 10,
        "value": 12,
        "periodStart": trigger["periodStart"],
        "periodEnd": trigger["periodEnd"],
        "triggeredAt": trigger["at"],
    }

    api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": event["id"]}]})
    deliver()
    deliver()
    payloads = _payloads(receiver, endpoint["secret"])
    assert [p["type"] for p in payloads] == ["alert.triggered", "alert.resolved"]
    assert payloads[1]["data"]["value"] == 0 and "resolvedAt" in payloads[1]["data"]
    assert len({r.headers["webhook-id"] for r in _alerts(receiver)}) == 2


@pytest.mark.parametrize("bound", [{"evaluate_budget": 1}, {"evaluate_seconds": 0.0}])
def test_a_call_with_an_evaluation_budget_sends_what_it_evaluated_and_says_more_is_due(
    api, app, ndb_client, receiver, monkeypatch, bound
):
    """The background loop evaluates a chunk, sends its messages, and comes back for the
    rest: the first crossings of a backlog are not held until all of it is evaluated."""
    _endpoint(api, receiver)
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[10])
    for user in ("a", "b"):  # two batches: two feeds
        api.record(
            {"meterId": meter["id"], "userId": user, "value": 12, "timestamp": minutes_ago(5)}
        )

    monkeypatch.setattr(evaluate, "CHUNK_FEEDS", 1)  # a chunk per feed

    def deliver_one_feed() -> periodic.DeliveryRun:
        with app.app_context(), ndb_client.context():
            return periodic.deliver_all_orgs(100, settings=QUICK, **bound)

    first = deliver_one_feed()
    assert (first.evaluated, first.complete) == (1, False)
    assert len(_alerts(receiver)) == 1  # sent before the second feed was evaluated
    second = deliver_one_feed()
    assert second.evaluated == 1
    assert sorted(json.loads(r.body)["data"]["userId"] for r in _alerts(receiver)) == ["a", "b"]


def test_the_background_loop_delivers_a_crossing(config, org, receiver):
    """Under `metering serve` the batch's commit wakes the loop, which evaluates the feed and
    sends the message (the loop's period here is far longer than the wait)."""
    with _served(config, org, receiver) as (api, endpoint):
        meter = api.create_meter()
        create_rule(api, meter, thresholds=[3], scope="org")
        api.record({"meterId": meter["id"], "userId": "a", "value": 2})
        api.record({"meterId": meter["id"], "userId": "b", "value": 2})
        eventually(lambda: len(_alerts(receiver)) >= 1, timeout=15, what="the alert sent")
    [payload] = _payloads(receiver, endpoint["secret"])
    assert payload["type"] == "alert.triggered" and payload["data"]["value"] == 4
    assert json.loads(_alerts(receiver)[0].body)["data"]["userId"] is None


def test_the_loops_crossing_leaves_from_the_evaluators_commit_without_a_dispatch(
    config, org, receiver, monkeypatch
):
    """Under `metering serve` the evaluator's commit leases the crossing's message and hands
    it to this process's senders: no query for due messages finds it (none may, here)."""
    monkeypatch.setattr(dispatch, "due_keys", lambda now, limit: [])
    with _served(config, org, receiver) as (api, endpoint):
        meter = api.create_meter()
        create_rule(api, meter, thresholds=[3])
        api.record({"meterId": meter["id"], "userId": "a", "value": 5})
        eventually(lambda: len(_alerts(receiver)) == 1, timeout=15, what="the alert sent")
        [message] = eventually(
            lambda: [
                m
                for m in api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()[
                    "messages"
                ]
                if m["eventType"] == "alert.triggered" and m["status"] == "delivered"
            ],
            timeout=10,
            what="the attempt recorded",
        )
    [payload] = _payloads(receiver, endpoint["secret"])
    assert payload["data"]["value"] == 5 and message["attemptCount"] == 1


def test_a_message_leased_at_its_commit_by_a_process_that_died_is_sent_once_its_lease_ends(
    app, ndb_client, org, api, receiver, monkeypatch
):
    """The evaluator's commit leased the message for its own process, which died before
    handing it to a sender: nobody sends it during the lease, any dispatcher once it ended,
    exactly once."""
    meter = api.create_meter()  # before the endpoint: no meter.created message for it
    endpoint = _endpoint(api, receiver)
    create_rule(api, meter, thresholds=[3])
    api.record({"meterId": meter["id"], "userId": "a", "value": 5})
    monkeypatch.setattr(dispatch, "hand_off", lambda leased, settings: None)  # it died here
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100, hand_off=QUICK) == 1
        assert dispatch.dispatch_org(100, QUICK).leased == 0  # still leased: not sent
        later = dispatch.utcnow() + timedelta(seconds=QUICK.timeout_seconds + 11)
        assert dispatch.dispatch_org(100, QUICK, now=later).delivered == 1
        assert dispatch.dispatch_org(100, QUICK, now=later).leased == 0
    [payload] = _payloads(receiver, endpoint["secret"])
    assert payload["type"] == "alert.triggered" and payload["data"]["value"] == 5


def test_a_message_leased_at_its_commit_is_in_the_journal_before_its_hand_off(
    app, config, ndb_client, org, api, receiver, monkeypatch, tmp_path
):
    """The commit that leases a crossing's message for this process notes the lease in
    the process's transaction journal first: killed before the hand-off, the process
    leaves the message to a restart to make due at once, not to its lease to run out."""
    meter = api.create_meter()
    _endpoint(api, receiver)
    create_rule(api, meter, thresholds=[3])
    api.record({"meterId": meter["id"], "userId": "a", "value": 5})
    monkeypatch.setattr(dispatch, "hand_off", lambda leased, settings: None)  # it died here
    monkeypatch.setattr(journal, "_journal", None)
    create_app(config.replace(transaction_journal_dir=str(tmp_path)))  # this process's
    try:
        with app.app_context(), ndb_client.context(namespace=org["namespace"]):
            assert evaluate.evaluate_org(100, hand_off=QUICK) == 1
            [message] = dispatch.WebhookMessage.query(ancestor=root_key()).fetch()
        [written] = list(tmp_path.glob("*" + journal.SUFFIX))
        noted = journal.left_held(written.read_text())
        assert (message.key.urlsafe().decode(), message.lease) in noted
    finally:
        journal._journal = None


def _record_retried(api, event: dict) -> None:
    """Record one event, again after a 503 (`Api.post_retried`)."""
    answer = api.post_retried("/v1/billing/meter-events", json={"events": [event]})
    assert answer.status_code == 201, answer.text


def test_the_lease_holder_looks_for_feeds_another_process_recorded(
    config, org, receiver, monkeypatch
):
    """A batch recorded by another worker wakes that worker's loop, which leaves the meter
    to the process holding its lease: the holder looks for such feeds every POLL_SECONDS
    while it holds the lease, so the crossing does not wait for its timed round (60 s
    here). The other worker is simulated by a commit that wakes no loop here."""
    monkeypatch.setattr(evaluate, "LEASE_SECONDS", 60.0)
    monkeypatch.setattr(evaluate, "IDLE_RELEASE_SECONDS", 60.0)
    with _served(config, org, receiver) as (api, endpoint):
        meter = api.create_meter()
        create_rule(api, meter, thresholds=[3])
        _record_retried(api, {"meterId": meter["id"], "userId": "a", "value": 3})  # wakes
        eventually(lambda: len(_alerts(receiver)) == 1, timeout=10, what="a's alert sent")
        assert org["namespace"] in evaluate.held_orgs()
        time.sleep(1.0)  # the rounds a's batch woke are over: the loop waits now
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(outbox, "wake_org", lambda *args, **kwargs: None)
            _record_retried(api, {"meterId": meter["id"], "userId": "b", "value": 5})
        eventually(lambda: len(_alerts(receiver)) == 2, timeout=10, what="b's alert sent")
    payloads = _payloads(receiver, endpoint["secret"])
    assert [(p["data"]["userId"], p["data"]["value"]) for p in payloads] == [("a", 3), ("b", 5)]


def test_a_graceful_stop_evaluates_what_is_pending_and_sends_it_before_it_ends(
    config, org, receiver, ndb_client
):
    """(Session 15) `background.drain`, which a worker stopped with SIGTERM or Ctrl-C runs
    before it exits: a crossing whose round waits for the pace (30 s here, after a
    caught-up round) is evaluated by one last unpaced round and delivered, and the
    drain returns once its attempt is recorded, well within DRAIN_SECONDS."""
    app = create_app(config.replace(background_delivery_seconds=60, alert_round_spacing_seconds=30))
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        endpoint = _endpoint(api, receiver)
        meter = api.create_meter()
        rule = create_rule(api, meter, thresholds=[10])
        event = {"meterId": meter["id"], "userId": "u", "timestamp": minutes_ago(5)}
        api.record({**event, "value": 4})

        def feeds_left() -> int:
            with ndb_client.context(namespace=org["namespace"]):
                return len(AlertFeed.query().fetch(keys_only=True))

        eventually(lambda: feeds_left() == 0, 20, "the first batch evaluated (a round noted)")
        api.record({**event, "value": 7})
        time.sleep(0.5)
        assert feeds_left() == 1 and _alerts(receiver) == []  # the pace holds it
        began = time.monotonic()
        background.drain(app)
        assert time.monotonic() - began < background.DRAIN_SECONDS
        [triggered] = _payloads(receiver, endpoint["secret"])
        assert (triggered["data"]["threshold"], triggered["data"]["value"]) == (10, 11)
        assert feeds_left() == 0
        [trigger] = triggers(api, rule)
        messages = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()
        [message] = [m for m in messages["messages"] if m["id"] == trigger["messageId"]]
        assert message["status"] == "delivered"  # recorded before the drain returned
    finally:
        server.stop()
