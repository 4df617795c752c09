"""record(): batching, refused events, back-pressure and shutdown, against the real service."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from email.utils import formatdate

import pytest

from metering_client import (
    BufferFull,
    ClientClosed,
    Event,
    EventsRejected,
    MeteringClient,
    NotDelivered,
)
from tests.client.conftest import FAST_RETRY

EVENTS_PATH = "/v1/billing/meter-events"


@pytest.fixture
def meter(metering):
    return metering.create_meter("Input tokens", "input_tokens", dimensions=["model"])


def _event_posts(proxy) -> list[tuple[float, str]]:
    return [(at, fault) for at, path, fault in proxy.arrivals if path == EVENTS_PATH]


def test_events_are_sent_in_batches_of_at_most_100_and_counted_exactly(make_client, meter):
    client = make_client(flush_interval=30)
    for value in range(1, 251):
        client.record("input_tokens", f"user-{value % 3}", value, dimensions={"model": "a"})
    assert client.flush(timeout=30)
    assert client.stats.requests == 3 and client.stats.created == 250
    assert client.summary(meter.id).value == sum(range(1, 251))
    assert client.summary(meter.id, user_id="user-1").event_count == 84


def test_a_batch_with_bad_events_rejects_just_those_and_stores_the_rest(make_client, meter):
    refused = []
    client = make_client(flush_interval=30, on_error=refused.append)
    good = [client.record("input_tokens", "ann", v, dimensions={"model": "a"}) for v in (1, 2)]
    bad_dimension = client.record("input_tokens", "ann", 100, dimensions={"region": "eu"})
    no_meter = client.record("no_such_event", "ann", 1000)
    good.append(client.record("input_tokens", "ann", 4))
    assert client.flush(timeout=30)

    assert {r.event.idempotency_key: r.error.status for r in refused} == {
        bad_dimension: 400,
        no_meter: 400,
    }
    messages = {r.event.idempotency_key: r.error.message for r in refused}
    assert "declares no dimension 'region'" in messages[bad_dimension]
    assert "no such meter" in messages[no_meter]
    assert client.stats.requests == 2  # the refused batch, then its good events again
    assert client.stats.created == 3 and client.stats.rejected == 2
    assert client.summary(meter.id).value == 7


def test_without_on_error_refused_events_surface_at_flush(make_client, meter):
    client = make_client(flush_interval=30)
    first = Event.new(event_name="input_tokens", user_id="ann", value=1, idempotency_key="k1")
    assert client.send_now([first])[0].status == "created"
    client.record("input_tokens", "ann", 1, idempotency_key="k1", timestamp=first.timestamp)
    client.record("input_tokens", "ann", 2, idempotency_key="k1")  # same key, other payload
    with pytest.raises(EventsRejected) as rejected:
        client.flush(timeout=30)
    [conflict] = rejected.value.rejections
    assert conflict.event.value == 2 and conflict.error.code == "conflict"
    assert (client.stats.duplicates, client.stats.rejected) == (1, 1)
    assert client.summary(meter.id).value == 1
    assert client.flush(timeout=5)  # reported once


def _first_event_posts(fault: str, count: int):
    seen = 0

    def plan(request):
        nonlocal seen
        if request.path == EVENTS_PATH and seen < count:
            seen += 1
            return fault
        return "pass"

    return plan


def test_429_is_retried_after_the_time_retry_after_asks(make_client, proxy, meter):
    proxy.plan = _first_event_posts("429", 2)
    client = make_client()
    client.record("input_tokens", "ann", 5)
    assert client.flush(timeout=30)
    times = [at for at, _ in _event_posts(proxy)]
    assert [fault for _, fault in _event_posts(proxy)] == ["429", "429", "pass"]
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(times))
    assert client.summary(meter.id).value == 5


def test_retry_after_may_be_an_http_date(make_client, proxy, meter):
    proxy.plan = _first_event_posts("429", 1)
    proxy.retry_after = formatdate(time.time() + 2, usegmt=True)  # 1 to 2 s from now
    client = make_client()
    client.record("input_tokens", "ann", 5)
    assert client.flush(timeout=30)
    (refused, _), (accepted, _) = _event_posts(proxy)
    assert accepted - refused >= 0.9
    assert client.summary(meter.id).value == 5


def test_a_batch_too_large_for_the_service_is_halved_until_it_fits(make_client, proxy, meter):
    def refuse_large(request):
        too_large = request.path == EVENTS_PATH and len(json.loads(request.body)["events"]) > 25
        return "413" if too_large else "pass"

    proxy.plan = refuse_large
    client = make_client(flush_interval=30)
    for _ in range(100):
        client.record("input_tokens", "ann", 1)
    assert client.flush(timeout=30)
    sizes = [fault for _, fault in _event_posts(proxy)]
    assert sizes.count("413") == 3 and sizes.count("pass") == 4  # 100, 50, 50 refused
    assert client.summary(meter.id).value == 100


def test_503_and_lost_answers_are_retried_with_the_same_keys(make_client, proxy, meter):
    proxy.plan = _first_event_posts("503", 2)
    client = make_client()
    client.record("input_tokens", "ann", 5)
    assert client.flush(timeout=30)
    proxy.plan = _first_event_posts("drop_after", 1)  # stored, but the answer is lost
    client.record("input_tokens", "ann", 7)
    assert client.flush(timeout=30)
    assert proxy.faults["503"] == 2 and proxy.faults["drop_after"] == 1
    assert (client.stats.created, client.stats.duplicates) == (1, 1)
    assert client.summary(meter.id).value == 12


def test_the_buffer_is_bounded_and_says_why_then_drains_when_the_service_is_back(
    make_client, proxy, meter
):
    proxy.plan = lambda request: "drop_before" if request.path == EVENTS_PATH else "pass"
    client = make_client(batch_size=10, max_pending=50, block_timeout=0.5)
    for _ in range(50):
        client.record("input_tokens", "ann", 1)
    with pytest.raises(BufferFull) as full:
        client.record("input_tokens", "ann", 1)
    assert "50 events are waiting" in str(full.value)
    assert "has not accepted any" in str(full.value) and "Error" in str(full.value)

    proxy.plan = lambda request: "pass"
    assert client.flush(timeout=30)
    assert client.summary(meter.id).value == 50


def test_close_sends_what_is_pending_and_then_refuses_records(make_client, meter):
    client = make_client(flush_interval=60)
    for _ in range(150):
        client.record("input_tokens", "ann", 2)
    client.close()
    with pytest.raises(ClientClosed):
        client.record("input_tokens", "ann", 2)
    assert make_client().summary(meter.id).value == 300


def test_close_hands_back_what_it_could_not_send_for_a_later_exact_resend(
    make_client, proxy, meter
):
    proxy.plan = lambda request: "503" if request.path == EVENTS_PATH else "drop_after"
    client = make_client()
    keys = [client.record("input_tokens", "ann", 3) for _ in range(5)]
    with pytest.raises(NotDelivered) as unsent:
        client.close(timeout=1)
    assert [e.idempotency_key for e in unsent.value.events] == keys

    proxy.plan = lambda request: "pass"
    again = make_client()
    assert {o.status for o in again.send_now(unsent.value.events)} == {"created"}
    assert again.summary(meter.id).value == 15


def test_events_pending_at_interpreter_exit_are_sent(proxy, org, meter, tmp_path):
    script = textwrap.dedent(f"""
        from metering_client import MeteringClient
        client = MeteringClient({proxy.url!r}, {org["apiKey"]!r}, flush_interval=60)
        for _ in range(80):  # fewer than a batch: nothing is due before exit
            client.record("input_tokens", "ann", 1)
        print(client.stats.requests)
    """)
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "0"
    reader = MeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY)
    with reader:
        assert reader.summary(meter.id).value == 80
