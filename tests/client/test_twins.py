"""The sync and the async client are twins: the same methods, with the same parameters,
each of its client's kind. The methods that are one operation called as it is are written
once (`metering_client.calls`) and made for each client when the class is defined; these
tests hold them to what a method written out would be, and drive the async ones that no
other test drives against the real service, through faults."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor

import pytest

from metering_client import ApiError, AsyncMeteringClient, MeteringClient, UsageLimit
from metering_client.calls import ApiCalls, Call
from tests.client.conftest import FAST_RETRY
from tests.client.fault_proxy import Chaos

CALLS = sorted(name for name, value in vars(ApiCalls).items() if isinstance(value, Call))
#: Methods of one client only: the sync client's context manager and close, the async's.
ONE_CLIENT_ONLY = {"close", "aclose"}
#: Whose signatures differ by the kind of client: the transport's type, and iterators.
OF_THEIR_KIND = {"__init__", "summary_pages", "export_events"}


def public_methods(client: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(client, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    }


def test_the_twins_have_the_same_methods_with_the_same_parameters():
    sync, asynchronous = public_methods(MeteringClient), public_methods(AsyncMeteringClient)
    assert set(sync) - ONE_CLIENT_ONLY == set(asynchronous) - ONE_CLIENT_ONLY
    for name in set(sync) - ONE_CLIENT_ONLY - OF_THEIR_KIND:
        assert inspect.signature(sync[name]) == inspect.signature(asynchronous[name]), name
        assert not inspect.iscoroutinefunction(sync[name]), name
    assert CALLS and all(inspect.iscoroutinefunction(asynchronous[name]) for name in CALLS)


@pytest.mark.parametrize("name", CALLS)
def test_a_call_is_each_clients_own_method_as_if_written_out(name):
    call = vars(ApiCalls)[name]
    operation = inspect.signature(call.operation)
    for client in (MeteringClient, AsyncMeteringClient):
        method = vars(client)[name]  # the class's own, not inherited
        assert (method.__name__, method.__qualname__) == (name, f"{client.__name__}.{name}")
        assert method.__module__ == client.__module__ and method.__doc__ == call.doc
        signature = inspect.signature(method)
        parameters = list(signature.parameters.values())
        assert parameters[0].name == "self"
        assert parameters[1:] == list(operation.parameters.values())[1:]  # the policy's out
        assert f"Op[{signature.return_annotation}]" == operation.return_annotation
        assert inspect.getdoc(method) == (inspect.cleandoc(call.doc) if call.doc else None)


def test_a_method_written_out_or_inherited_stays():
    class Narrower(MeteringClient):
        def get_meter(self, meter_id: str):  # written out: the Call does not replace it
            return meter_id

    class Narrowest(Narrower):
        pass

    assert vars(Narrower)["get_meter"] is Narrowest.get_meter
    assert Narrowest.list_meters is Narrower.list_meters is MeteringClient.list_meters
    assert "list_meters" not in vars(Narrower) and "get_meter" not in vars(Narrowest)


def _run(coroutine):
    """In a thread of its own (as tests/client/test_async.py says why)."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def test_the_async_calls_drive_their_operations_through_faults(proxy, org):
    """The async twins of calls only the sync client's tests drove: limits, an alert rule,
    an endpoint and its secret, over a connection that drops and answers 503."""
    proxy.plan = Chaos(rates={"drop_before": 0.1, "503": 0.15}, seed=11)

    async def scenario():
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            meter = await client.create_meter("Tokens", "tokens")
            made = await client.create_limit(meter.id, 10)
            assert [x.id for x in await client.list_limits(meter_id=meter.id)] == [made.id]
            assert (await client.update_limit(made.id, 5)).limit == 5
            got = await client.get_limit(made.id)
            assert isinstance(got, UsageLimit) and (got.id, got.limit) == (made.id, 5)
            deleted = await client.delete_limit(made.id)
            assert deleted is None or deleted.id == made.id  # None: a retry found it gone
            with pytest.raises(ApiError) as refused:
                await client.get_limit(made.id)
            assert refused.value.status == 404

            rule = await client.create_alert("Tokens", meter.id, [5])
            assert await client.get_alert(rule.id) == rule

            endpoint = await client.create_webhook_endpoint("http://127.0.0.1:9/hook")
            rotated = await client.rotate_webhook_secret(endpoint.id)
            assert rotated.secret and rotated.secret != endpoint.secret
            fetched = await client.get_webhook_endpoint(endpoint.id)
            assert fetched.id == endpoint.id and fetched.secret is None

    _run(scenario())
