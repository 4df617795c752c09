"""Summary errors say what happened: the caller's zone or period, or our own stored data.

A zone whose clock is off the 15-minute grid and a period whose windows would leave
years 1 to 9999 are the caller's to change (400, naming the field); a stored rollup
that does not decode is ours (500 `internal`, the entity's key in the log, nothing of
it in the answer).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore

from tests.support.http import error_of

SUMMARY = "/v1/billing/meter-events/summary"
ROLLUP = "meter-rollup"
ORG_ROLLUP = "meter-org-rollup"


@pytest.fixture
def log_lines(capsys):
    """The JSON lines the service writes to stderr during the test."""
    capsys.readouterr()

    def lines() -> list[dict]:
        return [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.strip().startswith("{")
        ]

    return lines


def _yesterday() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def _corrupt_the_rollup(config, org) -> str:
    """Overwrite the org's one org-wide rollup's compacted slots (what a summary of all
    users reads) with text that is not JSON, as a bad restore or a foreign writer could;
    returns its key's name."""
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    stored = list(raw.query(kind=ORG_ROLLUP).fetch())
    assert len(stored) == 1
    rollup = stored[0]
    rollup["Slots_"] = '{"36": [1, 5, not json'
    rollup.exclude_from_indexes = set(rollup.exclude_from_indexes) | {"Slots_"}
    raw.put(rollup)
    return rollup.key.name


def test_a_corrupt_rollup_is_an_internal_error_logged_with_its_key(api, config, org, log_lines):
    meter = api.create_meter()
    day = _yesterday()
    api.record(
        {
            "meterId": meter["id"],
            "userId": "u1",
            "value": 5,
            "timestamp": (day + timedelta(hours=9)).isoformat(),
        }
    )
    period = {
        "meterId": meter["id"],
        "periodStart": day.date().isoformat(),
        "periodEnd": day.date().isoformat(),
    }
    assert api.summary(**period)["value"] == 5
    key_name = _corrupt_the_rollup(config, org)
    log_lines()  # what came before the corruption

    answer = api.get(SUMMARY, params={**period, "windowSize": "hour", "timeZone": "UTC"})

    assert answer.status_code == 500, answer.text
    error = error_of(answer)
    assert error["type"] == "api-error" and error["code"] == "internal"
    assert "timeZone" not in error["message"] and "param" not in error
    assert "not json" not in answer.text and key_name not in answer.text
    failures = [line for line in log_lines() if line["severity"] == "ERROR"]
    assert len(failures) == 1, failures
    assert failures[0]["entityKey"] == f"{org['namespace']}:synckey/1/{ORG_ROLLUP}/{key_name}"
    assert key_name in failures[0]["message"] and meter["id"] in failures[0]["message"]
    assert failures[0]["requestId"] == answer.headers["X-Request-Id"]


def test_a_zone_off_the_15_minute_grid_is_the_callers_to_change(api):
    meter = api.create_meter()
    answer = api.get(
        SUMMARY,
        params={
            "meterId": meter["id"],
            "windowSize": "hour",
            "timeZone": "Africa/Monrovia",  # -00:44:30 until 1972
            "periodStart": "1970-01-01",
            "periodEnd": "1970-01-02",
        },
    )
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert (error["param"], error["code"]) == ("timeZone", "invalid_request")
    assert "15 minutes" in error["message"]


@pytest.mark.parametrize(
    "params, param",
    [
        (
            {
                "windowSize": "month",
                "timeZone": "UTC",
                "periodStart": "9999-12-01",
                "periodEnd": "9999-12-30",
            },
            "periodEnd",
        ),
        (
            {
                "windowSize": "hour",
                "timeZone": "Pacific/Kiritimati",  # +14:00
                "periodStart": "9999-12-31T00:00:00Z",
                "periodEnd": "9999-12-31T12:00:00Z",
            },
            "periodEnd",
        ),
        (
            {
                "windowSize": "day",
                "timeZone": "America/New_York",
                "periodStart": "0001-01-01T00:00:00Z",
                "periodEnd": "0001-01-03",
            },
            "periodStart",
        ),
    ],
)
def test_windows_past_year_9999_or_before_year_1_name_the_period(api, params, param):
    meter = api.create_meter()
    answer = api.get(SUMMARY, params={"meterId": meter["id"], **params})
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert (error["param"], error["code"]) == (param, "invalid_request")
    assert "year" in error["message"] and "timeZone" not in error["message"]


@pytest.mark.parametrize(
    "params, param",
    [
        ({"windowSize": "fortnight" * 50, "periodStart": "2026-11-01"}, "windowSize"),
        ({"windowSize": "", "periodStart": "2026-11-01"}, "windowSize"),
        ([("groupBy", "userId"), ("groupBy", "userId")], "groupBy"),
    ],
)
def test_the_engines_request_rules_answer_400_naming_the_field(api, params, param):
    """Window sizes and distinct groupBy names are checked once, by the engine
    (`SummaryRequest`); the service names the query parameter and echoes nothing."""
    meter = api.create_meter()
    query = (
        [("meterId", meter["id"]), *params]
        if isinstance(params, list)
        else {"meterId": meter["id"], **params}
    )
    answer = api.get(SUMMARY, params=query)
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert (error["param"], error["code"]) == (param, "invalid_request")
    assert "fortnight" not in error["message"]
