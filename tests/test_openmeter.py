"""The OpenMeter-compatible API, driven by OpenMeter's own `openmeter` SDK (unchanged,
pinned in the test extra) and by raw requests as the `cloudevents` package serializes
events: meters, CloudEvents ingestion in all three modes, queries equal to the native
summary, and every error as problem+json."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter import Client
from openmeter.models import Event, MeterCreate, MeterQueryRequest, MeterUpdate

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR_AGO = (NOW - timedelta(hours=1)).replace(minute=7, second=0)


@pytest.fixture
def client(server, org):
    """The SDK as a tenant builds it: our base URL, our org key as its token. No retries:
    tests that expect an error must see the first answer."""
    return Client(endpoint=server.url, token=org["apiKey"], retry_total=0)


def post_events(api, body, content_type):
    return api.post("/api/v1/events", data=json.dumps(body), headers={"Content-Type": content_type})


def problem_of(answer) -> dict:
    assert answer.headers["Content-Type"].startswith("application/problem+json"), answer.text
    problem = answer.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(problem)
    assert problem["status"] == answer.status_code
    return problem


def event(ident, *, subject="customer-1", kind="prompt", data=None, time=HOUR_AGO, source="app"):
    found = {
        "id": ident,
        "source": source,
        "specversion": "1.0",
        "type": kind,
        "subject": subject,
        "data": {"tokens": 10, "model": "gpt-4o"} if data is None else data,
    }
    if time is not None:
        found["time"] = time.isoformat().replace("+00:00", "Z")
    return found


def tokens_meter(client, slug="tokens_total", **extra):
    body = {
        "slug": slug,
        "aggregation": "SUM",
        "eventType": "prompt",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model"},
        **extra,
    }
    return client.meters.create(MeterCreate(body))


def native_total(api, meter_id, **params):
    answer = api.get(
        "/v1/billing/meter-events/summary",
        params={"meterId": meter_id, "periodStart": "2000-01-01", **params},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- meters ------------------------------------------------------------------------


def test_sdk_creates_gets_lists_updates_and_archives_a_meter(client, api):
    created = tokens_meter(client, description="tokens of prompts", name="Tokens")
    assert (created.slug, created.name, created.aggregation) == ("tokens_total", "Tokens", "SUM")
    assert (created.event_type, created.value_property) == ("prompt", "$.tokens")
    assert created.group_by == {"model": "$.model"}
    assert created.created_at.tzinfo is not None
    assert client.meters.get("tokens_total").id == created.id
    assert client.meters.get(created.id).slug == "tokens_total"
    assert [m.slug for m in client.meters.list()] == ["tokens_total"]
    # The same meter through the native API: slug is its event name.
    native = api.get(f"/v1/billing/meters/{created.id}").json()
    assert (native["eventName"], native["aggregationType"], native["dimensions"]) == (
        "tokens_total",
        "sum",
        ["model"],
    )
    changed = client.meters.update("tokens_total", MeterUpdate({"name": "T", "groupBy": {}}))
    assert changed.name == "T" and changed.group_by is None and changed.description is None
    client.meters.delete("tokens_total")
    assert client.meters.list() == []
    assert [m.slug for m in client.meters.list(include_deleted=True)] == ["tokens_total"]
    assert client.meters.get(created.id).deleted_at is not None  # by id: still there
    with pytest.raises(ResourceNotFoundError) as caught:
        client.meters.get("tokens_total")  # by slug: active meters only
    assert caught.value.model["detail"] == "meter not found: tokens_total"


def test_native_meters_show_a_slug_and_read_cloudevents_of_their_event_name(client, api):
    native = api.create_meter(name="Calls", eventName="api_calls", dimensions=["region"])
    seen = client.meters.get("api_calls")
    assert (seen.id, seen.slug, seen.event_type) == (native["id"], "api_calls", "api_calls")
    assert (seen.value_property, seen.group_by) == ("$.value", {"region": "$.region"})
    client.events.ingest_event(
        Event(event("c1", kind="api_calls", data={"value": 3, "region": "eu"}))
    )
    assert native_total(api, native["id"])["value"] == 3


@pytest.mark.parametrize(
    "body, param",
    [
        ({"aggregation": "SUM", "eventType": "p", "valueProperty": "$.v"}, "slug"),
        ({"slug": "Bad-Slug", "aggregation": "SUM", "eventType": "p"}, "slug"),
        ({"slug": "m", "aggregation": "MEDIAN", "eventType": "p"}, "aggregation"),
        ({"slug": "m", "aggregation": "SUM", "eventType": "p"}, "valueProperty"),
        (
            {"slug": "m", "aggregation": "COUNT", "eventType": "p", "valueProperty": "$.v"},
            "valueProperty",
        ),
        (
            {"slug": "m", "aggregation": "SUM", "eventType": "p", "valueProperty": "tokens"},
            "valueProperty",
        ),
        (
            {"slug": "m", "aggregation": "SUM", "eventType": "p", "valueProperty": "$.a[*]"},
            "valueProperty",
        ),
        (
            {"slug": "m", "aggregation": "COUNT", "eventType": "p", "groupBy": {"a-b": "$.a"}},
            "groupBy.a-b",
        ),
        (
            {"slug": "m", "aggregation": "COUNT", "eventType": "p", "groupBy": {"subject": "$.s"}},
            "groupBy.subject",
        ),
        ({"slug": "m", "aggregation": "COUNT", "eventType": "p", "surprise": 1}, "surprise"),
        ({"slug": "m", "aggregation": "COUNT"}, "eventType"),
    ],
)
def test_invalid_meters_are_refused_as_problems(api, body, param):
    answer = api.post("/api/v1/meters", json=body)
    assert answer.status_code == 400
    assert problem_of(answer)["extensions"]["param"] == param
    assert api.get("/api/v1/meters").json() == []


def test_a_taken_slug_is_a_409_problem(client, api):
    tokens_meter(client)
    answer = api.post(
        "/api/v1/meters", json={"slug": "tokens_total", "aggregation": "COUNT", "eventType": "x"}
    )
    assert answer.status_code == 409
    assert problem_of(answer)["detail"] == "meter with the same slug already exists"


def test_group_by_cannot_change_once_the_meter_has_events(client, api):
    tokens_meter(client)
    client.events.ingest_event(Event(event("e1")))
    answer = api.request(
        "PUT", "/api/v1/meters/tokens_total", json={"groupBy": {"other": "$.other"}}
    )
    assert answer.status_code == 409
    assert problem_of(answer)["extensions"]["param"] == "groupBy"
    assert client.meters.get("tokens_total").group_by == {"model": "$.model"}


# -- ingestion -----------------------------------------------------------------------


def test_one_event_feeds_every_meter_of_its_type_exactly_once(client, api):
    tokens = tokens_meter(client)
    calls = client.meters.create(
        MeterCreate({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"})
    )
    client.events.ingest_events([Event(event("e1")), Event(event("e2", data={"tokens": 5}))])
    client.events.ingest_event(Event(event("e1")))  # a retry: counted once
    client.events.ingest_events_json([Event(event("e2", data={"tokens": 5}))])
    assert native_total(api, tokens.id)["value"] == 15
    assert native_total(api, calls.id)["value"] == 2
    # Another source with the same id is another event.
    client.events.ingest_event(Event(event("e1", source="other")))
    assert native_total(api, tokens.id)["value"] == 25


def test_the_three_modes_as_the_cloudevents_package_sends_them(client, api):
    meter = tokens_meter(client)
    attributes = {
        "type": "prompt",
        "source": "svc",
        "subject": "u1",
        "time": HOUR_AGO.isoformat(),
    }
    structured = CloudEvent({**attributes, "id": "s1"}, {"tokens": 1, "model": "a"})
    headers, body = to_structured(structured)
    assert api.post("/api/v1/events", data=body, headers=headers).status_code == 204
    binary = CloudEvent({**attributes, "id": "b1"}, {"tokens": 20, "model": "a"})
    headers, body = to_binary(binary)
    assert api.post("/api/v1/events", data=body, headers=headers).status_code == 204
    batch = [
        json.loads(to_structured(CloudEvent({**attributes, "id": f"x{i}"}, {"tokens": 300}))[1])
        for i in range(2)
    ]
    answer = post_events(api, batch, "application/cloudevents-batch+json")
    assert answer.status_code == 204, answer.text
    assert native_total(api, meter.id)["value"] == 621


def test_values_are_exact_integers_and_anything_else_refuses_the_batch(client, api):
    meter = tokens_meter(client)
    big = 2**62 + 1
    client.events.ingest_events(
        [
            Event(event("i1", data={"tokens": big})),
            Event(event("i2", data={"tokens": "7"})),
            Event(event("i3", data={"tokens": 3.0})),
        ]
    )
    assert native_total(api, meter.id)["value"] == str(big + 10)  # exact, as a string
    for bad in (3.5, "3.5", "many", None, {"n": 1}, True, 2**63):
        body = [event("ok"), event("bad", data={"tokens": bad})]
        answer = post_events(api, body, "application/cloudevents-batch+json")
        assert answer.status_code == 400, bad
        problem = problem_of(answer)
        assert problem["extensions"]["param"] == "events[1].data.tokens", bad
        assert problem["extensions"]["validationErrors"][0]["index"] == 1
    raw = (
        '[{"id":"f","source":"s","specversion":"1.0","type":"prompt","subject":"u",'
        '"data":{"tokens":3.0000000000000001}}]'
    )
    answer = api.post(
        "/api/v1/events", data=raw, headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert answer.status_code == 400
    assert native_total(api, meter.id)["value"] == str(big + 10)  # nothing written


@pytest.mark.parametrize(
    "change, attribute",
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"id": ""}, "id"),
        ({"id": 7}, "id"),
        ({"source": None}, "source"),
        ({"subject": ""}, "subject"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2001-01-01T00:00:00Z"}, "time"),
        ({"data": [1]}, "data"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
    ],
)
def test_an_invalid_event_refuses_its_batch_naming_index_and_attribute(
    client, api, change, attribute
):
    meter = tokens_meter(client)
    body = [event("good"), {**event("bad"), **change}]
    answer = post_events(api, body, "application/cloudevents-batch+json")
    assert answer.status_code == 400, answer.text
    problem = problem_of(answer)
    assert problem["extensions"]["param"] == f"events[1].{attribute}"
    assert problem["detail"].startswith(f"events[1].{attribute}")
    assert native_total(api, meter.id)["value"] == 0


def test_request_level_refusals_are_problems(client, api):
    tokens_meter(client)
    cases = [
        (b"[]", "application/cloudevents-batch+json"),
        (b"{}", "application/cloudevents-batch+json"),
        (b"[]", "application/cloudevents+json"),
        (b"not json", "application/cloudevents+json"),
        (json.dumps(event("e")).encode(), "text/plain"),
        (b"", "application/json"),
    ]
    for data, content_type in cases:
        answer = api.post("/api/v1/events", data=data, headers={"Content-Type": content_type})
        assert answer.status_code == 400, (data, content_type)
        problem_of(answer)


def test_sdk_errors_carry_the_problem(client):
    tokens_meter(client)
    with pytest.raises(HttpResponseError) as caught:
        client.events.ingest_event(Event(event("e1", data={"tokens": "many"})))
    assert caught.value.status_code == 400
    assert caught.value.model["extensions"]["param"] == "events[0].data.tokens"


def test_an_event_no_meter_consumes_is_accepted_listed_and_not_counted(client, api):
    meter = tokens_meter(client)
    answer = post_events(
        api, [event("good"), event("other", kind="nothing")], "application/cloudevents-batch+json"
    )
    assert answer.status_code == 204, answer.text
    assert native_total(api, meter.id)["value"] == 10  # the prompt, not the other type
    (listed,) = [e for e in client.events.list() if e.event.id == "other"]
    assert "no active meter consumes events of type 'nothing'" in listed.validation_error
    assert [e.validation_error for e in client.events.list(id="good")] == [None]


def test_unknown_key_and_unknown_paths_are_problems(server, api):
    answer = requests.get(f"{server.url}/api/v1/meters", timeout=10)
    assert answer.status_code == 401
    problem_of(answer)
    answer = api.get("/api/v1/customers")
    assert answer.status_code == 501
    problem_of(answer)
    answer = api.get("/api/v1/nothing")
    assert answer.status_code == 404
    problem_of(answer)
    answer = api.request("PATCH", "/api/v1/meters")
    assert answer.status_code in (404, 405)
    problem_of(answer)


# -- queries --------------------------------------------------------------------------


DAY_START = (NOW - timedelta(days=3)).replace(hour=0, minute=0, second=0)


def _stream(client):
    """Events of two subjects and two models across three days and a few minutes."""
    events = []
    for i in range(24):
        moment = DAY_START + timedelta(hours=2 * i, minutes=7 * i, seconds=13 * i)
        events.append(
            Event(
                event(
                    f"q{i}",
                    subject=f"customer-{i % 2}",
                    data={"tokens": i + 1, "model": "gpt-4o" if i % 3 else "o1"},
                    time=moment,
                )
            )
        )
    client.events.ingest_events(events)
    return events


def _native_rows(api, meter_id, start, end, **params):
    summary = native_total(
        api,
        meter_id,
        periodStart=start.isoformat().replace("+00:00", "Z"),
        periodEnd=end.isoformat().replace("+00:00", "Z"),
        **({"limit": 1000} if "userId" in params.get("groupBy", ()) else {}),
        **params,
    )
    return summary


def _whole_start(local: datetime, window: str) -> datetime:
    """The start of the zone's whole hour, day or month holding `local`."""
    if window == "HOUR":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if window == "MONTH" else day


