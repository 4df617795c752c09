"""Leasing and recording in batches (issue 14's latency): one transaction takes many due
messages, one records many attempts, and the guarantees of one message at a time hold:
two dispatchers leasing overlapping batches at once never send one attempt twice, and a
batch whose message was taken over by another dispatcher records only the others."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from google.cloud import ndb

from app.models import utcnow
from app.models.webhook import WebhookEndpoint
from app.services.webhooks import dispatch
from tests.support.receiver import Receiver
from tests.test_webhooks_delivery import QUICK, _endpoint, _messages, _test_message


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


def _due(ndb_client, namespace: str):
    """The org's due message keys and its endpoints, as a dispatcher reads them."""
    with ndb_client.context(namespace=namespace):
        keys = dispatch.due_keys(utcnow() + timedelta(seconds=1), 500)
        endpoints = {e.key.id(): e for e in WebhookEndpoint.query().fetch()}
    return keys, endpoints


def test_two_dispatchers_leasing_overlapping_batches_send_each_attempt_once(
    api, org, receiver, ndb_client
):
    """Two dispatchers (each its own NDB context, no shared in-process bookkeeping) lease
    overlapping batches at the same moment, send what they leased to a real receiver and
    record it: every message arrives once, and is delivered after one attempt."""
    endpoint = _endpoint(api, receiver)
    ids = {_test_message(api, endpoint)["id"] for _ in range(30)}
    keys, endpoints = _due(ndb_client, org["namespace"])
    assert len(keys) == 30
    shares = [keys[:20], keys[10:]]  # the middle ten are in both batches
    start = threading.Barrier(2)
    leased: list[list[dispatch.Leased]] = [[], []]

    def dispatcher(slot: int) -> None:
        with ndb_client.context(namespace=org["namespace"]):
            start.wait()
            for _ in range(5):  # a contended commit raises: the next round tries again
                try:
                    leased[slot] = dispatch.lease_many(shares[slot], utcnow(), QUICK, endpoints)
                    break
                except Exception:  # noqa: BLE001
                    continue
            results = [
                dispatch.Result(
                    item.message.key,
                    item.message.lease,
                    dispatch.send(item.endpoint, item.message, QUICK),
                    item.at,
                    QUICK,
                )
                for item in leased[slot]
            ]
            if results:
                dispatch.record_many(results)

    threads = [threading.Thread(target=dispatcher, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    taken = [{item.message.key for item in batch} for batch in leased]
    assert not taken[0] & taken[1]
    assert taken[0] | taken[1] == set(keys)
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(ids)
    delivered = _messages(api, endpoint, status="delivered", limit=100)["messages"]
    assert sorted(m["id"] for m in delivered) == sorted(ids)
    assert {m["attemptCount"] for m in delivered} == {1}


def test_a_batch_records_only_the_messages_whose_lease_it_still_holds(
    api, org, receiver, ndb_client
):
    """A dispatcher leases three messages and is slow; one lease runs out and another
    dispatcher takes that message. The slow dispatcher's batch then records the other
    two, and nothing on the taken one, whose new holder records its own attempt."""
    endpoint = _endpoint(api, receiver)
    for _ in range(3):
        _test_message(api, endpoint)
    keys, endpoints = _due(ndb_client, org["namespace"])
    with ndb_client.context(namespace=org["namespace"]):
        slow = dispatch.lease_many(keys, utcnow(), QUICK, endpoints)
        assert len(slow) == 3
        late = slow[0]
        # Past the slow dispatcher's lease: another takes the message over.
        (taker,) = dispatch.lease_many(
            [late.message.key], late.until + timedelta(seconds=1), QUICK, endpoints
        )
        assert taker.message.lease != late.message.lease
        ok = dispatch.Outcome(200, None, "", 5)
        recorded = dispatch.record_many(
            [dispatch.Result(i.message.key, i.message.lease, ok, i.at, QUICK) for i in slow]
        )
        assert recorded == {slow[1].message.key, slow[2].message.key}
        pending = _messages(api, endpoint, status="pending")["messages"]
        assert [(m["id"], m["attemptCount"]) for m in pending] == [(late.message.message_id, 0)]
        failed = dispatch.Outcome(500, "HTTP 500", "", 5)
        assert dispatch.record_many(
            [dispatch.Result(taker.message.key, taker.message.lease, failed, taker.at, QUICK)]
        ) == {taker.message.key}
    (retried,) = _messages(api, endpoint, status="pending")["messages"]
    assert [a["statusCode"] for a in retried["attempts"]] == [500]
    assert len(_messages(api, endpoint, status="delivered")["messages"]) == 2


def test_more_messages_than_a_batch_are_each_leased_once(api, org, receiver, ndb_client):
    """More due messages than one transaction takes (BATCH, shrunk to 2 here) are leased
    over several, each message once, with a token of its own, and are then not due."""
    endpoint = _endpoint(api, receiver)
    for _ in range(5):
        _test_message(api, endpoint)
    keys, endpoints = _due(ndb_client, org["namespace"])
    original = dispatch.BATCH
    dispatch.BATCH = 2
    try:
        with ndb_client.context(namespace=org["namespace"]):
            leased = dispatch.lease_many(keys, utcnow(), QUICK, endpoints)
            again = dispatch.lease_many(keys, utcnow(), QUICK, endpoints)
    finally:
        dispatch.BATCH = original
    assert sorted(i.message.key for i in leased) == sorted(keys)
    assert len({i.message.lease for i in leased}) == 5
    assert again == []  # leased: not due to anyone else


def test_only_a_commit_that_stored_messages_wakes_the_sender(ndb_context):
    """The sender thread of `metering serve` is woken by commits that stored messages (an
    alert crossing, a meter change, a test message), not by ingestion's feeds: those wake
    the delivery loop alone."""
    from app.models.base import root_key
    from app.services.webhooks import outbox

    loop, sender = [], []
    outbox.forget_built()  # what an earlier test of this thread built is not ours
    forget = [outbox.on_wake(loop.append), outbox.on_wake(sender.append, only_messages=True)]
    try:
        outbox.wake()  # a batch of events that stored alert feeds
        endpoint = WebhookEndpoint(key=ndb.Key(WebhookEndpoint.KIND, 7, parent=root_key()))
        outbox.messages([endpoint], "webhook.test", outbox.event_id("t"), {}, utcnow())
        outbox.wake()  # a commit with the messages built above
        outbox.wake()  # nothing built since
        outbox.wake(messages=True)  # a retry asked for: due now
    finally:
        for stop in forget:
            stop()
    assert len(loop) == 4
    assert len(sender) == 2
