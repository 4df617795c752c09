"""Alert rules over HTTP: create, read, list, change, archive, and every refusal."""

from __future__ import annotations

import pytest

from tests.support.alerts import create_rule
from tests.support.http import error_of


@pytest.fixture
def meter(api):
    return api.create_meter(dimensions=["model"])


def test_a_rule_is_created_with_its_defaults_and_sorted_thresholds(api, meter):
    rule = create_rule(api, meter, thresholds=[300, 10, 300, 20], scope={"userId": "u-1"})
    assert rule["thresholds"] == [10, 20, 300]
    assert rule["scope"] == {"userId": "u-1"}
    assert rule["timeZone"] == "UTC" and rule["filter"] == {}
    assert rule["notifyOnResolve"] is False and rule["archived"] is False
    assert rule["meterId"] == meter["id"] and rule["period"] == "month"
    assert set(rule) == {
        "id",
        "name",
        "meterId",
        "thresholds",
        "scope",
        "period",
        "timeZone",
        "filter",
        "notifyOnResolve",
        "archived",
        "createdAt",
        "updatedAt",
    }
    got = api.get(f"/v1/billing/alerts/{rule['id']}")
    assert got.status_code == 200 and got.json() == rule


def test_rules_are_listed_changed_and_archived(api, meter):
    first = create_rule(api, meter, scope="org", period="day", timeZone="Asia/Kolkata")
    second = create_rule(api, meter, filter={"model": "gpt-4"}, notifyOnResolve=True)
    listed = api.get("/v1/billing/alerts").json()
    assert {r["id"] for r in listed["alerts"]} == {first["id"], second["id"]}
    assert listed["count"] == 2 and listed["nextCursor"] is None

    changed = api.patch(
        f"/v1/billing/alerts/{first['id']}",
        json={"name": "renamed", "thresholds": [5, 1], "filter": {"model": "x"}},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "renamed" and body["thresholds"] == [1, 5]
    assert body["filter"] == {"model": "x"} and body["scope"] == "org"

    archived = api.delete(f"/v1/billing/alerts/{first['id']}")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert [r["id"] for r in api.get("/v1/billing/alerts").json()["alerts"]] == [second["id"]]
    everything = api.get("/v1/billing/alerts", params={"includeArchived": "true"}).json()
    assert {r["id"] for r in everything["alerts"]} == {first["id"], second["id"]}

    page = api.get("/v1/billing/alerts", params={"limit": 1, "includeArchived": "true"}).json()
    assert page["count"] == 1 and page["nextCursor"]


def test_an_unknown_or_foreign_rule_is_not_found(api, other_api, meter):
    rule = create_rule(api, meter)
    for caller, path in [
        (api, "/v1/billing/alerts/nope"),
        (other_api, f"/v1/billing/alerts/{rule['id']}"),
        (other_api, f"/v1/billing/alerts/{rule['id']}/triggers"),
    ]:
        answer = caller.get(path)
        assert answer.status_code == 404, answer.text
        assert error_of(answer)["code"] == "alert_not_found"
    assert other_api.delete(f"/v1/billing/alerts/{rule['id']}").status_code == 404
    assert api.get(f"/v1/billing/alerts/{rule['id']}").json()["archived"] is False


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": list(range(1, 12))}, "thresholds"),
        ({"thresholds": [0]}, "thresholds[0]"),
        ({"thresholds": [5, -1]}, "thresholds[1]"),
        ({"thresholds": [1.5]}, "thresholds[0]"),
        ({"thresholds": ["5"]}, "thresholds[0]"),
        ({"thresholds": [True]}, "thresholds[0]"),
        ({"thresholds": [1 << 63]}, "thresholds[0]"),
        ({"thresholds": 5}, "thresholds"),
        ({"scope": "team"}, "scope"),
        ({"scope": {"userId": ""}}, "scope"),
        ({"scope": {"userId": "u", "other": 1}}, "scope"),
        ({"scope": None}, "scope"),
        ({"period": "week"}, "period"),
        ({"timeZone": "Mars/Olympus"}, "timeZone"),
        ({"timeZone": "localtime"}, "timeZone"),
        ({"filter": {"region": "eu"}}, "filter.region"),
        ({"filter": {"model": 4}}, "filter.model"),
        ({"notifyOnResolve": "yes"}, "notifyOnResolve"),
        ({"name": ""}, "name"),
        ({"meterId": "nope"}, "meterId"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(api, meter, changes, param):
    body = {
        "name": "n",
        "meterId": meter["id"],
        "thresholds": [10],
        "scope": "user",
        "period": "day",
        **changes,
    }
    answer = api.post("/v1/billing/alerts", json=body)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param
    assert api.get("/v1/billing/alerts").json()["alerts"] == []


@pytest.mark.parametrize("field", ["name", "meterId", "thresholds", "scope", "period"])
def test_a_rule_without_a_required_field_is_refused(api, meter, field):
    body = {"name": "n", "meterId": meter["id"], "thresholds": [1], "scope": "org", "period": "day"}
    del body[field]
    answer = api.post("/v1/billing/alerts", json=body)
    assert answer.status_code == 400 and error_of(answer)["param"] == field


@pytest.mark.parametrize("aggregation", ["last", "min", "avg"])
def test_meters_whose_value_can_fall_are_refused_with_the_reason(api, aggregation):
    meter = api.create_meter(eventName=f"m_{aggregation}", aggregationType=aggregation)
    answer = api.post(
        "/v1/billing/alerts",
        json={
            "name": "n",
            "meterId": meter["id"],
            "thresholds": [1],
            "scope": "org",
            "period": "day",
        },
    )
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["param"] == "meterId" and error["code"] == "meter_not_alertable"
    assert aggregation in error["message"] and ("fall" in error["message"])


@pytest.mark.parametrize("aggregation", ["sum", "count", "max", "unique_count"])
def test_meters_whose_value_only_grows_are_accepted(api, aggregation):
    extra = {"uniqueBy": "userId"} if aggregation == "unique_count" else {}
    meter = api.create_meter(eventName=f"m_{aggregation}", aggregationType=aggregation, **extra)
    create_rule(api, meter)


def test_an_archived_meter_takes_no_rule(api, meter):
    api.delete(f"/v1/billing/meters/{meter['id']}")
    answer = api.post(
        "/v1/billing/alerts",
        json={
            "name": "n",
            "meterId": meter["id"],
            "thresholds": [1],
            "scope": "org",
            "period": "day",
        },
    )
    assert answer.status_code == 400 and error_of(answer)["param"] == "meterId"


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"thresholds": [0]}, "thresholds[0]"),
        ({"filter": {"nope": "x"}}, "filter.nope"),
        ({"scope": "org"}, "scope"),
        ({"notifyOnResolve": 1}, "notifyOnResolve"),
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(api, meter, changes, param):
    rule = create_rule(api, meter)
    answer = api.patch(f"/v1/billing/alerts/{rule['id']}", json=changes)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param
    assert api.get(f"/v1/billing/alerts/{rule['id']}").json() == rule