@pytest.mark.parametrize("window", ["HOUR", "DAY", "MONTH"])
def test_sdk_query_windows_in_kolkata_equal_the_native_summary(client, api, window):
    meter = tokens_meter(client)
    _stream(client)
    start, end = DAY_START - timedelta(days=1), NOW
    result = client.meters.query_json(
        "tokens_total",
        from_parameter=start,
        to=end,
        window_size=window,
        window_time_zone="Asia/Kolkata",
        group_by=["subject", "model"],
    )
    assert result.window_size == window
    native = _native_rows(
        api,
        meter.id,
        start,
        end,
        windowSize=window.lower(),
        timeZone="Asia/Kolkata",
        groupBy=["userId", "model"],
    )
    # The native summary clips its first window to the period; OpenMeter's is whole.
    expected = sorted(
        (
            _whole_start(datetime.fromisoformat(w["windowStart"]), window),
            w["groupBy"]["userId"],
            w["groupBy"]["model"],
            float(w["value"]),
        )
        for w in native["windows"]
        if w["eventCount"]
    )
    got = sorted((r.window_start, r.subject, r.group_by["model"], r.value) for r in result.data)
    assert got == expected
    assert all(r.window_start.utcoffset() == timedelta(hours=5, minutes=30) for r in result.data)
    assert sum(r.value for r in result.data) == sum(range(1, 25))


