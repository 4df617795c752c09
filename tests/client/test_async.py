"""The asyncio client against the real service, through the same faults."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import random
from collections import Counter

import pytest

from metering_client import ApiError, AsyncMeteringClient, EventsRejected
from tests.client.conftest import FAST_RETRY
from tests.client.fault_proxy import Chaos


def _run(coroutine):
    """Run in a thread of its own: another test's library (Playwright's sync API) may keep
    an event loop running in the main thread, where asyncio.run() refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def test_async_tasks_record_through_faults_exactly_once(proxy, org):
    proxy.plan = Chaos(rates={"drop_before": 0.1, "drop_after": 0.15, "cut_after": 0.05,
                              "503": 0.1}, seed=3)
    totals: Counter = Counter()

    async def scenario():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY,
                                       flush_interval=0.1) as client:
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
