"""What the retention sweep of alert state costs per visit (`app.services.alerts.retention`).

`python benchmarks/alerts_retention.py [--users 200] [--days 30]` starts Google's
Firestore-mode emulator, creates an org, a sum meter and two per-user rules (a daily and
a monthly one, threshold 5), records `--users` x `--days` events (one per user and day,
over the last `--days` days) through the app (Flask's test client), and evaluates them
as the previous release would have: `PeriodStart` unindexed. Then, calling
`retention.sweep_now` as the evaluator's visit does, it prints per visit the Datastore
work (RPCs, entities read and written: exact, whatever the machine's load) of:

1. the one-time scan of the unindexed buckets, visit after visit until it is done;
2. a visit with nothing to delete (the steady state);
3. the visits after the retention clock is moved past the triggers' retention (every
   bucket and trigger is then over), until nothing is left.

Wall times are printed too, but the machine is shared: read the counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common

from app import create_app
from app.config import Config
from app.models import AlertTallyBucket, AlertTrigger, root_key
from app.services.alerts import evaluate, retention, seed
from app.storage import metrics

ADMIN = "bench-admin-token"


def _check(answer, status: int) -> dict:
    if answer.status_code != status:
        raise SystemExit(f"{answer.status_code}: {answer.get_data(as_text=True)}")
    return answer.get_json() if answer.data else {}


def _prepare(app, users: int, days: int) -> str:
    """The org with its meter, rules and events; its namespace."""
    client = app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    org = _check(client.post("/v1/admin/orgs", json={"name": "bench"}, headers=admin), 201)
    key = {"Authorization": f"Bearer {org['apiKey']}"}
    meter = _check(
        client.post(
            "/v1/billing/meters",
            json={"name": "tokens", "eventName": "tokens", "aggregationType": "sum"},
            headers=key,
        ),
        201,
    )
    for period in ("day", "month"):
        rule = {
            "name": f"per user, {period}",
            "meterId": meter["id"],
            "thresholds": [5],
            "scope": "user",
            "period": period,
        }
        _check(client.post("/v1/billing/alerts", json=rule, headers=key), 201)
    now = datetime.now(UTC)
    events = [
        {
            "meterId": meter["id"],
            "userId": f"user-{user:04d}",
            "value": 6,
            "timestamp": (now - timedelta(days=day, minutes=10)).isoformat(),
        }
        for day in range(days)
        for user in range(users)
    ]
    for start in range(0, len(events), 100):
        batch = {"events": events[start : start + 100]}
        _check(client.post("/v1/billing/meter-events", json=batch, headers=key), 201)
    return str(org["namespace"])


def _evaluate_as_previous_release(app, namespace: str) -> int:
    """Evaluate every feed with `PeriodStart` written unindexed, as before session 9."""
    indexed = AlertTallyBucket.period_start._indexed
    AlertTallyBucket.period_start._indexed = False
    retention._next_sweep[namespace] = time.monotonic() + 3600  # the old release had none
    applied = 0
    try:
        with app.app_context(), app.extensions["ndb"].context(namespace=namespace):
            while done := evaluate.evaluate_org(5):
                applied += done
    finally:
        AlertTallyBucket.period_start._indexed = indexed
    return applied


def _visit(app, namespace: str) -> tuple[retention.Swept, metrics.Usage, float]:
    with app.app_context(), app.extensions["ndb"].context(namespace=namespace):
        usage = metrics.start()
        started = time.perf_counter()
        swept = retention.sweep_now()
        return swept, usage, time.perf_counter() - started


def _counts(app, namespace: str) -> str:
    with app.extensions["ndb"].context(namespace=namespace):
        buckets = AlertTallyBucket.query(ancestor=root_key()).count()
        triggers = AlertTrigger.query(ancestor=root_key()).count()
    return f"{buckets} buckets, {triggers} triggers"


def _line(label: str, swept: retention.Swept, usage: metrics.Usage, took: float) -> str:
    return (
        f"{label}: {usage.rpcs} RPCs, {usage.entities_read} read, {usage.entities_written} "
        f"written; deleted {swept.buckets} buckets, {swept.spills} spills, {swept.triggers} "
        f"triggers; scanned {swept.scanned}, rewritten {swept.rewritten}; {took * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    arguments = parser.parse_args()
    workdir = common.scratch_dir()
    emulator = common.start_emulator("firestore", workdir)
    try:
        config = Config(
            project="metering-bench",
            emulator_host=emulator.host,
            hashid_salt="bench-salt",
            admin_token=ADMIN,
            read_budget_per_minute=0,
            unauthenticated_per_minute=0,
        )
        app = create_app(config)
        seed.GROUPED_ENTITIES = 10**6  # one grouped seed read: the seeding is not measured
        namespace = _prepare(app, arguments.users, arguments.days)
        applied = _evaluate_as_previous_release(app, namespace)
        print(f"evaluated {applied} feeds: {_counts(app, namespace)}")
        visits = 0
        while True:
            swept, usage, took = _visit(app, namespace)
            visits += 1
            if visits <= 2 or not swept.scanned:
                print(_line(f"scan visit {visits}", swept, usage, took))
            if not swept.scanned:
                break
        print(f"the scan took {visits - 1} visits; then {_counts(app, namespace)}")
        swept, usage, took = _visit(app, namespace)
        print(_line("steady visit", swept, usage, took))
        real = retention._now
        later = config.alert_trigger_retention + timedelta(days=1)
        retention._now = lambda: real() + later
        visits = 0
        while True:
            swept, usage, took = _visit(app, namespace)
            visits += 1
            if visits <= 2 or not swept.full:
                print(_line(f"deleting visit {visits}", swept, usage, took))
            if not swept.full:
                break
        print(f"{visits} visits deleted everything: {_counts(app, namespace)} left")
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