def test_query_subject_filter_and_filter_group_by_in_every_form(client, api):
    meter = tokens_meter(client)
    events = _stream(client)
    expected = sum(
        e.data["tokens"]
        for e in events
        if e.subject == "customer-1" and e.data["model"] == "gpt-4o"
    )
    start, end = DAY_START, NOW
    forms = [
        {"filter_group_by": {"model": "gpt-4o"}},  # the SDK's own (a dict's repr)
        {"params": {"filterGroupBy[model]": "gpt-4o"}},  # the spec's deepObject
        {"advanced_meter_group_by_filters": {"model": {"$in": ["gpt-4o"]}}},
    ]
    for form in forms:
        result = client.meters.query_json(
            "tokens_total", from_parameter=start, to=end, subject=["customer-1"], **form
        )
        assert [(r.subject, r.value) for r in result.data] == [("customer-1", expected)], form
        assert result.data[0].group_by == {}
    posted = client.meters.query(  # the SDK's POST form: parameters in a JSON body
        "tokens_total",
        MeterQueryRequest(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "subject": ["customer-1"],
                "filterGroupBy": {"model": ["gpt-4o", "nothing"]},
            }
        ),
    )
    assert [(r.subject, r.value) for r in posted.data] == [("customer-1", expected)]
    native = _native_rows(
        api, meter.id, start, end, userId="customer-1", **{"filter[model]": "gpt-4o"}
    )
    assert native["value"] == expected


