"""`metering events cancel` and `metering events corrections` (issue 17, session 8), run
as a user runs them: child processes against the suite's emulator, the same job and
records as the HTTP range cancel."""

from __future__ import annotations

import json

from tests.support.corrections import check_summaries, event_log, rfc3339
from tests.support.processes import cli_env, run_cli
from tests.test_corrections import END, RANGE_END, RANGE_START, START, USERS, _events, _meter

CANCEL = "/v1/billing/meter-events/cancel"


def _env(emulator, config) -> dict:
    return cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_PROJECT=config.project,
        METERING_HASHID_SALT=config.hashid_salt,
    )


def _cli(env, *args: str) -> dict:
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_cli_cancels_a_range_as_the_http_job_does(api, org, emulator, config):
    """A dry run from the CLI gives the HTTP dry run's figures; the CLI's run cancels
    exactly those events (filter, user), leaves a record the org lists (over HTTP and from
    the CLI), and the summaries equal the brute force."""
    env = _env(emulator, config)
    meter = _meter(api, "sum")
    events = _events(meter)
    api.record(*events)
    since, until = rfc3339(RANGE_START), rfc3339(RANGE_END)
    body = {"meterId": meter["id"], "periodStart": since, "periodEnd": until,
            "userId": "u1", "filter": {"model": ["a", "b"]}}  # fmt: skip
    command = ["events", "cancel", org["name"], "--meter", meter["id"], "--since", since,
               "--until", until, "--user", "u1", "--filter", "model=a", "--filter", "model=b",
               "--no-progress"]  # fmt: skip

    preview = _cli(env, *command, "--dry-run")
    over_http = api.post(CANCEL, json={**body, "dryRun": True}).json()
    assert preview == over_http and preview["events"] >= 3
    assert all(e["status"] == "active" for e in event_log(api, meter["id"]))  # nothing changed

    record = _cli(env, *command)
    assert record["status"] == "complete" and record["type"] == "cancel_range"
    assert (record["cancelled"], record["value"]) == (preview["events"], preview["value"])
    assert record["keyPrefix"] == "cli"
    cancelled = [e for e in event_log(api, meter["id"]) if e["status"] == "cancelled"]
    assert len(cancelled) == preview["events"] and {e["userId"] for e in cancelled} == {"u1"}
    check_summaries(api, meter, START, END, USERS, "model")

    listed = _cli(env, "events", "corrections", org["name"])
    assert [c["id"] for c in listed["corrections"]] == [record["id"]]
    assert (
        api.get("/v1/billing/meter-events/corrections").json()["corrections"]
        == (listed["corrections"])
    )
    assert _cli(env, *command)["passes"] == 2  # a repeat: a new pass, nothing left


def test_a_bad_filter_is_refused_with_a_message(org, emulator, config):
    done = run_cli(
        "events", "cancel", org["name"], "--meter", "m", "--since", "2026-01-01",
        "--until", "2026-01-02", "--filter", "model", env=_env(emulator, config),
    )  # fmt: skip
    assert done.returncode != 0 and "NAME=VALUE" in done.stderr
