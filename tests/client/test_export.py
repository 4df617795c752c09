"""The client's `export_events` (issue 17): every event once, oldest first, across answers
the fault proxy cuts in the middle, and the async twin alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import UTC, datetime, timedelta

import pytest

from metering_client import ApiError, AsyncMeteringClient, ExportedEvent
from tests.client.conftest import FAST_RETRY
from tests.client.fault_proxy import Request

NOW = datetime.now(UTC).replace(microsecond=0)
EXPORT = "/v1/billing/meter-events/export"


class CutFirst:
    """Cut the first `times` export answers halfway (after some lines); pass the rest."""

    def __init__(self, times: int):
        self.left = times

    def __call__(self, request: Request) -> str:
        if request.path.startswith(EXPORT) and self.left > 0:
            self.left -= 1
            return "cut_after"
        return "pass"


@pytest.fixture
def recorded(api) -> tuple[dict, list[str]]:
    """Twelve events (long lines, so that half an answer holds several), one cancelled;
    the ids in export order."""
    meter = api.create_meter(dimensions=["model"])
    ids = [
        e["id"]
        for e in api.record(
            *(
                {"meterId": meter["id"], "userId": f"user-{n % 3}", "value": n,
                 "timestamp": (NOW - timedelta(minutes=60 - n)).isoformat(),
                 "idempotency": f"request-{n:04d}", "dimensions": {"model": "m" * 40},
                 "metadata": {"note": "x" * 200}}
                for n in range(12)
            )
        )["events"]
    ]  # fmt: skip
    assert api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": ids[5]}]}).ok
    return meter, ids


def test_an_export_cut_twice_yields_every_event_once(metering, proxy, recorded):
    meter, ids = recorded
    proxy.plan = CutFirst(2)
    events = list(metering.export_events(meter["id"], include_cancelled=True))
    assert proxy.faults["cut_after"] == 2 and proxy.faults["pass"] == 1
    assert [e.id for e in events] == ids
    assert all(isinstance(e, ExportedEvent) for e in events)
    assert [e.value for e in events] == list(range(12))
    assert events[5].cancelled and not events[4].cancelled
    assert events[0].idempotency == "request-0000" and events[0].dimensions == {"model": "m" * 40}
    assert events[0].timestamp == NOW - timedelta(minutes=60)


def test_filters_cursor_and_errors(metering, recorded):
    meter, ids = recorded
    active = [e.id for e in metering.export_events(meter["id"])]
    assert active == ids[:5] + ids[6:]
    of_user = list(metering.export_events(meter["id"], user_id="user-1"))
    assert [e.value for e in of_user] == [1, 4, 7, 10]
    window = metering.export_events(
        meter["id"],
        period_start=NOW - timedelta(minutes=50),
        period_end=NOW - timedelta(minutes=48),
    )
    assert [e.value for e in window] == [10, 11]
    assert [e.id for e in metering.export_events(meter["id"], cursor=ids[8])] == ids[9:]
    with pytest.raises(ApiError) as missing:
        list(metering.export_events("nosuchmeter"))
    assert missing.value.status == 404 and missing.value.param == "meterId"


def test_the_async_twin_resumes_too(proxy, org, recorded):
    meter, ids = recorded
    proxy.plan = CutFirst(1)

    async def export() -> list[str]:
        async with AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY) as client:
            return [e.id async for e in client.export_events(meter["id"], include_cancelled=True)]

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        exported = executor.submit(asyncio.run, export()).result()
    assert exported == ids and proxy.faults["cut_after"] == 1


def test_an_amendment_is_linked_both_ways_in_the_export(metering, api, recorded):
    meter, ids = recorded
    answer = api.post(f"/v1/billing/meter-events/{ids[7]}/amend", json={"value": 70})
    assert answer.status_code == 200, answer.text
    events = {e.id: e for e in metering.export_events(meter["id"], include_cancelled=True)}
    [replacement] = [e for e in events.values() if e.amends == ids[7]]
    assert events[ids[7]].amended_by == replacement.id and events[ids[7]].cancelled
    assert replacement.value == 70 and replacement.amended_by is None
    assert events[ids[5]].amended_by is None and events[ids[0]].amends is None