def test_query_without_window_or_group_is_one_row_for_the_period(client, api):
    tokens_meter(client)
    _stream(client)
    start, end = DAY_START, NOW
    result = client.meters.query_json("tokens_total", from_parameter=start, to=end)
    assert [(r.value, r.subject, r.group_by) for r in result.data] == [(300.0, None, {})]
    assert (result.data[0].window_start, result.data[0].window_end) == (start, end)
    grouped = client.meters.query_json("tokens_total", to=end, group_by=["model"])
    created = client.meters.get("tokens_total").created_at
    assert {(r.window_start, r.window_end) for r in grouped.data} == {
        (created - timedelta(days=35), end)  # no `from`: no event can be older
    }
    empty = client.meters.query_json(
        "tokens_total", from_parameter=NOW - timedelta(minutes=2), to=NOW
    )
    assert empty.data == []


def test_minute_windows_come_from_raw_events_within_a_bounded_period(client, api):
    tokens_meter(client)
    base = (NOW - timedelta(hours=2)).replace(second=0)
    batch = [
        Event(
            event(
                f"m{i}", data={"tokens": 10**i, "model": "a"}, time=base + timedelta(seconds=25 * i)
            )
        )
        for i in range(5)
    ]
    client.events.ingest_events(batch)
    result = client.meters.query_json(
        "tokens_total",
        from_parameter=base - timedelta(minutes=5),
        to=base + timedelta(minutes=5),
        window_size="MINUTE",
        window_time_zone="Asia/Kolkata",
    )
    # 0s, 25s | 50s, 75s, 100s -> minutes 0 and 1 (0, 25, 50 in minute 0; 75, 100 in 1).
    assert [(r.window_start, r.value) for r in result.data] == [
        (base, 1 + 10 + 100),
        (base + timedelta(minutes=1), 1000 + 10000),
    ]
    assert result.data[0].window_start.utcoffset() == timedelta(hours=5, minutes=30)
    answer = client.meters.query_json  # a day and more is refused, saying the bound
    with pytest.raises(HttpResponseError) as caught:
        answer(
            "tokens_total", from_parameter=base - timedelta(days=2), to=base, window_size="MINUTE"
        )
    assert caught.value.status_code == 400
    assert "24 hours" in caught.value.model["detail"]


