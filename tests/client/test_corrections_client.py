"""The clients' corrections (issue 17): range cancel (its dry run, its repeated requests
until complete), amend (a retry answers duplicate), the records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metering_client import AsyncMeteringClient, Event
from tests.client.conftest import FAST_RETRY
from tests.client.test_async import _run


def test_range_cancel_and_amend_through_the_client(metering, proxy, org):
    meter = metering.create_meter("Input tokens", "input_tokens", dimensions=["model"])
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        Event.new(
            event_name="input_tokens",
            user_id="ann" if n % 2 else "bob",
            value=n + 1,
            timestamp=now - timedelta(hours=n + 1),
            dimensions={"model": "x" if n < 4 else "y"},
        )
        for n in range(6)
    ]
    outcomes = metering.send_now(events)
    start, end = now - timedelta(hours=4, minutes=30), now
    # In the range: n = 0..3, all model x; ann's are n = 1 and 3 (values 2 and 4).
    preview = metering.preview_cancel_range(
        meter.id, start, end, user_id="ann", filters={"model": "x"}
    )
    assert (preview.events, preview.value, preview.expired) == (2, 6, 0)
    done = metering.cancel_range(meter.id, start, end, user_id="ann", filters={"model": "x"})
    assert (done.status, done.cancelled, done.value, done.type) == (
        "complete",
        2,
        6,
        "cancel_range",
    )
    assert metering.summary(meter.id, user_id="ann").value == 6  # n = 5 alone is left

    amended = metering.amend(outcomes[0].id, value=100)
    assert (amended.status, amended.original_id) == ("created", outcomes[0].id)
    again = metering.amend(outcomes[0].id, value=100)
    assert (again.status, again.replacement_id) == ("duplicate", amended.replacement_id)
    assert metering.summary(meter.id, user_id="bob").value == 100 + 3 + 5
    records = metering.corrections()
    assert [r.type for r in records] == ["amend", "cancel_range"]
    assert metering.correction(records[1].id).filter == {"model": ["x"]}

    async def scenario():
        client = AsyncMeteringClient(proxy.url, org["apiKey"], retry=FAST_RETRY)
        try:
            preview = await client.preview_cancel_range(meter.id, start, end)
            amended = await client.amend(amended_id, value=101)
            listed = await client.corrections()
            return preview, amended, listed
        finally:
            await client.aclose()

    amended_id = amended.replacement_id
    preview, chained, listed = _run(scenario())
    assert preview.events == 2  # bob's two events of the range (one amended: its replacement)
    assert chained.original["amendedBy"] == chained.replacement_id
    assert len(listed) == 3
