"""The asyncio client against the real service, through the same faults."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from metering_client import (
    ApiError,
    AsyncMeteringClient,
    BufferFull,
    Event,
    EventsRejected,
    NotDelivered,
)
from tests.client.conftest import FAST_RETRY
from tests.client.fault_proxy import Chaos


def _run(coroutine):
    """Run in a thread of its own: another test's library (Playwright's sync API) may keep
    an event loop running in the main thread, where asyncio.run() refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def test_async_tasks_record_through_faults_exactly_once(proxy, org):
    proxy.plan = Chaos(
        rates={"drop_before": 0.1, "drop_after": 0.15, "cut_after": 0.05, "503": 0.1}, seed=3
    )
    totals: Counter = Counter()

    async def scenario():
        async with AsyncMeteringClient(
            proxy.url, org["apiKey"], retry=FAST_RETRY, flush_interval=0.1
        ) as client:
            meter = await client.create_meter("Calls", "api_calls", aggregation_type="count")

            async def task(seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(150):
                    user = rng.choice("abc")
                    await client.record("api_calls", user)
                    totals[user] += 1
                    if rng.random() < 0.1:
                        await asyncio.sleep(0.01)

            await asyncio.gather(*(task(seed) for seed in range(6)))
            assert await client.flush(timeout=60)
            stats = client.stats
            summaries = {user: await client.summary(meter.id, user_id=user) for user in "abc"}
        return stats, summaries

    stats, summaries = _run(scenario())
    assert proxy.faults["drop_after"] > 0 and stats.duplicates > 0
    assert stats.created + stats.duplicates == 900
    assert {user: s.value for user, s in summaries.items()} == dict(totals)


def test_async_api_calls_and_refused_events(proxy, org):
    async def scenario():
        client = AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY)
        meter = await client.create_meter("Input tokens", "input_tokens")
        assert [m.id for m in await client.list_meters()] == [meter.id]
        assert (await client.update_meter(meter.id, name="Tokens")).name == "Tokens"
        with pytest.raises(ApiError) as missing:
            await client.get_meter("nosuchmeter")
        assert missing.value.status == 404
        key = await client.record("input_tokens", "ann", 5)
        await client.record("input_tokens", "ann", 6, dimensions={"model": "x"})
        with pytest.raises(EventsRejected) as refused:
            await client.flush(timeout=30)
        assert "declares no dimension" in refused.value.rejections[0].error.message
        outcome = await client.cancel(idempotency_keys=[key], event_name="input_tokens")
        summary = await client.summary(meter.id)
        archived = await client.archive_meter(meter.id)
        await client.aclose()
        return outcome, summary, archived

    outcome, summary, archived = _run(scenario())
    assert [o.status for o in outcome] == ["cancelled"]
    assert (summary.value in (0, None), summary.event_count) == (True, 0)
    assert archived.status == "archived"


def test_async_pages_of_users(proxy, org):
    async def scenario():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            meter = await client.create_meter("Calls", "api_calls", aggregation_type="count")
            for user in "abcde":
                await client.record("api_calls", user)
            assert await client.flush(timeout=30)
            pages = [page async for page in client.summary_pages(meter.id, limit=2)]
            top = await client.summary(meter.id, group_by=["userId"], order_by="value", limit=1)
        return pages, top

    pages, top = _run(scenario())
    assert [[w.group_by["userId"] for w in page.windows] for page in pages] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
    ]
    assert [page.value for page in pages] == [5, 5, 5]
    assert [w.group_by["userId"] for w in top.windows] == ["a"]


# --- the twins: one scenario, the same stats, refusals and messages -----------------------

EVENTS_PATH = "/v1/billing/meter-events"


def _first_event_post_fails(fault: str):
    failed = False

    def plan(request):
        nonlocal failed
        if request.path == EVENTS_PATH and not failed:
            failed = True
            return fault
        return "pass"

    return plan