def test_subjects_and_group_by_values_of_a_meter(client):
    tokens_meter(client)
    _stream(client)
    assert client.meters.list_subjects("tokens_total") == ["customer-0", "customer-1"]
    assert client.meters.list_group_by_values("tokens_total", "model") == ["gpt-4o", "o1"]
    with pytest.raises(HttpResponseError) as caught:
        client.meters.list_group_by_values("tokens_total", "nothing")
    assert caught.value.status_code == 400
    later = client.meters.list_subjects("tokens_total", from_parameter=NOW - timedelta(minutes=1))
    assert later == []


@pytest.mark.parametrize(
    "params, param",
    [
        ({"groupBy": "nothing"}, "groupBy"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowTimeZone": "Mars/Olympus"}, "windowTimeZone"),
        ({"windowTimeZone": "localtime"}, "windowTimeZone"),
        ({"windowTimeZone": "../../../etc/localtime"}, "windowTimeZone"),
        (
            {"windowSize": "MINUTE", "windowTimeZone": "posix/UTC", "from": "2026-01-01T00:00:00Z"},
            "windowTimeZone",
        ),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"filterGroupBy[nothing]": "x"}, "filterGroupBy"),
        ({"filterGroupBy": "__import__('os')"}, "filterGroupBy"),
        (
            {"advancedMeterGroupByFilters": '{"model": {"$like": "g%"}}'},
            "advancedMeterGroupByFilters.model",
        ),
        ({"from": "yesterday"}, "from"),
    ],
)
def test_invalid_queries_are_problems(client, api, params, param):
    tokens_meter(client)
    answer = api.get("/api/v1/meters/tokens_total/query", params=params)
    assert answer.status_code == 400, answer.text
    assert problem_of(answer)["extensions"]["param"] == param


