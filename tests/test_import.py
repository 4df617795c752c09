"""Bulk import and backfill (issue 17): over HTTP and through `metering events import`.

Every test writes a small file, imports it into a fresh org of the session's emulator and
compares the summaries with a brute force over the lines that should count: the first
line of each idempotency key (or derived identity) counts, its duplicates and conflicts
never, and a rerun (or a resumed kill) changes nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.core.scopes import ALL_SCOPES
from app.models import AlertFeed, root_key
from tests.support.alerts import create_rule, run_evaluator, triggers
from tests.support.http import error_of

IMPORT = "/v1/billing/meter-events/import"
NOW = datetime.now(UTC).replace(microsecond=0)


def _at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def _ndjson(events: list) -> bytes:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events).encode()


def _post(api, body: bytes, **params):
    return api.post(
        IMPORT, data=body, params=params, headers={"Content-Type": "application/x-ndjson"}
    )


def _totals(api, meter_id: str, users: list[str]) -> dict:
    """(value, eventCount) of the whole org and of each user, over all time."""
    period = {"periodStart": _at(400), "periodEnd": _at(-0.001)}
    found = {"": _pair(api.summary(meterId=meter_id, **period))}
    for user in users:
        found[user] = _pair(api.summary(meterId=meter_id, userId=user, **period))
    return found


def _pair(summary: dict) -> tuple[int, int]:
    return summary["value"] or 0, summary["eventCount"]


def _brute(events: list[dict], users: list[str]) -> dict:
    """What the summaries must say: every counted event once."""
    found = {"": (sum(e["value"] for e in events), len(events))}
    for user in users:
        mine = [e for e in events if e["userId"] == user]
        found[user] = (sum(e["value"] for e in mine), len(mine))
    return found


def _event(user: str, value: int, days_ago: float, **more) -> dict:
    return {
        "eventName": "api_calls",
        "userId": user,
        "value": value,
        "timestamp": _at(days_ago),
    } | more


@pytest.fixture
def meter(api) -> dict:
    return api.create_meter(name="API calls", eventName="api_calls", dimensions=["region"])


def test_http_import_counts_each_event_once_and_a_rerun_stores_nothing(api, meter):
    first = _event("u1", 5, 1, idempotency="a", dimensions={"region": "eu"})
    lines = [
        first,
        _event("u2", 7, 2),  # no key: derived from its line and content
        _event("u2", 7, 2),  # the same content on another line: another event
        dict(first),  # duplicate of line 1
        first | {"value": 6},  # conflict with line 1
        {"meterId": meter["id"], "userId": "u1", "value": 3, "timestamp": _at(3)},
    ]
    answer = _post(api, _ndjson(lines))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["created"], report["duplicate"], report["conflict"]) == (4, 1, 1)
    assert report["records"] == 6 and report["errorCount"] == 0
    counted = [lines[0], lines[1], lines[2], lines[5]]
    assert _totals(api, meter["id"], ["u1", "u2"]) == _brute(counted, ["u1", "u2"])

    again = _post(api, _ndjson(lines)).json()
    assert (again["created"], again["duplicate"], again["conflict"]) == (0, 5, 1)
    assert _totals(api, meter["id"], ["u1", "u2"]) == _brute(counted, ["u1", "u2"])
    # The derived key is stored: the event log and cancellation find it.
    logged = api.get("/v1/billing/meter-events", params={"meterId": meter["id"], "userId": "u2"})
    assert all(e["idempotency"].startswith("import:") for e in logged.json()["events"])


def test_a_bad_line_refuses_the_whole_import_naming_every_line(api, meter):
    lines = [
        _event("u1", 1, 1),
        "{not json",
        _event("u1", 2, 1) | {"eventName": "nope"},
        _event("u1", 3, 1) | {"dimensions": {"colour": "red"}},
        _event("u1", 4, 1) | {"value": "four"},
        _event("u1", 5, 40),  # older than the live window, no backfill
        _event("u1", 6, 1),
    ]
    answer = _post(api, _ndjson(lines))
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["code"] == "invalid_import"
    params = [e.get("param") for e in error["errors"]]
    assert params == [
        "lines[2]",
        "lines[3].eventName",
        "lines[4].dimensions.colour",
        "lines[5].value",
        "lines[6].timestamp",
    ]
    assert _totals(api, meter["id"], ["u1"]) == {"": (0, 0), "u1": (0, 0)}

    skipped = _post(api, _ndjson(lines), skipInvalid="true").json()
    assert (skipped["created"], skipped["rejected"], skipped["errorCount"]) == (2, 5, 5)
    assert [p["line"] for p in skipped["errors"]] == [2, 3, 4, 5, 6]
    assert _totals(api, meter["id"], ["u1"]) == _brute([lines[0], lines[6]], ["u1"])


def test_dry_run_says_what_would_happen_and_writes_nothing(api, meter):
    api.record(_event("u1", 5, 1, idempotency="stored"))
    lines = [
        _event("u1", 5, 1, idempotency="stored"),  # duplicate of a stored event
        _event("u1", 9, 1, idempotency="stored"),  # conflict with it
        _event("u2", 1, 1, idempotency="new"),
        _event("u2", 1, 1, idempotency="new"),  # duplicate within the file
        _event("u2", 2, 1, idempotency="new"),  # conflict within the file
        _event("u3", 4, 1),
    ]
    report = _post(api, _ndjson(lines), dryRun="true").json()
    assert report["dryRun"] is True
    assert (report["created"], report["duplicate"], report["conflict"]) == (2, 2, 2)
    assert _totals(api, meter["id"], ["u2", "u3"]) == {"": (5, 1), "u2": (0, 0), "u3": (0, 0)}
    real = _post(api, _ndjson(lines)).json()
    assert (real["created"], real["duplicate"], real["conflict"]) == (2, 2, 2)


def test_an_export_imports_into_another_org_with_meter_override(api, meter):
    exported = [
        {"id": "evt_x1", "status": "active", "meterId": "mtr_other_org", "userId": "u1",
         "value": 4, "timestamp": _at(1), "idempotency": "k1", "dimensions": {"region": "us"}},
        {"id": "evt_x2", "status": "cancelled", "meterId": "mtr_other_org", "userId": "u1",
         "value": 100, "timestamp": _at(1), "idempotency": "k2"},
    ]  # fmt: skip
    report = _post(api, _ndjson(exported), meter="api_calls").json()
    assert (report["created"], report["skipped"]) == (1, 1)
    assert _totals(api, meter["id"], ["u1"]) == _brute(exported[:1], ["u1"])


def test_cloudevents_lines_import_through_the_meters_mappings(api, meter):
    def cloud_event(ident: str, user: str, value: int) -> dict:
        data = {"value": value, "region": "eu"}
        return {"specversion": "1.0", "id": ident, "source": "billing", "type": "api_calls",
                "subject": user, "time": _at(1), "data": data}  # fmt: skip

    lines = [cloud_event("c1", "u1", 4), cloud_event("c2", "u2", 6), cloud_event("c1", "u1", 4)]
    report = _post(api, _ndjson([*lines, _event("u1", 1, 1)])).json()
    assert (report["created"], report["duplicate"]) == (3, 1)
    counted = [{"userId": "u1", "value": 4}, {"userId": "u2", "value": 6}, _event("u1", 1, 1)]
    assert _totals(api, meter["id"], ["u1", "u2"]) == _brute(counted, ["u1", "u2"])
    bad = _post(api, _ndjson([cloud_event("c3", "u1", 1) | {"type": "unknown_type"}]))
    assert bad.status_code == 400 and error_of(bad)["param"] == "lines[1].type"


def test_http_import_reads_gzip_csv(api, meter):
    body = gzip.compress(
        (
            "meterId,userId,value,timestamp,dimensions.region\n"
            f"{meter['id']},u1,2,{_at(1)},eu\n"
            f"{meter['id']},u2,3,{_at(1)},\n"
        ).encode()
    )
    answer = api.post(IMPORT, data=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 2
    assert _totals(api, meter["id"], ["u1", "u2"])[""] == (5, 2)


def test_a_csv_metadata_column_holds_a_json_object_as_an_export_writes_it(api, meter):
    """An export's CSV has one `metadata` column of JSON; it imports with its types, beside
    `metadata.NAME` columns, and a bad cell or a name given twice refuses the file."""
    header = "eventName,userId,value,timestamp,idempotency,metadata,metadata.source\n"
    good = (
        header
        + f'api_calls,u1,2,{_at(1)},m1,"{{""retries"": 2, ""tags"": [""a""]}}",crm\n'
        + f"api_calls,u1,3,{_at(1)},m2,,\n"
    )
    answer = api.post(IMPORT, data=good.encode(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.json()["created"] == 2, answer.text
    log = api.get("/v1/billing/meter-events", params={"meterId": meter["id"], "userId": "u1"})
    by_key = {event["idempotency"]: event for event in log.json()["events"]}
    assert by_key["m1"]["metadata"] == {"retries": 2, "tags": ["a"], "source": "crm"}
    assert not by_key["m2"].get("metadata")
    bad = (
        header
        + f"api_calls,u2,2,{_at(1)},m3,[1],\n"
        + f'api_calls,u2,2,{_at(1)},m4,"{{""source"": ""x""}}",crm\n'
    )
    refused = api.post(IMPORT, data=bad.encode(), headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400, refused.text
    assert [e["param"] for e in error_of(refused)["errors"]] == [
        "lines[2].metadata",
        "lines[3].metadata",
    ]
    assert _totals(api, meter["id"], ["u2"])["u2"] == (0, 0)


def test_backfill_needs_the_scope_the_flag_and_a_meter_that_allows_it(api, meter):
    old = [_event("u1", 10, 60, idempotency="old-1"), _event("u1", 5, 1, idempotency="live")]
    refused = _post(api, _ndjson(old), backfill="true")
    assert refused.status_code == 400 and "allowBackfill" in error_of(refused)["message"]

    changed = api.patch(f"/v1/billing/meters/{meter['id']}", json={"allowBackfill": True})
    assert changed.status_code == 200 and changed.json()["allowBackfill"] is True
    without_flag = _post(api, _ndjson(old))
    assert without_flag.status_code == 400
    assert error_of(without_flag)["param"] == "lines[1].timestamp"

    # A key with every scope but events:backfill may import, not backfill.
    created = api.post("/v1/keys", json={"scopes": sorted(ALL_SCOPES - {"events:backfill"})})
    assert created.status_code == 201, created.text
    forbidden = _post(api.as_key(created.json()["apiKey"]), _ndjson(old), backfill="true")
    assert forbidden.status_code == 403 and error_of(forbidden)["param"] == "scope"
    assert "events:backfill" in error_of(forbidden)["message"]
    assert _totals(api, meter["id"], ["u1"])["u1"] == (0, 0)

    done = _post(api, _ndjson(old), backfill="true").json()
    assert (done["created"], done["backfilled"]) == (2, 1)
    assert _totals(api, meter["id"], ["u1"]) == _brute(old, ["u1"])
    # Exact at once in windows too: the backfilled day holds its event.
    day = api.summary(meterId=meter["id"], periodStart=_at(61), periodEnd=_at(59), windowSize="day")
    assert sum(w["value"] for w in day["windows"]) == 10


# -- the CLI ---------------------------------------------------------------------------------


def _cli_env(config) -> dict:
    return {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": config.emulator_host,
        "METERING_PROJECT": config.project,
        "METERING_HASHID_SALT": config.hashid_salt,
    }


def _import_cli(config, org, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "events", "import", org["name"], *args],
        env=_cli_env(config),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _reports(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cli_imports_csv_and_gzip_with_rejects_dry_run_and_rerun(api, meter, config, org, tmp_path):
    csv_text = (
        "eventName,userId,value,timestamp,idempotency,dimensions.region,metadata.source\n"
        f"api_calls,u1,3,{_at(1)},c1,eu,crm\n"
        f"api_calls,u2,4,{_at(2)},,us,\n"
        f"api_calls,u1,x,{_at(1)},c3,eu,\n"
        f"api_calls,u1,3,{_at(1)},c1,eu,crm\n"
    )
    csv_file = tmp_path / "usage.csv"  # gzip whatever its name: found by its magic bytes
    csv_file.write_bytes(gzip.compress(csv_text.encode()))
    gz_file = tmp_path / "usage.ndjson.gz"  # plain, whatever its name
    gz_file.write_bytes(_ndjson([_event("u3", 8, 1), _event("u1", 2, 3)]))
    rejects = tmp_path / "rejects.ndjson"

    refused = _import_cli(config, org, str(csv_file), "--no-progress")
    assert refused.returncode == 1, refused.stderr
    [report] = _reports(refused)
    assert report["refused"] and report["errors"] == [
        {"line": 4, "field": "value", "message": "value must be an integer, not 'x'"}
    ]

    dry = _import_cli(config, org, str(csv_file), str(gz_file), "--dry-run", "--skip-invalid",
                      "--rejects", str(rejects), "--no-progress")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert [(r["created"], r["duplicate"], r["rejected"]) for r in _reports(dry)] == [
        (2, 1, 1),
        (2, 0, 0),
    ]
    assert _totals(api, meter["id"], ["u1"])["u1"] == (0, 0)

    args = [str(csv_file), str(gz_file), "--skip-invalid", "--rejects", str(rejects)]
    done = _import_cli(config, org, *args)
    assert done.returncode == 0, done.stderr
    assert "ev/s" in done.stderr  # the progress bar
    assert [(r["created"], r["duplicate"], r["rejected"]) for r in _reports(done)] == [
        (2, 1, 1),
        (2, 0, 0),
    ]
    [reject] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["file"], reject["line"]) == (str(csv_file), 4)
    assert reject["errors"][0]["field"] == "value"
    assert reject["input"].startswith("api_calls,u1,x,")
    counted = [
        {"userId": "u1", "value": 3},
        {"userId": "u2", "value": 4},
        {"userId": "u3", "value": 8},
        {"userId": "u1", "value": 2},
    ]
    users = ["u1", "u2", "u3"]
    assert _totals(api, meter["id"], users) == _brute(counted, users)

    rerun = _import_cli(config, org, *args, "--no-progress")
    assert [r["created"] for r in _reports(rerun)] == [0, 0]
    assert _totals(api, meter["id"], users) == _brute(counted, users)


@pytest.mark.slow
def test_a_cli_import_killed_midway_and_rerun_counts_every_event_once(
    api, meter, config, org, tmp_path
):
    events = [
        _event(f"u{i % 7}", i % 13 + 1, (i % 30) / 10, dimensions={"region": ("eu", "us")[i % 2]})
        for i in range(1200)
    ]
    events[10] = events[10] | {"idempotency": "given"}
    path = tmp_path / "big.ndjson"
    path.write_bytes(_ndjson(events))
    command = [sys.executable, "-m", "app.cli", "events", "import", org["name"], str(path),
               "--batch", "10", "--workers", "2", "--no-progress"]  # fmt: skip
    child = subprocess.Popen(
        command, env=_cli_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # The legacy emulator may answer 503 while the import's transactions hold locks.
            polled = api.get(
                "/v1/billing/meter-events/summary",
                params={"meterId": meter["id"], "periodStart": _at(5), "periodEnd": _at(-0.001)},
            )
            if polled.status_code == 200 and polled.json()["eventCount"] >= 100:
                break
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    partial = api.summary(meterId=meter["id"], periodStart=_at(5), periodEnd=_at(-0.001))
    assert 0 < partial["eventCount"] < len(events)

    rerun = _import_cli(config, org, str(path), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    [report] = _reports(rerun)
    assert report["created"] + report["duplicate"] == len(events)
    assert report["duplicate"] >= partial["eventCount"] and report["conflict"] == 0
    users = [f"u{i}" for i in range(7)]
    assert _totals(api, meter["id"], users) == _brute(events, users)


def test_a_backfill_fires_no_alert_for_its_ended_periods(api, meter, org, app, ndb_client):
    api.patch(f"/v1/billing/meters/{meter['id']}", json={"allowBackfill": True})
    rule = create_rule(api, meter, thresholds=[10], period="day")
    lines = [_event("u1", 50, 60, idempotency="old"), _event("u1", 12, 0.01, idempotency="live")]
    done = _post(api, _ndjson(lines), backfill="true").json()
    assert (done["created"], done["backfilled"]) == (2, 1)
    with ndb_client.context(namespace=org["namespace"]):
        feeds = list(AlertFeed.query(ancestor=root_key()).fetch())
    contributions = [c for f in feeds for c in json.loads(f.contributions)]
    assert [(c[0], c[4], c[5]) for c in contributions] == [("u1", 12, 1)]  # the live one only
    run_evaluator(app, ndb_client, org)
    fired = triggers(api, rule)
    assert [(t["userId"], t["value"]) for t in fired] == [("u1", 12)]
    assert _totals(api, meter["id"], ["u1"]) == _brute(lines, ["u1"])


# -- memory: what the import holds does not grow with its input -------------------------


def test_the_import_holds_a_bounded_number_of_events_whatever_the_input_size(
    api, meter, config, org, ndb_client, monkeypatch
):
    """The reader waits for the writers: between reading a line and storing its event,
    at most (3 x workers + 2) batches are held (the queue's 2 per worker, one in each
    worker's hands, the one being handed over and the batcher's pending one), however
    long the input. A queue without a bound would let the reader run ahead through the
    whole file while the first commits are on the way."""
    from app.services import imports, ingest
    from app.services.import_formats import bytes_opener

    workers, batch, total = 2, 20, 2000
    events = [_event(f"u{i % 5}", i % 9 + 1, 1, idempotency=f"bound-{i}") for i in range(total)]
    made = {"drafts": 0, "stored": 0, "held": []}
    real_check, real_store = imports.Checker.check, ingest.store

    def counting_check(self, record):
        drafts = real_check(self, record)
        made["drafts"] += len(drafts or ())
        return drafts

    def watched_store(drafts, *args, **kwargs):
        # Drafts read and not yet stored, as this batch starts (a slow Datastore's view).
        made["held"].append(made["drafts"] - made["stored"])
        time.sleep(0.005)
        outcomes = real_store(drafts, *args, **kwargs)
        made["stored"] += len(drafts)
        return outcomes

    def writing_starts(records: int) -> None:
        made["drafts"] = 0  # the validation pass checked every record once already

    monkeypatch.setattr(imports.Checker, "check", counting_check)
    monkeypatch.setattr(ingest, "store", watched_store)
    options = imports.Options(workers=workers, batch_events=batch)
    with ndb_client.context(namespace=org["namespace"]):
        report = imports.run(
            bytes_opener(_ndjson(events)),
            options,
            config,
            context=lambda: ndb_client.context(namespace=org["namespace"]),
            on_total=writing_starts,
        )
    assert report.created == total
    assert len(made["held"]) == total // batch
    assert max(made["held"]) <= (3 * workers + 2) * batch < total
    users = [f"u{i}" for i in range(5)]
    assert _totals(api, meter["id"], users) == _brute(events, users)


def test_a_cli_import_logs_its_memory_on_request(api, meter, config, org, tmp_path):
    path = tmp_path / "few.ndjson"
    path.write_bytes(_ndjson([_event("u1", 2, 1, idempotency=f"m{i}") for i in range(30)]))
    log = tmp_path / "memory.ndjson"
    done = _import_cli(config, org, str(path), "--no-progress", "--memory-log", str(log))
    assert done.returncode == 0, done.stderr
    samples = [json.loads(line) for line in log.read_text().splitlines()]
    last = samples[-1]  # written as the import ends
    assert (last["phase"], last["done"]) == ("write", 30)
    assert last["VmHWM"] >= last["VmRSS"] > 0 and last["py_blocks"] > 0
    assert _totals(api, meter["id"], ["u1"])["u1"] == (60, 30)


def test_a_batch_whose_commit_missed_its_deadline_is_stored_again_exactly_once(
    api, meter, config, org, ndb_client, monkeypatch
):
    """A long import on a loaded Datastore meets commits that miss their deadline: one
    that landed unanswered, one that never landed. The CLI's import stores such a batch
    again (`Options.retries`) and every event counts once (the batch that landed is then
    found and reported `duplicate`, as a rerun would); without retries the import stops
    at the first (as it did, 15 minutes into a 1,000,000-event benchmark)."""
    from google.api_core import exceptions as core_exceptions

    from app.services import imports, ingest
    from app.services.import_formats import bytes_opener

    events = [_event(f"u{i % 3}", i % 7 + 1, 1, idempotency=f"late-{i}") for i in range(60)]
    calls = {"n": 0, "late": set(), "down": set()}
    real_store = ingest.store

    def late_store(drafts, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] in calls["down"]:  # never reached the Datastore
            raise core_exceptions.ServiceUnavailable("the Datastore is not answering")
        outcomes = real_store(drafts, *args, **kwargs)
        if calls["n"] in calls["late"]:  # committed, but the answer came too late
            raise core_exceptions.DeadlineExceeded("the commit took too long")
        return outcomes

    monkeypatch.setattr(ingest, "store", late_store)
    monkeypatch.setattr(imports, "_wait", lambda seconds: None)  # the backoff
    users = ["u0", "u1", "u2"]
    with ndb_client.context(namespace=org["namespace"]):
        calls.update(n=0, late={2})
        with pytest.raises(core_exceptions.DeadlineExceeded):
            imports.run(bytes_opener(_ndjson(events)), imports.Options(batch_events=10), config)
        assert _totals(api, meter["id"], users)[""][1] == 20  # batches 1 and 2 landed
        # Batch 3 lands unanswered (call 3, again as call 4), batch 4 fails (call 5, 6).
        calls.update(n=0, late={3}, down={5})
        report = imports.run(
            bytes_opener(_ndjson(events)), imports.Options(batch_events=10, retries=3), config
        )
    assert calls["n"] == 8
    assert (report.created, report.duplicate, report.conflict) == (30, 30, 0)
    assert _totals(api, meter["id"], users) == _brute(events, users)
