"""Streaming export (issue 17): NDJSON and CSV shapes, filters, cancelled events, and a
cursor that resumes anywhere without duplicates or gaps."""

from __future__ import annotations

import csv
import http.client
import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as core_exceptions

from app import deadline
from app.services import export
from app.storage import rpc
from tests.support.http import Api, error_of
from tests.test_ratelimit import fresh_minute

NOW = datetime.now(UTC).replace(microsecond=0)
EXPORT = "/v1/billing/meter-events/export"


def _at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def _ndjson(api, **params) -> tuple[list[dict], dict]:
    """The events and the trailer of an NDJSON export."""
    answer = api.get(EXPORT, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert set(lines[-1]) == {"export"}, lines[-1]
    return lines[:-1], lines[-1]["export"]


def _csv(api, **params) -> list[dict]:
    answer = api.get(EXPORT, params={**params, "format": "csv"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


@pytest.fixture
def recorded(api):
    """A meter with dimension `model`: five events of ann and bob (two at the very same
    timestamp, one with metadata), the fourth cancelled."""
    meter = api.create_meter(dimensions=["model", "region"])
    events = [
        {"userId": "ann", "value": 1, "timestamp": _at(50), "idempotency": "a1",
         "dimensions": {"model": "gpt"}, "metadata": {"request": "r-1", "retries": 2}},
        {"userId": "bob", "value": 20, "timestamp": _at(40), "idempotency": "b1"},
        {"userId": "ann", "value": 3, "timestamp": _at(40), "idempotency": "a2",
         "dimensions": {"model": "llama", "region": "eu"}},
        {"userId": "bob", "value": 40, "timestamp": _at(30), "idempotency": "b2"},
        {"userId": "ann", "value": 5, "timestamp": _at(20)},
    ]  # fmt: skip
    ids = [e["id"] for e in api.record(*({"meterId": meter["id"], **e} for e in events))["events"]]
    cancelled = api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": ids[3]}]})
    assert cancelled.status_code == 200, cancelled.text
    return meter, events, ids


def test_ndjson_lines_carry_every_field_oldest_first(api, recorded):
    meter, _events, ids = recorded
    lines, trailer = _ndjson(api, meterId=meter["id"])
    assert trailer == {"complete": True, "count": 4, "cursor": None}
    assert {line["id"] for line in lines} == {ids[0], ids[1], ids[2], ids[4]}
    assert [line["timestamp"] for line in lines] == sorted(line["timestamp"] for line in lines)
    first = lines[0]
    assert first == {
        "id": ids[0],
        "eventName": "input_tokens",
        "userId": "ann",
        "value": 1,
        "timestamp": _at(50),
        "idempotency": "a1",
        "dimensions": {"model": "gpt"},
        "metadata": {"request": "r-1", "retries": 2},
        "status": "active",
        "amends": None,
        "amendedBy": None,
    }
    assert lines[-1]["idempotency"] == "" and lines[-1]["metadata"] == {}


def test_an_amended_event_and_its_replacement_are_linked_both_ways(api, recorded):
    meter, _events, ids = recorded
    answer = api.post(f"/v1/billing/meter-events/{ids[1]}/amend", json={"value": 21})
    assert answer.status_code == 200, answer.text
    lines, _trailer = _ndjson(api, meterId=meter["id"], includeCancelled="true")
    by_id = {line["id"]: line for line in lines}
    [replacement] = [line for line in lines if line["amends"] == ids[1]]
    assert by_id[ids[1]]["amendedBy"] == replacement["id"]
    assert (by_id[ids[1]]["status"], replacement["status"]) == ("cancelled", "active")
    assert replacement["value"] == 21 and replacement["amendedBy"] is None
    assert by_id[ids[3]]["amendedBy"] is None  # cancelled, never amended
    rows = {row["id"]: row for row in _csv(api, meterId=meter["id"], includeCancelled="true")}
    assert rows[ids[1]]["amendedBy"] == replacement["id"]
    assert rows[replacement["id"]]["amends"] == ids[1]


def test_cancelled_events_only_when_asked_and_marked(api, recorded):
    meter, _events, ids = recorded
    lines, trailer = _ndjson(api, meterId=meter["id"], includeCancelled="true")
    assert trailer["count"] == 5
    statuses = {line["id"]: line["status"] for line in lines}
    assert statuses == {ids[0]: "active", ids[1]: "active", ids[2]: "active",
                        ids[3]: "cancelled", ids[4]: "active"}  # fmt: skip


def test_csv_has_a_header_and_the_same_events(api, recorded):
    meter, _events, ids = recorded
    rows = _csv(api, meterId=meter["id"], includeCancelled="true")
    assert list(rows[0]) == [
        "eventName", "userId", "value", "timestamp", "idempotency",
        "dimensions.model", "dimensions.region", "metadata",
        "id", "status", "amends", "amendedBy",
    ]  # fmt: skip
    lines, _trailer = _ndjson(api, meterId=meter["id"], includeCancelled="true")
    assert [row["id"] for row in rows] == [line["id"] for line in lines]
    by_id = {row["id"]: row for row in rows}
    assert json.loads(by_id[ids[0]]["metadata"]) == {"request": "r-1", "retries": 2}
    assert by_id[ids[1]]["metadata"] == ""  # no metadata: an empty cell
    assert (
        by_id[ids[2]]["dimensions.region"] == "eu" and by_id[ids[2]]["dimensions.model"] == "llama"
    )
    assert by_id[ids[1]]["dimensions.model"] == "" and by_id[ids[1]]["value"] == "20"
    assert by_id[ids[3]]["status"] == "cancelled"
    assert by_id[ids[4]]["timestamp"] == _at(20)


def test_filters_by_user_and_period(api, recorded):
    meter, _events, ids = recorded
    lines, _ = _ndjson(api, meterId=meter["id"], userId="ann")
    assert [line["id"] for line in lines] == [ids[0], ids[2], ids[4]]
    lines, _ = _ndjson(api, meterId=meter["id"], periodStart=_at(40), periodEnd=_at(20))
    assert {line["id"] for line in lines} == {ids[1], ids[2]}
    lines, _ = _ndjson(
        api, meterId=meter["id"], userId="bob", periodStart=_at(45), includeCancelled="true"
    )
    assert [line["id"] for line in lines] == [ids[1], ids[3]]
    assert _csv(api, meterId=meter["id"], userId="nobody") == []


@pytest.mark.parametrize("user", [None, "ann"])
def test_resuming_after_any_event_gives_the_rest_of_the_whole_export(api, recorded, user):
    meter, _events, _ids = recorded
    params = {"meterId": meter["id"], "includeCancelled": "true"}
    if user:
        params["userId"] = user
    whole, _ = _ndjson(api, **params)
    for position, line in enumerate(whole):
        rest, trailer = _ndjson(api, **params, cursor=line["id"])
        assert rest == whole[position + 1 :]
        assert trailer["complete"] is True
        rows = _csv(api, **params, cursor=line["id"])
        assert [row["id"] for row in rows] == [e["id"] for e in whole[position + 1 :]]


def test_many_pages_and_ties_resume_exactly(api, monkeypatch):
    """Pages of 2 events, 9 events of which 6 share one timestamp: every cursor resumes
    right after its event, on every page boundary too."""
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    meter = api.create_meter()
    api.record(
        *(
            {"meterId": meter["id"], "userId": f"u{n % 2}", "value": n, "idempotency": f"k{n}",
             "timestamp": _at(10 if 2 <= n < 8 else 30 - n)}
            for n in range(9)
        )
    )  # fmt: skip
    whole, trailer = _ndjson(api, meterId=meter["id"])
    assert trailer["count"] == 9 and sorted(line["value"] for line in whole) == list(range(9))
    for position, line in enumerate(whole):
        rest, _ = _ndjson(api, meterId=meter["id"], cursor=line["id"])
        assert rest == whole[position + 1 :]


def test_an_answer_past_its_time_bound_ends_with_the_cursor_to_resume(serve, org):
    """export_answer_seconds tiny: each answer stops after one event and says where to
    go on; following the cursors gives the whole export, once each."""
    hurried = Api(serve(export_answer_seconds=1e-9), org["apiKey"])
    meter = hurried.create_meter()
    hurried.record(
        *({"meterId": meter["id"], "userId": "u", "value": n, "timestamp": _at(9 - n)}
          for n in range(4))
    )  # fmt: skip
    seen, cursor = [], None
    while True:
        params = {"meterId": meter["id"], **({"cursor": cursor} if cursor else {})}
        lines, trailer = _ndjson(hurried, **params)
        seen += [line["value"] for line in lines]
        if trailer["complete"]:
            break
        assert len(lines) == 1 and trailer["cursor"] == lines[-1]["id"]
        cursor = trailer["cursor"]
    assert seen == [0, 1, 2, 3]


def test_a_cursor_must_be_an_event_of_this_export(api, other_api, recorded):
    meter, _events, ids = recorded
    other = api.create_meter(name="Other", eventName="other")
    elsewhere = api.record({"meterId": other["id"], "userId": "ann", "value": 1})["events"][0]
    foreign_meter = other_api.create_meter()
    foreign = other_api.record({"meterId": foreign_meter["id"], "userId": "ann", "value": 1})
    for cursor, extra in [
        ("not-an-id", {}),
        (elsewhere["id"], {}),  # another meter's event
        (ids[1], {"userId": "ann"}),  # bob's event, in ann's export
        (ids[0], {"periodStart": _at(45)}),  # before the period
        (ids[4], {"periodEnd": _at(25)}),  # after it
        (foreign["events"][0]["id"], {}),  # another org's event
    ]:
        answer = api.get(EXPORT, params={"meterId": meter["id"], "cursor": cursor, **extra})
        assert answer.status_code == 400, (cursor, extra, answer.text)
        assert error_of(answer)["param"] == "cursor"


@pytest.mark.parametrize(
    "params, status, param",
    [
        ({}, 400, "meterId"),
        ({"meterId": "nope"}, 404, "meterId"),
        ({"format": "xml"}, 400, "format"),
        ({"periodStart": "2026-01-02", "periodEnd": "2026-01-01"}, 400, "periodEnd"),
        ({"includeCancelled": "maybe"}, 400, "includeCancelled"),
        ({"colour": "red"}, 400, "colour"),
    ],
)
def test_bad_queries_name_the_field(api, recorded, params, status, param):
    meter, _events, _ids = recorded
    query = {"meterId": meter["id"], **params} if "meterId" not in params and params else params
    answer = api.get(EXPORT, params=query)
    assert answer.status_code == status, answer.text
    assert error_of(answer)["param"] == param


def test_one_org_cannot_export_anothers_meter(other_api, recorded):
    meter, _events, _ids = recorded
    answer = other_api.get(EXPORT, params={"meterId": meter["id"]})
    assert answer.status_code == 404 and error_of(answer)["param"] == "meterId"


def test_the_reads_of_a_streamed_export_are_charged_to_the_read_budget(
    serve, org, api, monkeypatch
):
    """after_request charges ordinary requests before a streamed body is read (here the
    first page of 10): the export charges the pages it streams itself, so 40 events read
    spend a budget of 30."""
    monkeypatch.setattr(export, "PAGE_SIZE", 10)
    meter = api.create_meter()  # recorded through the suite's server, which has no budget
    api.record(
        *({"meterId": meter["id"], "userId": "u", "value": n, "timestamp": _at(n)}
          for n in range(40))
    )  # fmt: skip
    budgeted = Api(serve(read_budget_per_minute=30), org["apiKey"])
    fresh_minute()  # the budget is per minute: no test straddles two
    lines, trailer = _ndjson(budgeted, meterId=meter["id"])
    assert trailer["count"] == len(lines) == 40
    refused = budgeted.get("/v1/billing/meters")
    assert refused.status_code == 429, refused.text
    assert "read budget" in error_of(refused)["message"]


# -- session 8: every answer bounded in time, its first bytes early ---------------------


def _slow_event_query(monkeypatch, slow_call: int, behaviour):
    """Wrap the Datastore RPCs: the `slow_call`-th query of `meter-event` runs
    `behaviour()` first (a stand-in for the emulator's whole-kind scan of a large meter,
    which no small test can make slow for real)."""
    real_call, calls = rpc._call, []

    def call(name, request):
        if (
            name == "run_query"
            and request.query.kind
            and request.query.kind[0].name == ("meter-event")
        ):
            calls.append(name)
            if len(calls) == slow_call:
                behaviour()
        return real_call(name, request)

    monkeypatch.setattr(rpc, "_call", call)
    return calls


def test_a_page_slower_than_the_answer_bound_ends_the_answer_with_its_cursor(
    serve, org, monkeypatch
):
    """A page read cut by the answer's time bound (the second page takes all of it) ends
    the answer with its trailer, `complete: false` and the last id sent, instead of a
    stream cut without a trailer; resuming from it gives the rest, each event once."""
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    bounded = Api(serve(export_answer_seconds=1.5), org["apiKey"])
    meter = bounded.create_meter()
    bounded.record(
        *({"meterId": meter["id"], "userId": "u", "value": n, "timestamp": _at(9 - n)}
          for n in range(5))
    )  # fmt: skip

    def until_the_deadline():  # then fail as gRPC does when its timeout passes
        time.sleep(max(0.0, deadline.remaining() or 0.0))
        raise core_exceptions.DeadlineExceeded("the query took too long")

    _slow_event_query(monkeypatch, 2, until_the_deadline)
    first, trailer = _ndjson(bounded, meterId=meter["id"])
    assert [line["value"] for line in first] == [0, 1]
    assert trailer == {"complete": False, "count": 2, "cursor": first[-1]["id"]}
    rest, trailer = _ndjson(bounded, meterId=meter["id"], cursor=trailer["cursor"])
    assert [line["value"] for line in rest] == [2, 3, 4] and trailer["complete"] is True


def test_an_export_answers_its_status_before_its_first_page_is_read(api, server, monkeypatch):
    """The status line and headers leave before the first page's query runs, so a client
    sees the answer begin however slow that query is (a 100,000-event meter's first page
    took more than the request deadline on the emulator)."""
    meter = api.create_meter()
    api.record({"meterId": meter["id"], "userId": "u", "value": 7, "timestamp": _at(5)})
    headers_seen, order = threading.Event(), []
    _slow_event_query(monkeypatch, 1, lambda: order.append(headers_seen.wait(20)))
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request(
        "GET", f"{EXPORT}?meterId={meter['id']}", headers={"Authorization": f"Bearer {api.key}"}
    )
    answer = connection.getresponse()
    headers_seen.set()
    body = answer.read().decode()
    connection.close()
    assert answer.status == 200 and order == [True]  # the query waited for the headers
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line.get("value") for line in lines[:-1]] == [7]
    assert lines[-1]["export"]["complete"] is True


def test_a_csv_header_comes_from_the_meter_alone_whatever_the_metadata(api):
    """The header names no metadata key (one JSON `metadata` column), so it needs no pass
    over the events: events with more distinct metadata names than any header should hold
    still export, and the header is the same with or without events."""
    meter = api.create_meter(dimensions=["model"])
    empty = api.get(EXPORT, params={"meterId": meter["id"], "format": "csv"})
    assert empty.status_code == 200, empty.text
    header = empty.text.splitlines()[0]
    batch = [
        {"meterId": meter["id"], "userId": "ann", "value": 1, "timestamp": _at(10),
         "metadata": {f"name{n}-{k}": k for k in range(3)}}
        for n in range(100)
    ]  # fmt: skip
    assert api.post("/v1/billing/meter-events", json={"events": batch}).status_code == 201
    rows = _csv(api, meterId=meter["id"])
    answer = api.get(EXPORT, params={"meterId": meter["id"], "format": "csv"})
    assert answer.text.splitlines()[0] == header and len(rows) == 100
    assert {frozenset(json.loads(row["metadata"])) for row in rows} == {
        frozenset(f"name{n}-{k}" for k in range(3)) for n in range(100)
    }
