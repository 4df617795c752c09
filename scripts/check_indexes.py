"""Prove that every composite index in index.yaml is needed: no dead weight.

The suite already runs on the legacy emulator with --require_indexes, which shows
that index.yaml declares enough. This shows the other direction: with any one
index removed, tests fail on the legacy emulator because a query needs exactly
that index. Each index costs write amplification on every event in production.

For each index it writes index.yaml minus that index to a temporary file, runs
the chosen tests on the legacy emulator against it, and requires them to fail
with the emulator's missing-index error naming that index's kind. A first run
with the whole index.yaml must pass, so a failure is the index's doing.

The tests are not the whole suite but tests/test_index_queries.py, one small
summary per index that reaches exactly the query it serves (the suite uses these
queries in many places, but seven runs of it would take half an hour), so the
runs take about a minute. Removing an index must fail the test named for
it, on the emulator's missing-index error; an index without a named test fails
the check too, so a new index comes with its proof.

    python scripts/check_indexes.py        # `make test-indexes`; exit 0 when proven
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
INDEX_FILE = ROOT / "index.yaml"
TEST_FILE = "tests/test_index_queries.py"
# Each index and the test of TEST_FILE whose query needs it.
NEEDED_BY = {
    "meter-event(MeterId, Timestamp) ancestor": "test_events_of_a_meter_in_a_time_range_all_users",
    "meter-event(MeterId, UserId, Timestamp) ancestor": (
        "test_events_of_a_meter_and_user_in_a_time_range"
    ),
    "meter-org-rollup(MeterId, Day) ancestor": "test_org_wide_rollups_of_a_meter_over_days",
    "meter-rollup(MeterId, Day) ancestor": "test_rollups_of_a_meter_over_days_all_users",
    "meter-rollup(MeterId, UserId, Day) ancestor": "test_rollups_of_a_meter_and_user_over_days",
    "meter-event(MeterId, Timestamp desc) ancestor": "test_recent_events_of_a_meter",
    "meter-event(MeterId, UserId, Timestamp desc) ancestor": "test_recent_events_of_a_user",
    # issue 14, alerts
    "alert-trigger(AlertId, At desc) ancestor": "test_triggers_of_an_alert_rule_newest_first",
    # issue 14, webhooks
    "webhook-message(Status, NextAttemptAt) ancestor": "test_due_webhook_messages",
    "webhook-message(EndpointId, CreatedAt desc) ancestor": "test_an_endpoints_message_log",
    "webhook-message(EndpointId, Status, CreatedAt desc) ancestor": (
        "test_an_endpoints_message_log_of_one_status"
    ),
    # issue 17, corrections
    "meter-correction(CreatedAt desc) ancestor": "test_corrections_of_an_org_newest_first",
}
MISSING_INDEX = "requires a composite index that is not defined"


def describe(index: dict) -> str:
    names = ", ".join(
        p["name"] + (" desc" if p.get("direction") == "desc" else "") for p in index["properties"]
    )
    return f"{index['kind']}({names}){' ancestor' if index.get('ancestor') else ''}"


def run_tests(index_file: Path) -> subprocess.CompletedProcess:
    """The chosen tests on the legacy emulator, requiring the indexes of index_file."""
    env = {
        **os.environ,
        "METERING_TEST_EMULATOR": "legacy",
        "METERING_TEST_INDEX_FILE": str(index_file),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_FILE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def without(indexes: list[dict], dropped: int, folder: Path) -> Path:
    path = folder / f"index-without-{dropped}.yaml"
    kept = [index for number, index in enumerate(indexes) if number != dropped]
    path.write_text(yaml.safe_dump({"indexes": kept}, sort_keys=False))
    return path


def verdict(index: dict, result: subprocess.CompletedProcess) -> str | None:
    """None if the index's own test failed on the missing index; else what went wrong."""
    output = result.stdout + result.stderr
    test = NEEDED_BY[describe(index)]
    if result.returncode == 0:
        return "the tests pass without it"
    if f"FAILED {TEST_FILE}::{test}" not in output:
        return f"{test} does not fail without it"
    if MISSING_INDEX not in output:
        return "the tests fail, but not on a missing index"
    return None


def main() -> int:
    indexes = yaml.safe_load(INDEX_FILE.read_text())["indexes"]
    untested = [describe(index) for index in indexes if describe(index) not in NEEDED_BY]
    if untested:
        print(f"FAIL: no test in {TEST_FILE} is named for: " + "; ".join(untested))
        return 1
    started = time.monotonic()
    baseline = run_tests(INDEX_FILE)
    if baseline.returncode != 0:
        print(baseline.stdout[-4000:], baseline.stderr[-2000:])
        print("FAIL: the tests do not pass with the whole index.yaml")
        return 1
    print(f"ok   with all {len(indexes)} indexes the tests pass")
    dead = []
    with tempfile.TemporaryDirectory(prefix="metering-indexes-") as folder:
        for number, index in enumerate(indexes):
            problem = verdict(index, run_tests(without(indexes, number, Path(folder))))
            print(
                f"{'DEAD' if problem else 'ok  '} without {describe(index)}: "
                + (problem or f"{NEEDED_BY[describe(index)]} fails on the missing index")
            )
            if problem:
                dead.append(describe(index))
    print(f"{len(indexes) + 1} runs in {time.monotonic() - started:.0f}s")
    if dead:
        print("FAIL: not shown to be needed: " + "; ".join(dead))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