def _mixed_events(when: datetime) -> tuple[dict, list[dict]]:
    """An event stored beforehand, then a batch: it again (duplicate), its key with another
    value (conflict), a new event, and one with a dimension its meter does not declare."""
    stored = {
        "event_name": "input_tokens",
        "user_id": "ann",
        "value": 1,
        "idempotency_key": "k1",
        "timestamp": when,
    }
    batch = [
        stored,
        {**stored, "value": 2},
        {**stored, "value": 3, "idempotency_key": "k2"},
        {**stored, "value": 4, "idempotency_key": "k3", "dimensions": {"region": "eu"}},
    ]
    return stored, batch


def _outcome(stats, rejections) -> tuple:
    return (
        dataclasses.asdict(stats),
        sorted(
            (r.event.idempotency_key, r.event.value, r.error.status, r.error.code)
            for r in rejections
        ),
    )


def test_the_sync_and_async_clients_count_and_refuse_alike(proxy, org, other_org, make_client_for):
    stored, batch = _mixed_events(datetime.now(UTC) - timedelta(minutes=1))

    def sync_run():
        client = make_client_for(proxy.url, org["apiKey"], flush_interval=30)
        client.create_meter("Input tokens", "input_tokens")
        client.send_now([Event.new(**stored)])
        proxy.plan = _first_event_post_fails("503")
        for event in batch:
            client.record(**event)
        with pytest.raises(EventsRejected) as refused:
            client.flush(timeout=30)
        return _outcome(client.stats, refused.value.rejections)

    async def async_run():
        async with AsyncMeteringClient(
            proxy.url, other_org["apiKey"], retry=FAST_RETRY, flush_interval=30
        ) as client:
            await client.create_meter("Input tokens", "input_tokens")
            await client.send_now([Event.new(**stored)])
            proxy.plan = _first_event_post_fails("503")
            for event in batch:
                await client.record(**event)
            with pytest.raises(EventsRejected) as refused:
                await client.flush(timeout=30)
            return _outcome(client.stats, refused.value.rejections)

    sync_outcome = sync_run()
    assert _run(async_run()) == sync_outcome
    # The 503, the batch refused for its bad event, the rest again; k2 alone is new.
    assert sync_outcome == (
        {"requests": 3, "retries": 1, "created": 1, "duplicates": 1, "rejected": 2},
        [("k1", 2, 409, "conflict"), ("k3", 4, 400, "invalid_request")],
    )


def _without_seconds(message: str) -> str:
    return re.sub(r"for \d+s", "for Ns", message)


def test_the_sync_and_async_clients_explain_a_failing_service_alike(
    proxy, org, other_org, make_client_for
):
    """BufferFull says since when and why nothing is accepted; NotDelivered says why."""
    proxy.plan = lambda request: "drop_before" if request.path == EVENTS_PATH else "pass"
    options = {"batch_size": 10, "max_pending": 20, "block_timeout": 0.5}

    def sync_run():
        client = make_client_for(proxy.url, org["apiKey"], **options)
        for _ in range(20):
            client.record("input_tokens", "ann", 1)
        with pytest.raises(BufferFull) as full:
            client.record("input_tokens", "ann", 1)
        with pytest.raises(NotDelivered) as unsent:
            client.close(timeout=0.5)
        return _without_seconds(str(full.value)), str(unsent.value)

    async def async_run():
        client = AsyncMeteringClient(
            proxy.url, other_org["apiKey"], retry=FAST_RETRY, flush_interval=0.2, **options
        )
        for _ in range(20):
            await client.record("input_tokens", "ann", 1)
        with pytest.raises(BufferFull) as full:
            await client.record("input_tokens", "ann", 1)
        with pytest.raises(NotDelivered) as unsent:
            await client.aclose(timeout=0.5)
        return _without_seconds(str(full.value)), str(unsent.value)

    sync_messages = sync_run()
    assert _run(async_run()) == sync_messages
    full, unsent = sync_messages
    assert full.startswith(
        "20 events are waiting to be sent (max_pending) and the service "
        "has not accepted any for Ns; last problem: "
    )
    assert unsent.startswith("20 event(s) not delivered: ") and "timed out" not in unsent