# -- the event list -------------------------------------------------------------------


def test_event_list_shows_stored_refused_and_conflicting_events(client, api):
    tokens_meter(client)
    client.meters.create(
        MeterCreate({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"})
    )
    client.events.ingest_event(Event(event("ok-1", data={"tokens": 4, "model": "m"})))
    client.events.ingest_event(Event(event("ok-1", data={"tokens": 5, "model": "m"})))  # conflict
    refused = post_events(
        api,
        [event("good"), event("bad", data={"tokens": 1.5})],
        "application/cloudevents-batch+json",
    )
    assert refused.status_code == 400
    listed = client.events.list()
    by_id = {}
    for entry in listed:
        by_id.setdefault(entry.event.id, []).append(entry)
    stored = [e for e in by_id["ok-1"] if e.validation_error is None]
    assert len(stored) == 1  # fed two meters, listed once
    assert stored[0].event.data == {"tokens": 4, "model": "m"}
    assert (stored[0].event.source, stored[0].event.subject) == ("app", "customer-1")
    conflict = [e for e in by_id["ok-1"] if e.validation_error]
    # The count meter reads the same payload from both (a duplicate); the sum does not.
    assert len(conflict) == 1
    assert "conflict: meter tokens_total" in conflict[0].validation_error
    assert conflict[0].event.data == {"tokens": 5, "model": "m"}
    assert "events[1].data.tokens" in by_id["bad"][0].validation_error
    assert by_id["bad"][0].event.data == {"tokens": 1.5}  # as sent
    assert "batch was refused" in by_id["good"][0].validation_error
    assert [e.event.id for e in client.events.list(id="goo")] == ["good"]
    assert client.events.list(subject="nobody") == []
    # The native event log shows the CloudEvent's source and id in its idempotency key.
    meter_id = client.meters.get("tokens_total").id
    native = api.get("/v1/billing/meter-events", params={"meterId": meter_id}).json()
    assert [e["idempotency"] for e in native["events"]] == ["ce:3:app:ok-1"]


def test_event_list_refuses_what_it_does_not_serve(api):
    for params, param in (({"customerId": "x"}, "customerId"), ({"limit": "0"}, "limit")):
        answer = api.get("/api/v1/events", params=params)
        assert answer.status_code == 400
        assert problem_of(answer)["extensions"]["param"] == param


def test_a_native_meter_keeps_reading_its_default_paths(client, api):
    native = api.create_meter(name="Calls", eventName="api_calls", dimensions=["region"])
    answer = api.request(
        "PUT", "/api/v1/meters/api_calls", json={"groupBy": {"region": "$.where.region"}}
    )
    assert answer.status_code == 400
    assert problem_of(answer)["extensions"]["param"] == "groupBy.region"
    renamed = client.meters.update(
        "api_calls", MeterUpdate({"name": "Calls!", "groupBy": {"zone": "$.zone"}})
    )
    assert (renamed.name, renamed.group_by) == ("Calls!", {"zone": "$.zone"})
    client.events.ingest_event(
        Event(event("z1", kind="api_calls", data={"value": 2, "zone": "eu-1"}))
    )
    summary = native_total(api, native["id"], groupBy="zone")
    assert [(w["groupBy"], w["value"]) for w in summary["windows"]] == [({"zone": "eu-1"}, 2)]


def test_windows_are_whole_zone_windows_even_when_the_period_cuts_them(client, api):
    """The native summary clips its edge windows to the period; OpenMeter's windows are
    the zone's whole hours and days (holding only the period's events)."""
    tokens_meter(client)
    base = (NOW - timedelta(hours=3)).replace(minute=0, second=0)  # a UTC (and IST) hour
    client.events.ingest_events(
        [
            Event(event("w1", data={"tokens": 1, "model": "a"}, time=base + timedelta(minutes=10))),
            Event(event("w2", data={"tokens": 2, "model": "a"}, time=base + timedelta(minutes=40))),
        ]
    )
    start, end = base + timedelta(minutes=20), base + timedelta(minutes=50)
    hours = client.meters.query_json(
        "tokens_total",
        from_parameter=start,
        to=end,
        window_size="HOUR",
        window_time_zone="Asia/Kolkata",
    )
    kolkata_hour = base + timedelta(minutes=30)  # IST hours start at UTC's half hours
    assert [(r.window_start, r.window_end, r.value) for r in hours.data] == [
        (kolkata_hour, kolkata_hour + timedelta(hours=1), 2)
    ]
    days = client.meters.query_json(
        "tokens_total", from_parameter=start, to=end, window_size="DAY", window_time_zone="UTC"
    )
    midnight = base.replace(hour=0)
    assert [(r.window_start, r.window_end, r.value) for r in days.data] == [
        (midnight, midnight + timedelta(days=1), 2)
    ]


def test_concurrent_clients_with_duplicates_count_each_event_once(server, org, api):
    """Four SDK clients send overlapping batches (each id always with its own payload)
    to two meters of one type: every (source, id) counts once in each."""
    first = Client(endpoint=server.url, token=org["apiKey"], retry_total=0)
    tokens = tokens_meter(first)
    count = first.meters.create(
        MeterCreate({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"})
    )
    pool = [
        event(f"c{i}", subject=f"u{i % 7}", data={"tokens": i * 3 + 1, "model": f"m{i % 3}"})
        for i in range(60)
    ]

    def send(seed):
        client = Client(endpoint=server.url, token=org["apiKey"])  # retries on, as tenants
        picks = random.Random(seed)
        for _ in range(8):
            client.events.ingest_events([Event(picks.choice(pool)) for _ in range(20)])

    with ThreadPoolExecutor(4) as workers:
        list(workers.map(send, range(4)))
    for leftover in pool:  # whatever no thread picked
        first.events.ingest_event(Event(leftover))
    assert native_total(api, tokens.id)["value"] == sum(e["data"]["tokens"] for e in pool)
    assert native_total(api, count.id)["value"] == len(pool)
    by_model = first.meters.query_json("tokens_total", group_by=["model"])
    assert sorted((r.group_by["model"], r.value) for r in by_model.data) == [
        (f"m{k}", float(sum(e["data"]["tokens"] for e in pool[k::3]))) for k in range(3)
    ]


def test_binary_mode_is_checked_like_the_others(client, api):
    meter = tokens_meter(client)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "svc",
        "ce-type": "prompt",
        "ce-subject": "u1",
        "content-type": "application/json",
    }
    cases = [
        ({}, b"[1]", "events[0].data"),
        ({"ce-specversion": "0.3"}, b'{"tokens": 1}', "events[0].specversion"),
        ({"ce-time": "noon"}, b'{"tokens": 1}', "events[0].time"),
        ({}, b'{"tokens": 1.25}', "events[0].data.tokens"),
        ({}, b"oops", "body"),
    ]
    for change, body, param in cases:
        answer = api.post("/api/v1/events", data=body, headers={**headers, **change})
        assert answer.status_code == 400, (change, body)
        assert problem_of(answer)["extensions"]["param"] == param, (change, body)
    before = datetime.now(UTC)
    answer = api.post("/api/v1/events", data=b'{"tokens": 9}', headers=headers)  # no ce-time
    assert answer.status_code == 204
    stored = api.get("/v1/billing/meter-events", params={"meterId": meter.id}).json()["events"]
    assert [e["value"] for e in stored] == [9]
    assert datetime.fromisoformat(stored[0]["timestamp"]) >= before.replace(microsecond=0)


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        ("SUM", 5 + 7 + 9 + 7),
        ("COUNT", 4),
        ("AVG", (5 + 7 + 9 + 7) / 4),
        ("MIN", 5),
        ("MAX", 9),
        ("LATEST", 7),
        ("UNIQUE_COUNT", 3),
    ],
)
def test_every_aggregation_answers_the_native_summary(client, api, aggregation, expected):
    body = {"slug": "m", "aggregation": aggregation, "eventType": "prompt"}
    if aggregation != "COUNT":
        body["valueProperty"] = "$.tokens"
    meter = client.meters.create(MeterCreate(body))
    assert meter.aggregation == aggregation
    client.events.ingest_events(
        [
            Event(event(f"a{i}", data={"tokens": value}, time=HOUR_AGO + timedelta(minutes=i)))
            for i, value in enumerate((5, 7, 9, 7))
        ]
    )
    rows = client.meters.query_json("m", from_parameter=HOUR_AGO, to=NOW).data
    assert [row.value for row in rows] == [expected]
    native = native_total(api, meter.id)
    assert native["value"] == expected
    assert native["aggregationType"] == ("last" if aggregation == "LATEST" else aggregation.lower())


def test_a_body_over_the_limit_is_a_413_problem(api, config):
    body = b"[" + b" " * config.max_body_bytes + b"]"
    answer = api.post(
        "/api/v1/events", data=body, headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert answer.status_code == 413
    assert problem_of(answer)["title"] == "Request Entity Too Large"

    def chunked():  # no Content-Length: the limit holds while reading
        yield b"["
        for _ in range(config.max_body_bytes // 65536 + 2):
            yield b" " * 65536
        yield b"]"

    answer = api.post(
        "/api/v1/events",
        data=chunked(),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert answer.status_code == 413
    problem_of(answer)


def test_a_long_batch_is_stored_whole_in_several_commits(client, api, config):
    """OpenMeter's clients send batches of any length: up to ten times the native limit
    are taken, stored in commits of at most `max_batch_events` (event, meter) pairs."""
    tokens = tokens_meter(client)
    calls = client.meters.create(
        MeterCreate({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"})
    )
    events = [event(f"l{i}", subject=f"u{i % 9}", data={"tokens": i}) for i in range(251)]
    answer = api.post("/api/v1/events", json=events)  # application/json, an array
    assert answer.status_code == 204, answer.text
    assert answer.headers["X-Datastore-Usage"].startswith("rpcs=")
    assert native_total(api, tokens.id)["value"] == sum(range(251))
    assert native_total(api, calls.id)["value"] == 251
    again = api.post("/api/v1/events", json=events[::-1])  # a retry: nothing counted twice
    assert again.status_code == 204
    assert native_total(api, tokens.id)["value"] == sum(range(251))
    too_many = [event(f"t{i}") for i in range(config.max_batch_events * 10 + 1)]
    answer = api.post("/api/v1/events", json=too_many)
    assert answer.status_code == 400
    assert "at most 1000 events" in problem_of(answer)["detail"]


def test_nested_and_bracketed_paths_read_their_values(client, api):
    meter = client.meters.create(
        MeterCreate(
            {
                "slug": "input_tokens",
                "aggregation": "SUM",
                "eventType": "llm",
                "valueProperty": "$['usage']['input tokens']",
                "groupBy": {"model": "$.meta.model", "tier": '$["meta"].tier'},
            }
        )
    )
    data = {"usage": {"input tokens": "12"}, "meta": {"model": "x", "tier": 2}}
    client.events.ingest_event(Event(event("p1", kind="llm", data=data)))
    client.events.ingest_event(Event(event("p2", kind="llm", data={"usage": {"input tokens": 3}})))
    rows = client.meters.query_json("input_tokens", group_by=["model", "tier"]).data
    assert sorted((r.group_by["model"], r.group_by["tier"], r.value) for r in rows) == [
        ("", "", 3.0),  # missing dimensions read as ""
        ("x", "2", 12.0),
    ]
    assert native_total(api, meter.id)["value"] == 15
