"""Deliveries against a real receiver on loopback, verified with the `standardwebhooks`
package (the independent verifier): signatures, retries with the same id and bytes,
timeouts, resets, redirects, the schedule's end, the log, leases, and disabling."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from app import create_app
from app.config import Config
from app.models import utcnow
from app.services import periodic
from app.services.webhooks import dispatch, safety
from tests.conftest import ADMIN_TOKEN
from tests.support.http import Api
from tests.support.receiver import Receiver
from tests.support.server import LiveServer
from tests.support.waiting import eventually

#: The dispatcher of these tests: retries due at once (scale 0), and a timeout short enough
#: for a test yet long enough that a loaded machine's receiver answers within it.
QUICK = dispatch.Settings(production=False, timeout_seconds=5.0, retry_scale=0.0)
#: For the receiver that hangs: the attempt times out after 1 s.
SHORT_TIMEOUT = dataclasses.replace(QUICK, timeout_seconds=1.0)


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def deliver(ndb_client):
    """Run one delivery call (what the cron route runs) in the tests' process."""

    def run(settings=QUICK, now=None) -> periodic.DeliveryRun:
        with ndb_client.context():
            return periodic.deliver_all_orgs(100, settings=settings, now=now)

    return run


def _endpoint(api, receiver, **fields) -> dict:
    answer = api.post("/v1/webhooks/endpoints", json={"url": receiver.url, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _test_message(api, endpoint) -> dict:
    answer = api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test")
    assert answer.status_code == 202, answer.text
    return answer.json()


def _messages(api, endpoint, **params) -> dict:
    answer = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _verified(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def test_a_test_message_is_delivered_signed(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    message = _test_message(api, endpoint)
    assert message["status"] == "pending" and message["id"].startswith("msg_")
    run = deliver()
    assert (run.sent, run.delivered) == (1, 1)
    (request,) = receiver.received
    payload = _verified(endpoint["secret"], request)
    assert payload["type"] == "webhook.test"
    assert payload["data"] == {
        "endpointId": endpoint["id"],
        "message": "a test message from the metering service",
    }
    assert request.headers["webhook-id"] == message["id"]
    assert request.headers["content-type"] == "application/json"
    (logged,) = _messages(api, endpoint)["messages"]
    assert logged["status"] == "delivered" and logged["attemptCount"] == 1
    (attempt,) = logged["attempts"]
    assert attempt["statusCode"] == 200 and attempt["error"] is None
    assert attempt["responseBody"] == "thanks"
    assert logged["payload"] == payload and logged["nextAttemptAt"] is None


def test_meter_created_is_announced_and_verifies(api, receiver, deliver):
    endpoint = _endpoint(api, receiver, eventTypes=["meter.created", "meter.archived"])
    meter = api.create_meter()
    api.patch(f"/v1/billing/meters/{meter['id']}", json={"name": "renamed"})  # not subscribed
    api.delete(f"/v1/billing/meters/{meter['id']}")
    deliver()
    kinds = {}
    for request in receiver.received:
        payload = _verified(endpoint["secret"], request)
        kinds[payload["type"]] = payload["data"]
    assert set(kinds) == {"meter.created", "meter.archived"}
    assert kinds["meter.created"] == meter
    assert kinds["meter.archived"]["status"] == "archived"


def test_a_meter_refused_announces_nothing(api, receiver, deliver):
    _endpoint(api, receiver)
    api.create_meter()
    answer = api.post("/v1/billing/meters", json={"name": "x", "eventName": "input_tokens"})
    assert answer.status_code == 409
    deliver()
    assert len(receiver.of_type("meter.created")) == 1


def test_a_failure_is_retried_with_the_same_id_and_bytes(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    receiver.script = ["error"]
    message = _test_message(api, endpoint)
    first = deliver()
    assert (first.sent, first.undelivered) == (1, 1)
    (pending,) = _messages(api, endpoint, status="pending")["messages"]
    assert pending["attempts"][0]["statusCode"] == 500
    assert pending["attempts"][0]["error"] == "HTTP 500"
    deliver()
    failed, succeeded = receiver.received
    assert failed.body == succeeded.body
    assert failed.headers["webhook-id"] == succeeded.headers["webhook-id"] == message["id"]
    _verified(endpoint["secret"], succeeded)
    (done,) = _messages(api, endpoint, status="delivered")["messages"]
    assert [a["statusCode"] for a in done["attempts"]] == [500, 200]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("hang", "timed out after 1 s"),
        ("reset", "reset"),
        ("redirect", "HTTP 302: redirects are not followed"),
    ],
)
def test_a_bad_answer_is_an_attempt_failed(api, receiver, deliver, mode, error):
    endpoint = _endpoint(api, receiver)
    receiver.mode, receiver.hang_seconds = mode, 2.5
    _test_message(api, endpoint)
    run = deliver(settings=SHORT_TIMEOUT if mode == "hang" else QUICK)
    assert run.undelivered == 1
    (message,) = _messages(api, endpoint)["messages"]
    assert message["status"] == "pending"
    assert error in message["attempts"][0]["error"]
    assert all(r.path == "/hook" for r in receiver.received)  # the redirect was not followed


def test_a_receiver_down_then_up_gets_the_message(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    receiver.down()
    message = _test_message(api, endpoint)
    deliver()
    (logged,) = _messages(api, endpoint)["messages"]
    assert "refused" in logged["attempts"][0]["error"]
    receiver.up()
    deliver()
    (request,) = receiver.received
    assert request.headers["webhook-id"] == message["id"]


def test_the_schedule_ends_in_failed(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    receiver.mode = "error"
    _test_message(api, endpoint)
    for _ in range(len(dispatch.RETRY_DELAYS) + 3):
        deliver()
    (message,) = _messages(api, endpoint)["messages"]
    assert message["status"] == "failed" and message["nextAttemptAt"] is None
    assert message["attemptCount"] == len(dispatch.RETRY_DELAYS) + 1
    assert len(receiver.received) == len(dispatch.RETRY_DELAYS) + 1
    # The retry route: one more attempt, now answered.
    receiver.mode = "ok"
    retried = api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/messages/{message['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "pending"
    deliver()
    (message,) = _messages(api, endpoint)["messages"]
    assert message["status"] == "delivered"


def test_the_retry_schedule_is_the_documented_one():
    settings = dispatch.Settings()
    seconds = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    for attempt, expected in enumerate(seconds, start=1):
        delay = dispatch.retry_delay(attempt, settings).total_seconds()
        assert expected * 0.8 <= delay <= expected * 1.2
    assert dispatch.retry_delay(len(seconds) + 1, settings) is None
    assert sum(seconds) >= 24 * 3600


def test_the_log_pages_newest_first_and_filters_by_status(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    sent = [_test_message(api, endpoint)["id"] for _ in range(3)]
    deliver()
    receiver.mode = "error"
    later = _test_message(api, endpoint)["id"]
    deliver()
    first = _messages(api, endpoint, limit=2)
    rest = _messages(api, endpoint, limit=2, cursor=first["nextCursor"])
    assert [m["id"] for m in first["messages"] + rest["messages"]] == [later, *reversed(sent)]
    assert [m["id"] for m in _messages(api, endpoint, status="pending")["messages"]] == [later]
    assert len(_messages(api, endpoint, status="delivered")["messages"]) == 3
    bad = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages", params={"status": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_two_dispatchers_at_once_send_each_attempt_once(api, receiver, ndb_client):
    endpoint = _endpoint(api, receiver)
    ids = {_test_message(api, endpoint)["id"] for _ in range(12)}
    start = threading.Barrier(2)
    runs = []

    def dispatcher():
        with ndb_client.context():
            start.wait()
            runs.append(periodic.deliver_all_orgs(100, settings=QUICK))

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(ids)
    assert sum(run.sent for run in runs) == 12


def _lease_one(key, now, endpoints):
    """One message leased as a dispatcher leases its batch; None when another dispatcher
    has it (or its transaction lost to theirs)."""
    try:
        leased = dispatch.lease_many([key], now, QUICK, endpoints)
    except Exception:  # noqa: BLE001  (contention: the other dispatcher is taking it)
        return None
    return leased[0] if leased else None


def test_of_two_leases_of_one_message_exactly_one_wins(api, org, receiver, ndb_client):
    """The lease transaction itself (what keeps dispatchers of different processes from
    sending one attempt twice; in one process a sender's message is also not handed out
    twice): many messages, each leased by two threads at once."""
    endpoint = _endpoint(api, receiver)
    for _ in range(10):
        _test_message(api, endpoint)
    with ndb_client.context(namespace=org["namespace"]):
        keys = dispatch.due_keys(utcnow() + timedelta(seconds=1), 100)
        endpoints = {e.key.id(): e for e in dispatch.WebhookEndpoint.query().fetch()}
    assert len(keys) == 10
    now = utcnow()
    start = threading.Barrier(2)
    won: list[list] = [[], []]

    def leaser(slot: int) -> None:
        with ndb_client.context(namespace=org["namespace"]):
            start.wait()
            for key in keys:
                if _lease_one(key, now, endpoints) is not None:
                    won[slot].append(key.id())

    threads = [threading.Thread(target=leaser, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(won[0] + won[1]) == sorted(key.id() for key in keys)


def test_an_expired_lease_sends_the_message_again_with_the_same_id(
    api, org, receiver, ndb_client, deliver
):
    """A sender that died after leasing: the lease expires and the next dispatcher sends."""
    endpoint = _endpoint(api, receiver)
    message = _test_message(api, endpoint)
    with ndb_client.context(namespace=org["namespace"]):
        (key,) = dispatch.due_keys(utcnow() + timedelta(seconds=1), 10)
        endpoints = {e.key.id(): e for e in dispatch.WebhookEndpoint.query().fetch()}
        leased = _lease_one(key, utcnow(), endpoints)  # leased, never sent
    assert leased is not None
    deliver()
    assert receiver.received == []  # still leased
    deliver(now=utcnow() + timedelta(seconds=QUICK.timeout_seconds + 30))
    (request,) = receiver.received
    assert request.headers["webhook-id"] == message["id"]


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_messages_wait(
    api, receiver, deliver, caplog
):
    endpoint = _endpoint(api, receiver)
    receiver.mode = "error"
    _test_message(api, endpoint)
    deliver()  # the first failure: failing since now
    assert api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()["enabled"] is True
    deliver(now=utcnow() + timedelta(days=5, minutes=1))
    state = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()
    assert state["enabled"] is False
    assert "every attempt failed" in state["disabledReason"]
    assert any("disabled" in r.getMessage() for r in caplog.records)
    sent = len(receiver.received)
    receiver.mode = "ok"
    _test_message(api, endpoint)  # waits while disabled
    deliver(now=utcnow() + timedelta(days=5, minutes=2))
    assert len(receiver.received) == sent
    enabled = api.patch(f"/v1/webhooks/endpoints/{endpoint['id']}", json={"enabled": True})
    assert enabled.json()["disabledReason"] is None
    deliver()
    assert {json.loads(r.body)["type"] for r in receiver.received[sent:]} == {"webhook.test"}
    assert len(receiver.received) == sent + 2  # both waiting messages, once each


def test_an_endpoint_that_answered_during_its_run_of_failures_stays_enabled(api, receiver, deliver):
    """Deliveries write nothing to the endpoint (it would be one hot entity); a failure
    five days into a run looks at the log, and a delivery since restarts the run."""
    endpoint = _endpoint(api, receiver)
    receiver.mode = "error"
    _test_message(api, endpoint)
    deliver()  # the first failure: failing since now
    receiver.mode = "ok"
    _test_message(api, endpoint)
    deliver()  # both delivered
    receiver.mode = "error"
    _test_message(api, endpoint)
    deliver(now=utcnow() + timedelta(days=5, minutes=1))
    state = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()
    assert (state["enabled"], state["disabledReason"]) == (True, None)
    deliver(now=utcnow() + timedelta(days=10, minutes=2))  # five days after the new run
    assert api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()["enabled"] is False


def test_a_deleted_endpoints_messages_fail_clearly(api, org, receiver, deliver, ndb_client):
    endpoint = _endpoint(api, receiver)
    message = _test_message(api, endpoint)
    api.delete(f"/v1/webhooks/endpoints/{endpoint['id']}")
    deliver()
    assert receiver.received == []
    with ndb_client.context(namespace=org["namespace"]):
        stored = dispatch.WebhookMessage.query().fetch()
    (only,) = stored
    assert only.message_id == message["id"] and only.status == "failed"
    assert only.attempts[-1]["error"] == "the endpoint was deleted"


def test_during_a_rotation_both_secrets_verify(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    rotated = api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret").json()
    _test_message(api, endpoint)
    deliver()
    (request,) = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert _verified(endpoint["secret"], request)["type"] == "webhook.test"
    assert _verified(rotated["secret"], request)["type"] == "webhook.test"


def test_the_cron_route_delivers(api, admin, receiver):
    endpoint = _endpoint(api, receiver)
    _test_message(api, endpoint)
    answer = admin.get("/v1/cron/deliver")
    assert answer.status_code == 200, answer.text
    assert answer.json()["sent"] == 1 and answer.json()["delivered"] == 1
    _verified(endpoint["secret"], receiver.received[0])


def test_the_background_loop_delivers_and_stops(config, org, receiver):
    """`metering serve`'s loop: a commit that stores a message wakes it (the period here is
    far longer than the wait), and it ends with its server."""
    app = create_app(config.replace(background_delivery_seconds=60))
    deliverer = app.extensions["background_delivery"]
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        endpoint = _endpoint(api, receiver)
        _test_message(api, endpoint)
        eventually(lambda: len(receiver.received) == 1, timeout=10, what="the message sent")
        _verified(endpoint["secret"], receiver.received[0])
    finally:
        server.stop()
    assert not deliverer.thread.is_alive()
    assert "background_delivery" not in app.extensions


def _served_attempts(config, org, receiver, script: list[str], attempts: int, **changes):
    """A test message under a served app's background loop, the receiver answering by
    `script`: the ids of the first `attempts` deliveries, once they came."""
    app = create_app(config.replace(**changes))
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        endpoint = _endpoint(api, receiver)
        receiver.script = list(script)
        message = _test_message(api, endpoint)
        eventually(lambda: len(receiver.received) >= attempts, timeout=10, what="the retries sent")
    finally:
        server.stop()
    return message["id"], [r.headers["webhook-id"] for r in receiver.received[:attempts]]


def test_a_refused_first_attempt_is_sent_again_at_once_by_the_loop(config, org, receiver):
    """The second attempt follows a refused first one at once: the loop's transaction that
    records the refusal leases the message again and its process sends it; the loop's
    timed pass (60 s here) is not what sends it."""
    sent, ids = _served_attempts(
        config, org, receiver, ["error"], 2, background_delivery_seconds=60
    )
    assert ids == [sent] * 2


def test_the_loop_period_is_read_from_the_environment():
    assert Config.from_env({}).background_delivery_seconds == 0
    env = {"METERING_BACKGROUND_DELIVERY_SECONDS": "1.5", "METERING_WEBHOOK_TIMEOUT_SECONDS": "4"}
    config = Config.from_env(env)
    assert (config.background_delivery_seconds, config.webhook_timeout_seconds) == (1.5, 4.0)


def test_the_loops_timed_pass_sends_the_retries(config, org, receiver):
    """A retry due later (the third attempt: 5 s x 0.1 after the second), with no commit
    to wake the loop: the sender's timed pass sends it."""
    sent, ids = _served_attempts(
        config,
        org,
        receiver,
        ["error", "error"],
        3,
        background_delivery_seconds=0.3,
        webhook_retry_scale=0.1,
    )
    assert ids == [sent] * 3


def test_a_long_answer_is_kept_to_one_kib(api, receiver, deliver):
    endpoint = _endpoint(api, receiver)
    receiver.mode, receiver.answer_body = "error", b"x" * 5000
    _test_message(api, endpoint)
    deliver()
    (message,) = _messages(api, endpoint)["messages"]
    assert message["attempts"][0]["responseBody"] == "x" * 1024


def test_the_attempt_log_is_bounded():
    message = dispatch.WebhookMessage(attempts=[], attempt_count=0)
    for number in range(25):
        message.log_attempt({"at": str(number)})
    assert message.attempt_count == 25
    assert [a["at"] for a in message.attempts] == [str(n) for n in range(5, 25)]


def test_production_checks_the_address_again_at_each_send(api, receiver, deliver):
    """Stored while allowed (development), sent by a production dispatcher: the send
    resolves and checks the host again, and refuses the loopback address."""
    production = dispatch.Settings(production=True, timeout_seconds=1, retry_scale=0)
    endpoint = _endpoint(api, receiver)
    _test_message(api, endpoint)
    deliver(settings=production)
    https = receiver.url.replace("http://", "https://")
    api.patch(f"/v1/webhooks/endpoints/{endpoint['id']}", json={"url": https})
    deliver(settings=production)
    assert receiver.received == []
    (message,) = _messages(api, endpoint)["messages"]
    assert [a["error"] for a in message["attempts"]] == [
        "refused: url must use https",
        "refused: url's host resolves to 127.0.0.1, which is not a public address",
    ]


def test_the_send_connects_to_the_checked_address_and_names_the_host(receiver):
    """DNS is asked once, by the check: the connection goes to the checked address while
    the Host header names the URL's host."""
    target = safety.Target("http", "hooks.example", receiver.port, "/hook", "127.0.0.1")
    status, _ = dispatch._post(target, {"content-type": "application/json"}, b"{}", 2)
    assert status == 200
    (request,) = receiver.received
    assert request.headers["host"] == f"hooks.example:{receiver.port}"


def test_a_send_writes_its_head_and_body_at_once(receiver, monkeypatch):
    """Session 13: one write for the whole request, so a sender killed mid-send leaves
    the receiver nothing, or a whole request, never headers without their body."""
    writes: list[bytes] = []
    real = dispatch._PinnedHTTPConnection.send

    def send(self, data):
        writes.append(bytes(data))
        return real(self, data)

    monkeypatch.setattr(dispatch._PinnedHTTPConnection, "send", send)
    target = safety.Target("http", "127.0.0.1", receiver.port, "/hook", "127.0.0.1")
    body = json.dumps({"type": "webhook.test", "data": {"n": 1}}).encode()
    status, _ = dispatch._post(target, {"content-type": "application/json"}, body, 2)
    assert status == 200
    assert len(writes) == 1 and writes[0].startswith(b"POST /hook ") and writes[0].endswith(body)
    (request,) = receiver.received
    assert request.body == body


def test_a_cron_call_starts_no_send_that_could_outlast_its_deadline(serve, org, receiver):
    """A request's deadline (5 s) shorter than one send's timeout (10 s): the call sends
    nothing and says it is not complete, rather than run past its deadline."""
    url = serve(request_deadline_seconds=5)
    api = Api(url, org["apiKey"])
    _test_message(api, _endpoint(api, receiver))
    answer = Api(url, ADMIN_TOKEN).get("/v1/cron/deliver")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["sent"], answer.json()["complete"]) == (0, False)
    assert receiver.received == []


def test_a_hung_endpoint_does_not_hold_the_others(config, org):
    """An endpoint that hangs with many messages due holds PER_ENDPOINT senders at most:
    another endpoint's message goes out before the hung one's later messages."""
    hung, healthy = Receiver().start(), Receiver().start()
    hung.mode, hung.hang_seconds = "hang", 4.0
    app = create_app(config.replace(background_delivery_seconds=0.2))
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        slow = _endpoint(api, hung)
        for _ in range(dispatch.PER_ENDPOINT + 4):
            _test_message(api, slow)
        eventually(lambda: len(hung.received) >= 1, timeout=10, what="the hung sends")
        _test_message(api, _endpoint(api, healthy))
        eventually(lambda: len(healthy.received) == 1, timeout=30, what="the other's message")
        eventually(
            lambda: len(hung.received) == dispatch.PER_ENDPOINT + 4,
            timeout=60,
            what="the hung endpoint's later messages",
        )
    finally:
        server.stop()
        hung.stop()
        healthy.stop()
    arrivals = sorted(r.at for r in hung.received)
    assert len([at for at in arrivals if at < healthy.received[0].at]) <= dispatch.PER_ENDPOINT
