"""The client's direct calls against the real service: meters, summaries, cancel, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from metering_client import ApiError, Event, Meter, Summary, Window

KOLKATA = ZoneInfo("Asia/Kolkata")


def test_meters_are_created_listed_read_updated_and_archived(metering):
    created = metering.create_meter(
        "Input tokens", "input_tokens", dimensions=["model"], metadata={"team": "ml"}
    )
    assert isinstance(created, Meter)
    assert (created.event_name, created.aggregation_type, created.currency) == (
        "input_tokens",
        "sum",
        "usd",
    )
    assert created.dimensions == ("model",) and created.metadata == {"team": "ml"}
    assert created.status == "active" and created.created_at.tzinfo is not None

    other = metering.create_meter("Calls", "api_calls", aggregation_type="count")
    assert other.aggregation_type == "count"
    listed = metering.list_meters(page_size=1)  # two pages, both read
    assert sorted(m.id for m in listed) == sorted([created.id, other.id])

    renamed = metering.update_meter(created.id, name="Tokens in", metadata={"team": "infra"})
    assert (renamed.name, renamed.metadata) == ("Tokens in", {"team": "infra"})
    assert metering.get_meter(created.id) == renamed

    archived = metering.archive_meter(created.id)
    assert archived.status == "archived"
    assert metering.archive_meter(created.id).status == "archived"  # again: harmless


def test_errors_carry_the_envelope_and_are_not_retried(metering, proxy):
    with pytest.raises(ApiError) as missing:
        metering.get_meter("nosuchmeter")
    assert missing.value.status == 404 and missing.value.code == "meter_not_found"
    assert "meter not found" in missing.value.message

    metering.create_meter("Input tokens", "input_tokens")
    before = proxy.faults["pass"]
    with pytest.raises(ApiError) as taken:
        metering.create_meter("Input tokens", "input_tokens")
    assert taken.value.status == 409 and "input_tokens" in taken.value.message
    assert proxy.faults["pass"] == before + 1  # one request: a 4xx is final

    with pytest.raises(ApiError) as bad:
        metering.create_meter("Bad", "bad name!")
    assert bad.value.status == 400 and bad.value.param == "eventName"


def test_a_create_whose_answer_was_lost_returns_the_meter_it_made(metering, proxy):
    first = True

    def lose_first_create(request):
        nonlocal first
        if request.method == "POST" and request.path == "/v1/billing/meters" and first:
            first = False
            return "drop_after"
        return "pass"

    proxy.plan = lose_first_create
    meter = metering.create_meter("Input tokens", "input_tokens")
    assert proxy.faults["drop_after"] == 1
    assert [m.id for m in metering.list_meters()] == [meter.id]


def _record_now(metering, events):
    outcomes = metering.send_now(events)
    assert [o.status for o in outcomes] == ["created"] * len(events)
    return outcomes


def test_summaries_come_back_typed_with_windows_time_zone_groups_and_filters(metering):
    meter = metering.create_meter("Input tokens", "input_tokens", dimensions=["model"])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=3)
    events = [
        Event.new(
            event_name="input_tokens",
            user_id="ann",
            value=10,
            timestamp=start + timedelta(minutes=5),
            dimensions={"model": "a"},
        ),
        Event.new(
            event_name="input_tokens",
            user_id="ann",
            value=20,
            timestamp=start + timedelta(hours=1, minutes=5),
            dimensions={"model": "b"},
        ),
        Event.new(
            event_name="input_tokens",
            user_id="bob",
            value=5,
            timestamp=start + timedelta(hours=1, minutes=10),
            dimensions={"model": "a"},
        ),
    ]
    _record_now(metering, events)

    total = metering.summary(meter.id, period_start=start, period_end=now)
    assert isinstance(total, Summary) and total.windows is None
    assert (total.value, total.event_count, total.period_start) == (35, 3, start)

    ann = metering.summary(meter.id, user_id="ann", period_start=start, period_end=now)
    assert (ann.user_id, ann.value) == ("ann", 30)

    hourly = metering.summary(
        meter.id,
        period_start=start,
        period_end=now,
        window_size="hour",
        time_zone="Asia/Kolkata",
        group_by=["model"],
        filters={"model": ["a", "b"]},
    )
    assert all(isinstance(w, Window) for w in hourly.windows)
    got = {(w.window_start, w.group_by["model"]): (w.value, w.event_count) for w in hourly.windows}
    expected = {}
    for event in events:  # Kolkata's hours start at half past UTC hours
        moment = datetime.fromisoformat(event.timestamp).astimezone(KOLKATA)
        window = max(moment.replace(minute=0, second=0, microsecond=0), start)
        value, count = expected.get((window, event.dimensions["model"]), (0, 0))
        expected[(window, event.dimensions["model"])] = (value + event.value, count + 1)
    assert got == expected
    assert all(w.window_start.utcoffset() == timedelta(hours=5, minutes=30) for w in hourly.windows)

    only_a = metering.summary(
        meter.id, period_start=start.date(), period_end=date.today(), filters={"model": "a"}
    )
    assert (only_a.value, only_a.event_count) == (15, 2)

    with pytest.raises(ApiError) as bad:
        metering.summary(meter.id, window_size="week", period_start=start)
    assert bad.value.param == "windowSize"


def test_events_are_cancelled_by_key_and_by_id(metering):
    meter = metering.create_meter("Input tokens", "input_tokens")
    kept, by_key, by_id = (
        Event.new(event_name="input_tokens", user_id="ann", value=v) for v in (1, 10, 100)
    )
    outcomes = _record_now(metering, [kept, by_key, by_id])

    cancelled = metering.cancel(
        idempotency_keys=[by_key.idempotency_key], event_name="input_tokens"
    )
    cancelled += metering.cancel(ids=[outcomes[2].id])
    assert [c.status for c in cancelled] == ["cancelled", "cancelled"]
    assert cancelled[1].id == outcomes[2].id
    assert metering.cancel(ids=[outcomes[2].id])[0].status == "already_cancelled"
    assert metering.summary(meter.id, user_id="ann").value == 1
    with pytest.raises(ValueError):
        metering.cancel(idempotency_keys=["k"])  # which meter?


def test_pages_of_users_and_top_users(metering):
    meter = metering.create_meter("Input tokens", "input_tokens")
    when = datetime.now(UTC) - timedelta(hours=1)
    values = {f"user-{n}": n * 10 for n in range(7)}
    _record_now(
        metering,
        [
            Event.new(event_name="input_tokens", user_id=user, value=value, timestamp=when)
            for user, value in values.items()
        ],
    )
    pages = list(metering.summary_pages(meter.id, limit=3))
    assert [len(page.windows) for page in pages] == [3, 3, 1]
    assert pages[0].next_cursor and pages[-1].next_cursor is None
    assert all(page.value == sum(values.values()) for page in pages)  # the whole period's
    got = {w.group_by["userId"]: w.value for page in pages for w in page.windows}
    assert got == values
    second = metering.summary(meter.id, group_by=["userId"], limit=3, cursor=pages[0].next_cursor)
    assert second.windows == pages[1].windows

    top = metering.summary(meter.id, group_by=["userId"], order_by="-value", limit=2)
    assert [(w.group_by["userId"], w.value) for w in top.windows] == [
        ("user-6", 60),
        ("user-5", 50),
    ]
    with pytest.raises(ApiError) as bad:
        metering.summary(meter.id, group_by=["userId"], cursor="not-a-cursor")
    assert bad.value.param == "cursor"
