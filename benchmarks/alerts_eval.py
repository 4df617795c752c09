"""What evaluating alert feeds costs, in-process: CPU and time per feed, and where it goes.

`python benchmarks/alerts_eval.py [--profile]` starts Google's Firestore-mode emulator,
creates an org, a sum meter, a webhook endpoint and the five rules of
`benchmarks/alerts_exact.py` (created just before the events: every tally of a period that
began before them is seeded from the summaries), records `--batches` batches of `--batch`
events of `--users` users through the app (Flask's test client, no HTTP), then runs the
org's evaluator in this process until every feed is applied and prints:

- feeds applied, chunks committed, tallies and triggers written;
- the Datastore work: RPCs, entities read and written (the same count as the
  `X-Datastore-Usage` header; exact, whatever the machine's load);
- wall time, and the evaluator's own CPU time (this thread's: the emulator's work is in
  another process, so this figure moves little with the machine's load) per feed;
- with `--profile`, the functions that took the most of it (cProfile).

It measures the evaluator apart from the dispatcher, the HTTP server and the clients,
whose costs `benchmarks/alerts_exact.py` measures together with it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from alerts_exact import make_rules

from app import create_app
from app.config import Config
from app.models import AlertTally, AlertTrigger, root_key
from app.services.alerts import evaluate
from app.storage import metrics

ADMIN = "bench-admin-token"


def _check(answer, status: int) -> dict:
    if answer.status_code != status:
        raise SystemExit(f"{answer.status_code}: {answer.get_data(as_text=True)}")
    return answer.get_json() if answer.data else {}


def _prepare(app, arguments) -> tuple[str, str]:
    """An org with the meter, endpoint and rules, and its recorded batches; (namespace, key)."""
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
    _check(
        client.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=key),
        201,
    )
    users = [f"user-{n:03d}" for n in range(arguments.users)]
    for rule in make_rules(users[0]):
        _check(client.post("/v1/billing/alerts", json=rule.document(meter["id"]), headers=key), 201)
    rng = random.Random(arguments.seed)
    now = datetime.now(UTC)
    for number in range(arguments.batches):
        events = [
            {
                "meterId": meter["id"],
                "userId": rng.choice(users),
                "value": rng.randint(1, 10),
                "timestamp": (now - timedelta(seconds=rng.uniform(60, 3 * 86400))).isoformat(),
                "idempotency": f"b{number}-{index}",
            }
            for index in range(arguments.batch)
        ]
        _check(client.post("/v1/billing/meter-events", json={"events": events}, headers=key), 201)
    return org["namespace"], org["apiKey"]


def _evaluate_all(app, namespace: str, profile: cProfile.Profile | None):
    """Run the evaluator until nothing is pending: (feeds applied, wall s, CPU s, usage)."""
    ndb_client = app.extensions["ndb"]
    applied = 0
    wall, cpu = time.perf_counter(), time.thread_time()
    with app.app_context(), ndb_client.context(namespace=namespace):
        usage = metrics.start()
        if profile:
            profile.enable()
        while True:
            done = evaluate.evaluate_org(10_000)
            applied += done
            if not done:
                break
        if profile:
            profile.disable()
    return applied, time.perf_counter() - wall, time.thread_time() - cpu, usage


def _written(app, namespace: str) -> tuple[int, int]:
    with app.extensions["ndb"].context(namespace=namespace):
        tallies = AlertTally.query(ancestor=root_key()).count()
        triggers = AlertTrigger.query(ancestor=root_key()).count()
    return tallies, triggers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--profile", action="store_true")
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
        started = time.perf_counter()
        namespace, _key = _prepare(app, arguments)
        recorded = time.perf_counter() - started
        profile = cProfile.Profile() if arguments.profile else None
        feeds, wall, cpu, usage = _evaluate_all(app, namespace, profile)
        tallies, triggers = _written(app, namespace)
        events = arguments.batches * arguments.batch
        print(f"recorded {events} events in {arguments.batches} batches in {recorded:.1f}s")
        print(f"machine load {common.machine_busy()}")
        print(f"evaluated {feeds} feeds: {tallies} tallies, {triggers} triggers")
        print(
            f"wall {wall:.2f}s ({1000 * wall / max(feeds, 1):.1f} ms/feed), "
            f"evaluator CPU {cpu:.2f}s ({1000 * cpu / max(feeds, 1):.1f} ms/feed)"
        )
        print(
            f"Datastore: {usage.rpcs} RPCs, {usage.entities_read} entities read, "
            f"{usage.entities_written} written ({usage.entities_read / max(feeds, 1):.1f} and "
            f"{usage.entities_written / max(feeds, 1):.1f} per feed)"
        )
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
