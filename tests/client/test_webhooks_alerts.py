"""The client's webhook endpoint and alert rule calls against the real service, and
`verify_webhook` on real deliveries to a loopback receiver (checked by `standardwebhooks`
too)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import standardwebhooks

from metering_client import (
    ALL_EVENT_TYPES,
    Alert,
    ApiError,
    AsyncMeteringClient,
    Event,
    Page,
    WebhookEndpoint,
    WebhookMessage,
    WebhookVerificationError,
    verify_webhook,
)
from tests.client.conftest import FAST_RETRY
from tests.support.receiver import Receiver
from tests.support.waiting import eventually


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def deliver(admin):
    """Run one round of the delivery loop (evaluate alerts, send due messages) now, as
    App Engine's cron does; the tests' app has no background loop."""

    def run() -> dict:
        answer = admin.get("/v1/cron/deliver")
        assert answer.status_code == 200, answer.text
        return answer.json()

    return run


def delivered(metering, deliver, endpoint_id: str, message_id: str) -> WebhookMessage:
    """The message once the service has delivered it (rounds of delivery until then)."""

    def done():
        deliver()
        page = metering.list_webhook_messages(endpoint_id, status="delivered")
        return next((m for m in page.items if m.id == message_id), None)

    return eventually(done, 30, f"message {message_id} delivered", interval=0.3)


def both_verify(received, secret) -> dict:
    payload = verify_webhook(received.body, received.headers, secret)
    assert standardwebhooks.Webhook(secret).verify(received.body, received.headers) == payload
    return payload


def test_endpoints_are_created_listed_changed_rotated_and_deleted(metering):
    endpoint = metering.create_webhook_endpoint(
        "http://127.0.0.1:9/hook", description="billing", event_types=["alert.triggered"]
    )
    assert isinstance(endpoint, WebhookEndpoint)
    assert endpoint.secret.startswith("whsec_") and endpoint.enabled
    assert (endpoint.url, endpoint.description, endpoint.event_types) == (
        "http://127.0.0.1:9/hook",
        "billing",
        ("alert.triggered",),
    )
    read = metering.get_webhook_endpoint(endpoint.id)
    assert read.secret is None and read.id == endpoint.id  # shown once
    everything = metering.create_webhook_endpoint("http://127.0.0.1:9/all")
    assert everything.event_types is None
    listed = metering.list_webhook_endpoints(page_size=1)  # two pages, both read
    assert [e.id for e in listed] == [endpoint.id, everything.id]
    assert all(e.secret is None for e in listed)

    off = metering.update_webhook_endpoint(endpoint.id, enabled=False, description="paused")
    assert (off.enabled, off.description) == (False, "paused")
    on = metering.update_webhook_endpoint(endpoint.id, enabled=True, event_types=ALL_EVENT_TYPES)
    assert on.enabled and on.event_types is None
    kept = metering.update_webhook_endpoint(endpoint.id, enabled=None, description="again")
    assert kept.enabled and kept.description == "again"  # None: not given, left as it is
    with pytest.raises(TypeError):
        metering.update_webhook_endpoint(endpoint.id, secret="whsec_x")

    rotated = metering.rotate_webhook_secret(endpoint.id)
    assert rotated.secret.startswith("whsec_") and rotated.secret != endpoint.secret

    deleted = metering.delete_webhook_endpoint(endpoint.id)
    assert deleted is not None and deleted.id == endpoint.id
    assert [e.id for e in metering.list_webhook_endpoints()] == [everything.id]
    with pytest.raises(ApiError) as gone:
        metering.get_webhook_endpoint(endpoint.id)
    assert gone.value.status == 404
    with pytest.raises(ApiError) as refused:
        metering.create_webhook_endpoint("ftp://example.com/hook")
    assert refused.value.status == 400 and refused.value.param == "url"


def test_a_test_message_reaches_the_receiver_signed_and_logged(metering, receiver, deliver):
    endpoint = metering.create_webhook_endpoint(receiver.url)
    queued = metering.send_test_webhook(endpoint.id)
    assert (queued.event_type, queued.endpoint_id) == ("webhook.test", endpoint.id)
    assert queued.status == "pending" and queued.payload["type"] == "webhook.test"

    message = delivered(metering, deliver, endpoint.id, queued.id)
    [received] = [r for r in receiver.received if r.headers["webhook-id"] == queued.id]
    payload = both_verify(received, endpoint.secret)
    assert payload == dict(message.payload) and payload["data"]["endpointId"] == endpoint.id
    assert [(a.status_code, a.error) for a in message.attempts] == [(200, None)]
    assert message.attempts[0].response_body == "thanks" and message.attempt_count == 1
    with pytest.raises(WebhookVerificationError):
        verify_webhook(received.body + b" ", received.headers, endpoint.secret)


def test_after_a_rotation_both_secrets_verify(metering, receiver, deliver):
    endpoint = metering.create_webhook_endpoint(receiver.url, event_types=["webhook.test"])
    new = metering.rotate_webhook_secret(endpoint.id).secret
    queued = metering.send_test_webhook(endpoint.id)
    delivered(metering, deliver, endpoint.id, queued.id)
    [received] = [r for r in receiver.received if r.headers["webhook-id"] == queued.id]
    assert len(received.headers["webhook-signature"].split()) == 2
    for secret in (endpoint.secret, new, [new, endpoint.secret]):
        assert verify_webhook(received.body, received.headers, secret)["type"] == "webhook.test"
    for secret in (endpoint.secret, new):
        standardwebhooks.Webhook(secret).verify(received.body, received.headers)


def test_a_failed_attempt_is_logged_and_retried_with_the_same_id_and_body(
    metering, receiver, deliver
):
    endpoint = metering.create_webhook_endpoint(receiver.url)
    receiver.mode = "error"
    queued = metering.send_test_webhook(endpoint.id)

    def failed_once():
        deliver()
        [message] = [m for m in metering.list_webhook_messages(endpoint.id).items]
        return message if message.attempts else None

    message = eventually(failed_once, 30, "a first attempt")
    assert message.status == "pending" and message.next_attempt_at is not None
    assert message.attempts[0].status_code == 500
    assert metering.list_webhook_messages(endpoint.id, status="delivered").items == []

    receiver.mode = "ok"
    again = metering.retry_webhook_message(endpoint.id, queued.id)
    assert again.id == queued.id and again.status == "pending"
    done = delivered(metering, deliver, endpoint.id, queued.id)
    assert [a.status_code for a in done.attempts] == [500, 200]
    bodies = {r.body for r in receiver.received if r.headers["webhook-id"] == queued.id}
    assert len(bodies) == 1  # every attempt sent the same bytes
    both_verify(receiver.received[-1], endpoint.secret)


def test_the_message_log_pages(metering):
    endpoint = metering.create_webhook_endpoint("http://127.0.0.1:9/hook")
    sent = [metering.send_test_webhook(endpoint.id).id for _ in range(3)]
    first = metering.list_webhook_messages(endpoint.id, limit=2)
    assert isinstance(first, Page) and len(first.items) == 2 and first.next_cursor
    rest = metering.list_webhook_messages(endpoint.id, limit=2, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert sorted(m.id for m in first.items + rest.items) == sorted(sent)


def test_alert_rules_are_created_listed_changed_and_archived(metering):
    meter = metering.create_meter("Tokens", "tokens", dimensions=["model"])
    alert = metering.create_alert(
        "Daily tokens",
        meter.id,
        [100, 10],
        scope={"userId": "u-1"},
        period="day",
        time_zone="Asia/Kolkata",
        filter={"model": "gpt-4"},
        notify_on_resolve=True,
    )
    assert isinstance(alert, Alert)
    assert (alert.thresholds, alert.scope, alert.period, alert.time_zone) == (
        (10, 100),
        {"userId": "u-1"},
        "day",
        "Asia/Kolkata",
    )
    assert alert.filter == {"model": "gpt-4"} and alert.notify_on_resolve and not alert.archived
    org_wide = metering.create_alert("Org", meter.id, [1_000_000], scope="org")
    assert (org_wide.scope, org_wide.period, org_wide.time_zone) == ("org", "month", "UTC")
    assert metering.get_alert(alert.id) == alert
    listed = metering.list_alerts(page_size=1)  # two pages, both read
    assert sorted(a.id for a in listed) == sorted([alert.id, org_wide.id])

    changed = metering.update_alert(
        alert.id, thresholds=[50], name="Tokens", notify_on_resolve=False
    )
    assert (changed.name, changed.thresholds, changed.notify_on_resolve) == ("Tokens", (50,), False)

    archived = metering.archive_alert(alert.id)
    assert archived.archived
    assert [a.id for a in metering.list_alerts()] == [org_wide.id]
    assert {a.id for a in metering.list_alerts(include_archived=True)} == {alert.id, org_wide.id}

    last = metering.create_meter("Seats", "seats", aggregation_type="last")
    with pytest.raises(ApiError) as refused:
        metering.create_alert("Seats", last.id, [5])
    assert refused.value.status == 400 and "last" in refused.value.message


def test_a_crossing_is_listed_as_a_trigger_and_sent_once(metering, receiver, deliver):
    meter = metering.create_meter("Calls", "calls", aggregation_type="count")
    alert = metering.create_alert("Calls", meter.id, [3, 5], scope="user", period="day")
    endpoint = metering.create_webhook_endpoint(receiver.url, event_types=["alert.triggered"])
    now = datetime.now(UTC)
    metering.send_now(_events("calls", "u-1", 4, now) + _events("calls", "u-2", 1, now))

    def triggered():
        deliver()
        return len(receiver.of_type("alert.triggered")) >= 1 or None

    eventually(triggered, 30, "the alert.triggered message")
    page = metering.list_alert_triggers(alert.id)
    [trigger] = page.items
    assert (trigger.type, trigger.user_id, trigger.threshold) == ("alert.triggered", "u-1", 3)
    assert 3 <= trigger.value <= 4  # the day's count when the crossing was seen
    assert page.next_cursor is None
    [received] = receiver.of_type("alert.triggered")
    payload = both_verify(received, endpoint.secret)
    assert received.headers["webhook-id"] == trigger.message_id
    assert payload["data"]["alertId"] == alert.id and payload["data"]["threshold"] == 3


def _events(event_name, user, count, at):
    return [Event.new(event_name=event_name, user_id=user, timestamp=at) for _ in range(count)]


def _lose_the_first(path: str):
    """A proxy plan: the first POST to `path` reaches the service, its answer is lost."""
    lost: list = []

    def plan(request):
        if request.method == "POST" and request.path == path and not lost:
            lost.append(request)
            return "drop_after"
        return "pass"

    return plan


def test_a_create_whose_answer_was_lost_leaves_one_endpoint(metering, proxy):
    proxy.plan = _lose_the_first("/v1/webhooks/endpoints")
    endpoint = metering.create_webhook_endpoint("http://127.0.0.1:9/hook", description="x")
    assert proxy.faults["drop_after"] == 1
    assert [e.id for e in metering.list_webhook_endpoints()] == [endpoint.id]
    assert endpoint.secret.startswith("whsec_")


def test_a_create_whose_answer_was_lost_leaves_one_rule(metering, proxy):
    meter = metering.create_meter("Calls", "calls", aggregation_type="count")
    other = metering.create_alert("Calls", meter.id, [8])  # another rule: not a twin
    proxy.plan = _lose_the_first("/v1/billing/alerts")
    alert = metering.create_alert("Calls", meter.id, [7])
    assert proxy.faults["drop_after"] == 1
    assert sorted(a.id for a in metering.list_alerts()) == sorted([alert.id, other.id])


def _run(coroutine):
    """In a thread of its own (see test_async.py)."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def test_the_async_client_has_the_same_calls(proxy, org, receiver, deliver):
    async def scenario():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            endpoint = await client.create_webhook_endpoint(receiver.url)
            queued = await client.send_test_webhook(endpoint.id)
            deliver()
            log = await client.list_webhook_messages(endpoint.id)
            meter = await client.create_meter("Calls", "calls", aggregation_type="count")
            alert = await client.create_alert("Calls", meter.id, [2], period="day")
            changed = await client.update_alert(alert.id, thresholds=[3, 4])
            triggers = await client.list_alert_triggers(alert.id)
            archived = await client.archive_alert(alert.id)
            rules = await client.list_alerts(include_archived=True)
            endpoints = await client.list_webhook_endpoints()
            gone = await client.delete_webhook_endpoint(endpoint.id)
        return endpoint, queued, log, changed, triggers, archived, rules, endpoints, gone

    endpoint, queued, log, changed, triggers, archived, rules, endpoints, gone = _run(scenario())
    assert endpoint.secret.startswith("whsec_") and queued.event_type == "webhook.test"
    assert [m.id for m in log.items] == [queued.id]
    assert changed.thresholds == (3, 4) and triggers.items == [] and archived.archived
    assert [r.id for r in rules] == [archived.id] and [e.id for e in endpoints] == [endpoint.id]
    assert gone is not None and gone.id == endpoint.id
    received = eventually(lambda: receiver.received, 10, "the test message")
    assert json.loads(received[0].body)["type"] == "webhook.test"
