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

`--rules ingest --rule-count 20` makes the rules of `benchmarks/ingest.py --alert-rules 20`
instead (three specs: user/month, org/day in Asia/Kolkata, user/day); `--warmup-batches N`
records and evaluates N batches before the measured ones, so the measured chunks find
their tallies stored (the steady cost, as in ingest.py's later rounds; with `--rules-age
35` the warm-up's seeds are the last ones, as in ingest.py); `--code DIR`
imports the service from DIR (for example a worktree of an older commit), so one script
measures old and new code in the same shape.

It measures the evaluator apart from the dispatcher, the HTTP server and the clients,
whose costs `benchmarks/alerts_exact.py` measures together with it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if "--code" in sys.argv:  # the service of another worktree, in the same shape
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--code") + 1]).resolve()))
import common
from alerts_exact import make_rules
from ingest import RULE_THRESHOLDS, rule_thresholds

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


def _prepare(app, arguments) -> tuple[str, _Recorder]:
    """An org with the meter, endpoint and rules; (namespace, what records its batches)."""
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
    if not arguments.no_endpoint:
        _check(
            client.post(
                "/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=key
            ),
            201,
        )
    users = [f"user-{n:03d}" for n in range(arguments.users)]
    for document in _rules(arguments, meter["id"], users[0]):
        _check(client.post("/v1/billing/alerts", json=document, headers=key), 201)
    return org["namespace"], _Recorder(client, key, meter["id"], users, arguments)


def _rules(arguments, meter_id: str, one_user: str) -> list[dict]:
    if arguments.rules == "exact":
        return [rule.document(meter_id) for rule in make_rules(one_user)]
    shapes = [("user", "month", "UTC"), ("org", "day", "Asia/Kolkata"), ("user", "day", "UTC")]
    return [
        {
            "name": f"bench rule {number}",
            "meterId": meter_id,
            "thresholds": rule_thresholds(arguments.rule_thresholds, number, shapes[number % 3][0]),
            "scope": shapes[number % 3][0],
            "period": shapes[number % 3][1],
            "timeZone": shapes[number % 3][2],
        }
        for number in range(arguments.rule_count)
    ]


class _Recorder:
    """Records batches of random events of the org's users through the app."""

    def __init__(self, client, key: dict, meter_id: str, users: list[str], arguments) -> None:
        self.client, self.key, self.meter_id, self.users = client, key, meter_id, users
        self.arguments = arguments
        self.rng = random.Random(arguments.seed)
        self.sent = 0

    def _stamp(self, rng, now: datetime) -> str:
        if self.arguments.timestamps == "now":  # one instant, as benchmarks/ingest.py sends
            return (now - timedelta(seconds=1)).isoformat()
        return (now - timedelta(seconds=rng.uniform(60, 3 * 86400))).isoformat()

    def record(self, batches: int) -> None:
        rng, now = self.rng, datetime.now(UTC)
        for _ in range(batches):
            self.sent += 1
            events = [
                {
                    "meterId": self.meter_id,
                    "userId": rng.choice(self.users),
                    "value": rng.randint(1, self.arguments.max_value),
                    "timestamp": self._stamp(rng, now),
                    "idempotency": f"b{self.sent}-{index}",
                }
                for index in range(self.arguments.batch)
            ]
            for _attempt in range(5):  # a 503 (deadline on a busy machine) is sent again
                answer = self.client.post(
                    "/v1/billing/meter-events", json={"events": events}, headers=self.key
                )
                if answer.status_code != 503:
                    break
            _check(answer, 201)


def _evaluate_all(app, namespace: str, profile: cProfile.Profile | None, budget: int = 10_000):
    """Run the evaluator until nothing is pending: (feeds applied, wall s, CPU s, usage)."""
    ndb_client = app.extensions["ndb"]
    applied = 0
    wall, cpu = time.perf_counter(), time.thread_time()
    with app.app_context(), ndb_client.context(namespace=namespace):
        usage = metrics.start()
        if profile:
            profile.enable()
        while True:
            done = evaluate.evaluate_org(budget)
            applied += done
            if not done:
                break
        if profile:
            profile.disable()
    return applied, time.perf_counter() - wall, time.thread_time() - cpu, usage


def _interleaved(app, namespace: str, recorder: _Recorder, profile, arguments):
    """Record `--interleave` batches, evaluate what is pending, and again until every
    batch is recorded: the evaluator meets users as the service's loop does while
    clients record (`benchmarks/ingest.py`), not a whole backlog at once."""
    recorded = wall = cpu = 0.0
    feeds = 0
    usage = metrics.Usage()
    sent = 0
    while sent < arguments.batches:
        batches = min(arguments.interleave, arguments.batches - sent)
        started = time.perf_counter()
        recorder.record(batches)
        recorded += time.perf_counter() - started
        sent += batches
        done, took, used, counted = _evaluate_all(app, namespace, profile, arguments.chunk_feeds)
        feeds, wall, cpu = feeds + done, wall + took, cpu + used
        usage.rpcs += counted.rpcs
        usage.entities_read += counted.entities_read
        usage.entities_written += counted.entities_written
    return recorded, feeds, wall, cpu, usage


def _written(app, namespace: str) -> tuple[str, int]:
    """What holds the tallies (entities, and the subjects in them), and the triggers."""
    with app.extensions["ndb"].context(namespace=namespace):
        own = AlertTally.query(ancestor=root_key()).count()
        triggers = AlertTrigger.query(ancestor=root_key()).count()
        try:
            from app.models import AlertTallyBucket, AlertTallySpill
        except ImportError:  # code from before session 8: one entity per tally
            return f"{own} tally entities", triggers
        buckets = AlertTallyBucket.query(ancestor=root_key()).fetch()
        spilled = AlertTallySpill.query(ancestor=root_key()).count()
        from app.services.alerts import tallies as tally_store

        # session 9's blobs are in lines; session 8's, one JSON list
        decode = getattr(tally_store, "records_of", json.loads)
        subjects = sum(len(decode(bucket.subjects)) for bucket in buckets)
    return (
        f"{subjects} tallies in {len(buckets)} bucket entities, {spilled} spilled, "
        f"{own} of the old shape"
    ), triggers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-out", help="with --profile, also write the stats here")
    parser.add_argument("--rules", choices=("exact", "ingest"), default="exact")
    parser.add_argument("--rule-count", type=int, default=20, help="with --rules ingest")
    parser.add_argument(
        "--rule-thresholds",
        choices=sorted(RULE_THRESHOLDS),
        default="dense",
        help="with --rules ingest, as benchmarks/ingest.py's option of that name",
    )
    parser.add_argument("--warmup-batches", type=int, default=0)
    parser.add_argument(
        "--rules-age",
        type=float,
        default=0.0,
        help="seconds to wait after creating the rules: past the rule cache's TTL plus the "
        "request deadline (31 s by default), touched tallies are no longer re-read",
    )
    parser.add_argument("--code", help="import the service from this directory")
    parser.add_argument(
        "--max-value",
        type=int,
        default=10,
        help="events' values are 1 to this (1000: as benchmarks/ingest.py sends them, whose"
        " rules then cross a threshold for about one event in three)",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        help="record this many batches, then evaluate, until every batch is recorded "
        "(0: record them all first)",
    )
    parser.add_argument(
        "--timestamps",
        choices=("spread", "now"),
        default="spread",
        help="events over the last 3 days (spread: several day periods), or all at one "
        "instant (now: one period per spec, as benchmarks/ingest.py records them)",
    )
    parser.add_argument(
        "--chunk-feeds",
        type=int,
        default=10_000,
        help="feeds per evaluate_org call when measuring (1: one call per feed, as the "
        "delivery loop does when woken by each batch)",
    )
    parser.add_argument(
        "--no-endpoint",
        action="store_true",
        help="create no webhook endpoint (as benchmarks/ingest.py): crossings write their "
        "triggers and no message",
    )
    parser.add_argument(
        "--seed-cap",
        type=int,
        default=0,
        help="raise the grouped seed read's entity cap (seed.GROUPED_ENTITIES): with 1,000 "
        "users, one summary per tally can outlive the seeding's read-only transaction on "
        "a loaded machine, and seeding is not what the steady shape measures",
    )
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
        if arguments.seed_cap:
            from app.services.alerts import seed

            seed.GROUPED_ENTITIES = arguments.seed_cap
        namespace, recorder = _prepare(app, arguments)
        time.sleep(arguments.rules_age)
        if arguments.warmup_batches:
            recorder.record(arguments.warmup_batches)
            warm, *_ = _evaluate_all(app, namespace, None)
            print(f"warm-up: {arguments.warmup_batches} batches recorded, {warm} feeds evaluated")
        profile = cProfile.Profile(time.thread_time) if arguments.profile else None
        if arguments.interleave:
            recorded, feeds, wall, cpu, usage = _interleaved(
                app, namespace, recorder, profile, arguments
            )
        else:
            started = time.perf_counter()
            recorder.record(arguments.batches)
            recorded = time.perf_counter() - started
            feeds, wall, cpu, usage = _evaluate_all(app, namespace, profile, arguments.chunk_feeds)
        tallies, triggers = _written(app, namespace)
        events = arguments.batches * arguments.batch
        print(f"code: {Path(evaluate.__file__).resolve().parents[3]}")
        print(f"recorded {events} events in {arguments.batches} batches in {recorded:.1f}s")
        print(f"machine load {common.machine_busy()}")
        print(f"evaluated {feeds} feeds: {tallies}; {triggers} triggers")
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
            if arguments.profile_out:
                profile.dump_stats(arguments.profile_out)
            stats = pstats.Stats(profile).sort_stats("cumulative")
            stats.print_stats(30)
            print("the service's own functions:")
            stats.print_stats(r"/app/", 40)
            print("by own time:")
            stats.sort_stats("tottime").print_stats(30)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
