"""The client's key calls (issue 16) against the real service, through the fault proxy."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from metering_client import ApiError, ApiKey, AsyncMeteringClient
from tests.client.conftest import FAST_RETRY
from tests.client.test_webhooks_alerts import _lose_the_first


def test_keys_are_created_listed_and_revoked(metering, make_client_for, proxy, org):
    made = metering.create_key(
        ["usage:read", "meters:read"], expires_in=timedelta(hours=1), name="bi"
    )
    assert isinstance(made, ApiKey) and made.secret.startswith("mk_") and made.name == "bi"
    assert made.scopes == ("usage:read", "meters:read")  # the documentation's order
    assert timedelta(minutes=59) < made.expires_at - datetime.now(UTC) <= timedelta(hours=1)

    listed = {key.prefix: key for key in metering.list_keys()}
    assert set(listed) == {org["keyPrefix"], made.prefix}
    mine = listed[made.prefix]
    assert (mine.name, mine.status, mine.secret, mine.created_by) == (
        "bi",
        "active",
        None,
        org["keyPrefix"],
    )

    reader = make_client_for(proxy.url, made.secret)
    assert reader.list_meters() == []
    with pytest.raises(ApiError) as refused:
        reader.create_meter("Calls", "calls")
    assert refused.value.status == 403 and "meters:write" in refused.value.message

    assert metering.revoke_key(made.prefix) is True
    assert {key.prefix: key.status for key in metering.list_keys()}[made.prefix] == "revoked"
    with pytest.raises(ApiError) as gone:
        reader.list_meters()
    assert gone.value.status == 401


def test_a_key_create_whose_answer_was_lost_leaves_one_live_key(metering, proxy, org):
    proxy.plan = _lose_the_first("/v1/keys")
    made = metering.create_key(["usage:read"], name="lost once")
    assert proxy.faults["drop_after"] == 1
    active = [key.prefix for key in metering.list_keys() if key.status == "active"]
    assert sorted(active) == sorted([org["keyPrefix"], made.prefix])


def test_the_async_client_has_the_same_key_calls(proxy, org):
    async def scenario():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            made = await client.create_key(
                ["events:write"], expires_at=datetime.now(UTC) + timedelta(days=1)
            )
            listed = await client.list_keys()
            revoked = await client.revoke_key(made.prefix)
            return made, listed, revoked

    with ThreadPoolExecutor(max_workers=1) as executor:
        made, listed, revoked = executor.submit(asyncio.run, scenario()).result()
    assert made.scopes == ("events:write",) and made.secret
    assert made.prefix in {key.prefix for key in listed} and revoked is True
