"""The client's customer portal calls (issue 16) against the real service: a token
issued with `create_portal_token` reads its user's usage, `revoke_portal_tokens` ends
it, and `set_portal_origins` lets a browser origin read."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from metering_client import ApiError, AsyncMeteringClient, PortalToken
from tests.client.conftest import FAST_RETRY
from tests.support.http import Api


def test_create_use_and_revoke_a_portal_token(metering, server):
    meter = metering.create_meter("Tokens", "tokens")
    issued = metering.create_portal_token(
        "alice", meter_ids=[meter.id], expires_in=timedelta(minutes=10)
    )
    assert isinstance(issued, PortalToken) and issued.token.startswith("pt_")
    assert (issued.user_id, issued.meter_ids) == ("alice", (meter.id,))
    assert timedelta(minutes=9) < issued.expires_at - datetime.now(UTC) <= timedelta(minutes=10)
    customer = Api(server.url, issued.token)
    assert customer.get("/v1/portal/meters").json()["meters"][0]["id"] == meter.id

    everything = metering.create_portal_token("bob")
    assert everything.meter_ids is None
    revoked_at = metering.revoke_portal_tokens("alice")
    assert abs(revoked_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert customer.get("/v1/portal/meters").status_code == 401
    assert Api(server.url, everything.token).get("/v1/portal/meters").status_code == 200
    metering.revoke_portal_tokens()
    assert Api(server.url, everything.token).get("/v1/portal/meters").status_code == 401


def test_bad_arguments_are_the_services_errors(metering):
    try:
        metering.create_portal_token("alice", expires_in=timedelta(days=2))
    except ApiError as error:
        assert (error.status, error.param) == (400, "expiresIn")
    else:
        raise AssertionError("a 2-day token was issued")
    assert metering.set_portal_origins(["https://app.example.com:443"]) == [
        "https://app.example.com"
    ]


def test_the_async_client_has_the_same_calls(proxy, org, server):
    async def run():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            issued = await client.create_portal_token("carol", expires_in=120)
            assert Api(server.url, issued.token).get("/v1/portal/meters").status_code == 200
            await client.revoke_portal_tokens("carol")
            assert Api(server.url, issued.token).get("/v1/portal/meters").status_code == 401
            assert await client.set_portal_origins([]) == []

    # in a thread of its own: browser tests of the same session (Playwright's sync API)
    # leave an event loop running in the main thread, where asyncio.run() refuses to start
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(asyncio.run, run()).result()
