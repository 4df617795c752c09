"""The client's usage limit calls and its cached limit check, against the real service
(issue 16)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from metering_client import ApiError, AsyncMeteringClient, Event, LimitCheck, UsageLimit
from tests.client.conftest import FAST_RETRY
from tests.support.http import Api


@pytest.fixture
def counting_url(serve) -> str:
    return serve(limit_counting_delay=0.0)


def test_limits_and_a_cached_check(make_client_for, counting_url, org):
    metering = make_client_for(counting_url, org["apiKey"], limit_cache_seconds=60)
    meter = metering.create_meter("Tokens", "tokens")
    default = metering.create_limit(meter.id, 10, time_zone="Asia/Kolkata")
    override = metering.create_limit(meter.id, 100, user_id="vip", time_zone="Asia/Kolkata")
    assert isinstance(default, UsageLimit) and default.user_id is None
    assert override.user_id == "vip" and default.time_zone == "Asia/Kolkata"
    assert {x.id for x in metering.list_limits(meter_id=meter.id)} == {default.id, override.id}
    assert metering.update_limit(default.id, 5).limit == 5
    assert metering.get_limit(default.id).limit == 5

    metering.send_now(
        [Event.new(event_name="tokens", user_id="alice", value=4, idempotency_key="a1")]
    )
    first = metering.check_limit(user_id="alice", event_name="tokens")
    assert isinstance(first, LimitCheck)
    assert (first.used, first.limit, first.remaining, first.allowed) == (4, 5, 1, True)
    metering.send_now(
        [Event.new(event_name="tokens", user_id="alice", value=3, idempotency_key="a2")]
    )
    assert metering.check_limit(user_id="alice", event_name="tokens") is first  # cached
    fresh = metering.check_limit(user_id="alice", event_name="tokens", fresh=True)
    assert (fresh.used, fresh.allowed) == (7, False)
    assert metering.check_limit(user_id="vip", meter_id=meter.id).limit == 100

    assert metering.delete_limit(override.id).id == override.id
    with pytest.raises(ApiError) as refused:
        metering.get_limit(override.id)
    assert refused.value.status == 404


def test_a_tenant_can_turn_the_check_cache_off(make_client_for, counting_url, org):
    metering = make_client_for(counting_url, org["apiKey"], limit_cache_seconds=0)
    meter = Api(counting_url, org["apiKey"]).create_meter(
        eventName="calls", aggregationType="count"
    )
    metering.create_limit(meter["id"], 2, period="day")
    seen = []
    for number in range(3):
        seen.append(metering.check_limit(user_id="u", meter_id=meter["id"]).used)
        metering.send_now(
            [Event.new(event_name="calls", user_id="u", idempotency_key=f"k{number}")]
        )
    assert seen == [0, 1, 2]


def test_the_async_client_checks_too(counting_url, org):
    async def run() -> LimitCheck:
        async with AsyncMeteringClient(counting_url, org["apiKey"], retry=FAST_RETRY) as metering:
            meter = await metering.create_meter("Tokens", "tokens")
            await metering.create_limit(meter.id, 50)
            await metering.send_now(
                [Event.new(event_name="tokens", user_id="bob", value=20, idempotency_key="b")]
            )
            return await metering.check_limit(user_id="bob", meter_id=meter.id)

    # In a thread: an earlier test of the session (Playwright's sync API) may leave an
    # event loop running in the main thread, where asyncio.run() refuses to start.
    with ThreadPoolExecutor(1) as executor:
        answer = executor.submit(asyncio.run, run()).result()
    assert (answer.used, answer.remaining, answer.allowed) == (20, 30, True)
