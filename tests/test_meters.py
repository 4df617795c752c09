"""Meters: create, read, list with cursors, change, archive, unique event names."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.http import error_of


def test_create_answers_the_original_shape_with_defaults(api):
    answer = api.post("/v1/billing/meters", json={"name": "API calls", "eventName": "api_calls"})
    assert answer.status_code == 201
    meter = answer.json()
    assert {
        "id",
        "name",
        "eventName",
        "aggregationType",
        "currency",
        "dimensions",
        "createdAt",
    } <= set(meter)
    assert (meter["aggregationType"], meter["currency"], meter["dimensions"]) == ("sum", "usd", [])
    assert meter["createdAt"].endswith("Z")
    assert len(meter["id"]) >= 10


def test_aggregation_and_currency_are_lower_cased(api):
    meter = api.create_meter(aggregationType="LAST", currency="EUR")
    assert (meter["aggregationType"], meter["currency"]) == ("last", "eur")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"eventName": "x"}, "name"),
        ({"name": "x"}, "eventName"),
        ({"name": "x", "eventName": "x", "aggregationType": "median"}, "aggregationType"),
        ({"name": "x", "eventName": "has space"}, "eventName"),
        ({"name": "x", "eventName": "ends_in_newline\n"}, "eventName"),
        ({"name": "x", "eventName": "x", "dimensions": ["model\n"]}, "dimensions[0]"),
        ({"name": "x", "eventName": "x", "currency": "dollars"}, "currency"),
        ({"name": "x", "eventName": "x", "dimensions": ["a", "a"]}, "dimensions"),
        ({"name": "x", "eventName": "x", "dimensions": "model"}, "dimensions"),
        ({"name": "x", "eventName": "x", "dimensions": ["userId"]}, "dimensions"),
        ({"name": "x", "eventName": "x", "surprise": 1}, "surprise"),
    ],
)
def test_invalid_meters_are_refused_naming_the_field(api, body, param):
    answer = api.post("/v1/billing/meters", json=body)
    assert answer.status_code == 400
    assert error_of(answer)["param"] == param
    assert api.get("/v1/billing/meters").json()["count"] == 0


def test_get_one_meter_and_404_for_unknown_ids(api):
    meter = api.create_meter()
    assert api.get(f"/v1/billing/meters/{meter['id']}").json() == meter
    for bad in ["nope", "0000000000", meter["id"][:-1] + "x", "a" * 300]:
        answer = api.get(f"/v1/billing/meters/{bad}")
        assert answer.status_code == 404
        assert error_of(answer)["message"] == "meter not found"


def test_list_pages_with_a_cursor(api):
    created = {api.create_meter(eventName=f"m{i}")["id"] for i in range(5)}
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/billing/meters", params=params).json()
        pages += 1
        assert page["count"] == len(page["meters"]) <= 2
        seen += [m["id"] for m in page["meters"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5 and set(seen) == created


def test_list_refuses_a_bad_cursor_or_limit(api):
    for params, param in [
        ({"cursor": "garbage!!"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": 10000}, "limit"),
    ]:
        answer = api.get("/v1/billing/meters", params=params)
        assert answer.status_code == 400, params
        assert error_of(answer)["param"] == param


def test_event_names_are_unique_per_org(api):
    api.create_meter(eventName="tokens")
    again = api.post("/v1/billing/meters", json={"name": "Other", "eventName": "tokens"})
    assert again.status_code == 409
    assert error_of(again)["param"] == "eventName"


def test_of_concurrent_creates_with_one_event_name_exactly_one_succeeds(api):
    # Eight transactions on one name collide; one that keeps colliding past its retries
    # is answered 503 (retry later), which a client retries, as this one does.
    def create(i):
        for _attempt in range(6):
            answer = api.post("/v1/billing/meters", json={"name": f"n{i}", "eventName": "racy"})
            if answer.status_code != 503:
                return answer
            time.sleep(random.uniform(0.1, 0.4))
        return answer

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(r.status_code for r in pool.map(create, range(8)))
    assert statuses == [201] + [409] * 7
    assert api.get("/v1/billing/meters").json()["count"] == 1


def test_patch_changes_name_and_metadata_any_time(api):
    meter = api.create_meter()
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    answer = api.patch(
        f"/v1/billing/meters/{meter['id']}", json={"name": "Renamed", "metadata": {"owner": "ml"}}
    )
    assert answer.status_code == 200
    assert (answer.json()["name"], answer.json()["metadata"]) == ("Renamed", {"owner": "ml"})
    assert api.get(f"/v1/billing/meters/{meter['id']}").json()["name"] == "Renamed"


def test_patch_changes_the_shape_only_while_the_meter_has_no_events(api):
    meter = api.create_meter()
    path = f"/v1/billing/meters/{meter['id']}"
    changed = api.patch(
        path, json={"eventName": "renamed", "aggregationType": "count", "dimensions": ["model"]}
    )
    assert changed.status_code == 200
    assert changed.json()["aggregationType"] == "count"
    api.record({"meterId": meter["id"], "userId": "u", "value": 1})
    for field, value in [
        ("eventName", "again"),
        ("aggregationType", "sum"),
        ("dimensions", ["model", "region"]),
    ]:
        refused = api.patch(path, json={field: value})
        assert refused.status_code == 409, field
        assert error_of(refused)["param"] == field
    same = api.patch(path, json={"aggregationType": "count"})  # unchanged value is fine
    assert same.status_code == 200


def test_patch_cannot_take_another_meters_event_name(api):
    api.create_meter(eventName="taken")
    meter = api.create_meter(eventName="mine")
    answer = api.patch(f"/v1/billing/meters/{meter['id']}", json={"eventName": "taken"})
    assert answer.status_code == 409


def test_archive_refuses_new_events_and_keeps_history(api):
    meter = api.create_meter()
    api.record({"meterId": meter["id"], "userId": "u", "value": 4})
    archived = api.delete(f"/v1/billing/meters/{meter['id']}")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    refused = api.post(
        "/v1/billing/meter-events",
        json={"events": [{"meterId": meter["id"], "userId": "u", "value": 1}]},
    )
    assert refused.status_code == 400
    assert error_of(refused)["param"] == "events[0].meterId"
    assert api.summary(meterId=meter["id"])["value"] == 4
    assert api.get(f"/v1/billing/meters/{meter['id']}").json()["status"] == "archived"
    # Archiving twice is harmless, and the event name is free again.
    assert api.delete(f"/v1/billing/meters/{meter['id']}").status_code == 200
    assert (
        api.post(
            "/v1/billing/meters", json={"name": "New", "eventName": meter["eventName"]}
        ).status_code
        == 201
    )


@pytest.mark.parametrize("aggregation", ["min", "max", "avg"])
def test_newer_aggregations_are_accepted(api, aggregation):
    assert api.create_meter(aggregationType=aggregation)["aggregationType"] == aggregation


def test_unique_count_meters_name_what_they_count(api):
    by_user = api.create_meter(
        eventName="active_users", aggregationType="unique_count", uniqueBy="userId"
    )
    assert by_user["uniqueBy"] == "userId"
    by_model = api.create_meter(
        eventName="models", aggregationType="unique_count", dimensions=["model"], uniqueBy="model"
    )
    assert by_model["uniqueBy"] == "model"
    for body, param in [
        ({"aggregationType": "unique_count"}, "uniqueBy"),
        ({"aggregationType": "unique_count", "uniqueBy": "region"}, "uniqueBy"),
        ({"aggregationType": "sum", "uniqueBy": "userId"}, "uniqueBy"),
    ]:
        answer = api.post("/v1/billing/meters", json={"name": "x", "eventName": "x", **body})
        assert answer.status_code == 400, body
        assert error_of(answer)["param"] == param
    changed = api.patch(f"/v1/billing/meters/{by_user['id']}", json={"aggregationType": "sum"})
    assert changed.status_code == 200 and "uniqueBy" not in changed.json()
