"""`metering events export` (issue 17), run as a user runs it: a child process writing
the file to stdout and its progress to stderr, the same events as the HTTP export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.processes import cli_env, run_cli_all

EXPORT = "/v1/billing/meter-events/export"
NOW = datetime.now(UTC).replace(microsecond=0)


def _at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


@pytest.fixture
def env(emulator, config) -> dict:
    return cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_PROJECT=config.project,
        METERING_HASHID_SALT=config.hashid_salt,
    )


@pytest.fixture
def meter(api) -> dict:
    """Six events of two users with dimensions and metadata, the second cancelled."""
    meter = api.create_meter(dimensions=["model"])
    recorded = api.record(
        *(
            {"meterId": meter["id"], "userId": f"user-{n % 2}", "value": n + 1,
             "timestamp": _at(60 - 5 * n), "idempotency": f"k{n}",
             "dimensions": {"model": "a" if n % 3 else "b"}, "metadata": {"n": str(n)}}
            for n in range(6)
        )
    )  # fmt: skip
    cancel = recorded["events"][1]["id"]
    assert api.post("/v1/billing/meter-events/cancel", json={"events": [{"id": cancel}]}).ok
    return meter


def _run(env, org, meter, *runs: list[str]) -> list[tuple[str, dict, str]]:
    """Several exports at once (each is mostly Python start-up): stdout, the final report
    (stderr's last line) and stderr of each."""
    done = run_cli_all(
        [(["events", "export", org["name"], "--meter", meter["id"], *extra], env) for extra in runs]
    )
    for result in done:
        assert result.returncode == 0, result.stderr
    return [(r.stdout, json.loads(r.stderr.strip().splitlines()[-1]), r.stderr) for r in done]


def _http(api, meter, **params) -> list[str]:
    return api.get(EXPORT, params={"meterId": meter["id"], **params}).text.splitlines()


def test_the_cli_writes_what_the_http_export_streams(api, org, meter, env):
    since = ["--user", "user-0", "--since", _at(50), "--include-cancelled"]
    plain, filtered, as_csv = _run(env, org, meter, [], since, ["--format", "csv", "--no-progress"])
    http = _http(api, meter)
    assert plain[0].splitlines() == http[:-1]  # the same lines; a file has no trailer
    assert plain[1]["exported"] == 5 == json.loads(http[-1])["export"]["count"]
    assert "events" in plain[2]  # the progress bar
    http = _http(api, meter, userId="user-0", periodStart=_at(50), includeCancelled="true")
    assert filtered[0].splitlines() == http[:-1] and filtered[1]["exported"] == 2
    # (text mode reads the CSV's CRLF line ends as newlines)
    assert as_csv[0].splitlines() == _http(api, meter, format="csv")
    assert as_csv[1]["exported"] == 5 and as_csv[2].count("\n") == 1  # no bar: the report


def test_a_cut_export_resumes_from_its_last_line_and_failures_take_one_line(api, org, meter, env):
    lines = _http(api, meter, includeCancelled="true")[:-1]
    rows = _http(api, meter, format="csv")
    after_line = json.loads(lines[1])["id"]
    after_row = rows[2].split(",")[-4]  # the second event's id (then status, amends, amendedBy)
    command = ["events", "export", org["name"], "--meter"]
    ndjson, csv, missing = run_cli_all(
        [
            ([*command, meter["id"], "--include-cancelled", "--cursor", after_line], env),
            ([*command, meter["id"], "--format", "csv", "--cursor", after_row], env),
            ([*command, "nope"], env),
        ]
    )
    assert ndjson.returncode == csv.returncode == 0, ndjson.stderr + csv.stderr
    assert lines[:2] + ndjson.stdout.splitlines() == lines
    assert json.loads(ndjson.stderr.strip().splitlines()[-1])["exported"] == 4
    assert rows[:3] + csv.stdout.splitlines() == rows  # no second header when appended

    assert missing.returncode == 1 and missing.stdout == ""
    assert "meter not found" in missing.stderr and "Traceback" not in missing.stderr
