"""The client hands summary values back as ints, exact at any size, whatever their wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metering_client import Event

INT64_MAX = (1 << 63) - 1


def test_sums_past_doubles_and_int64_come_back_as_exact_ints(metering):
    """The service sends 922337203685477580700 as a string (JavaScript would round it);
    the client's caller gets the int, for the total and for every window."""
    meter = metering.create_meter("Bytes", "bytes")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=2)
    events = [
        Event.new(
            event_name="bytes",
            user_id="big",
            value=INT64_MAX,
            timestamp=start + timedelta(minutes=5, seconds=i),
        )
        for i in range(100)
    ]
    events.append(
        Event.new(
            event_name="bytes", user_id="small", value=7, timestamp=start + timedelta(hours=1)
        )
    )
    outcomes = metering.send_now(events)
    assert {o.status for o in outcomes} == {"created"}

    total = metering.summary(meter.id, period_start=start, period_end=now)
    assert total.value == 100 * INT64_MAX + 7 and type(total.value) is int
    hourly = metering.summary(
        meter.id, period_start=start, period_end=now, window_size="hour", group_by=["userId"]
    )
    assert {(w.group_by["userId"], w.value) for w in hourly.windows} == {
        ("big", 100 * INT64_MAX),
        ("small", 7),
    }
    assert all(type(w.value) is int for w in hourly.windows)
