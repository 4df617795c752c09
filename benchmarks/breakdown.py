"""Breakdowns by user against the number of users: a page of users and the top users.

Seeds two sum meters of one org on a fresh Firestore-mode emulator: meter `few` with
`--small` users (100) and meter `many` with `--large` users (10,000), each user with
one event on each of `--days` days (2), through the service's own ingestion code in
100-event batches. Then, through the whole Flask app (the request's
`X-Datastore-Usage` is what is reported), it asks each meter for:

- `total`: the period's summary without groupBy (today reads every user's rollups;
  the org-wide rollups of issue 13 section 1 make it O(days)),
- `first page`: `groupBy=userId&limit=100`,
- `middle page`: the page after the middle user, by its cursor,
- `top 10`: `groupBy=userId&orderBy=-value&limit=10`,

and prints median latencies and entities read. A page's reads beyond the total's are
its users' rollups (100 users x days) and one past, whatever the number of users; the
top users read every user's rollups of the period (the one breakdown whose cost grows
with users: docs/design.md, "Breakdowns by user"). On the emulator a range query scans
the whole kind, so its times grow with the data even where the reads do not.

    .venv/bin/python benchmarks/breakdown.py [--small 100] [--large 10000] [--days 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from app.config import Config
from app.datastore import make_client
from app.emulator import Emulator
from app.models import ids
from app.services import events, meters, orgs

SUMMARY = "/v1/billing/meter-events/summary"
USAGE = re.compile(r"rpcs=(\d+); read=(\d+); written=(\d+)")
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _batches(meter_id: str, users: int, days: int):
    pending = []
    for day in range(days):
        moment = TODAY - timedelta(days=day + 1) + timedelta(hours=9)
        for user in range(users):
            pending.append(
                {
                    "meterId": meter_id,
                    "userId": f"user-{user:07d}",
                    "value": (user * 7919) % 1000 + 1,
                    "timestamp": moment,
                    "idempotency": f"{day}-{user}",
                }
            )
            if len(pending) == 100:
                yield pending
                pending = []
    if pending:
        yield pending


def _seed(client, namespace: str, config: Config, meter_id: str, users: int, days: int) -> None:
    def send(batch):
        with client.context(namespace=namespace):
            events.record_events(batch, config)

    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(send, _batches(meter_id, users, days)):
            pass
    print(f"  seeded {users:,} users x {days} days in {time.perf_counter() - began:.1f}s")


def _ask(http, key: str, params: dict) -> tuple[float, int, dict]:
    began = time.perf_counter()
    answer = http.get(SUMMARY, query_string=params, headers={"Authorization": f"Bearer {key}"})
    seconds = time.perf_counter() - began
    assert answer.status_code == 200, answer.get_data(as_text=True)
    usage = USAGE.search(answer.headers["X-Datastore-Usage"])
    assert usage is not None
    return seconds, int(usage.group(2)), answer.get_json()


def _measure(http, key: str, params: dict, runs: int) -> tuple[float, int, dict]:
    results = [_ask(http, key, params) for _ in range(runs)]
    return statistics.median(r[0] for r in results), results[-1][1], results[-1][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        Emulator("firestore", log_path=str(Path(scratch) / "emulator.log")) as emulator,
    ):
        config = Config(
            project="metering-bench",
            emulator_host=emulator.host,
            hashid_salt="bench-salt",
            read_budget_per_minute=0,
            request_deadline_seconds=0,  # the emulator's scans of the kind take long
        )
        ids.configure(config.hashid_salt)
        client = make_client(config)
        with client.context():
            issued = orgs.create_org("bench")
        namespace, key = issued.org.namespace, issued.secret
        with client.context(namespace=namespace):
            few = meters.create_meter({"name": "few", "eventName": "few"})
            many = meters.create_meter({"name": "many", "eventName": "many"})
        print(f"Seeding on the Firestore-mode emulator at {emulator.host}:", flush=True)
        _seed(client, namespace, config, few.id_, args.small, args.days)
        _seed(client, namespace, config, many.id_, args.large, args.days)
        http = create_app(config).test_client()
        period = {
            "periodStart": (TODAY - timedelta(days=args.days)).isoformat(),
            "periodEnd": TODAY.isoformat(),
        }
        print(f"\n{args.days}-day period, one event per user and day")
        print(f"{'query':<12} {'users':>8} {'median ms':>10} {'entities read':>14}")
        for meter, users in ((few, args.small), (many, args.large)):
            base = {"meterId": meter.id_, **period}
            total = _measure(http, key, base, args.runs)
            rows = {"total": total}
            rows["first page"] = _measure(
                http, key, {**base, "groupBy": "userId", "limit": 100}, args.runs
            )
            middle = _middle_cursor(http, key, base, users)
            if middle is not None:
                rows["middle page"] = _measure(
                    http,
                    key,
                    {**base, "groupBy": "userId", "limit": 100, "cursor": middle},
                    args.runs,
                )
            rows["top 10"] = _measure(
                http, key, {**base, "groupBy": "userId", "orderBy": "-value", "limit": 10}, 1
            )
            for name, (seconds, reads, _) in rows.items():
                extra = "" if name == "total" else f"  (+{reads - total[1]:,} beside the total)"
                print(f"{name:<12} {users:>8,} {seconds * 1000:>10.1f} {reads:>14,}{extra}")


def _middle_cursor(http, key: str, base: dict, users: int) -> str | None:
    """The cursor of the page that starts at the middle user (one page of half the users
    ahead of it, asked once)."""
    half = users // 2
    if half < 1 or half > 1000:
        half = min(max(half, 1), 1000)
    _, _, answer = _ask(http, key, {**base, "groupBy": "userId", "limit": half})
    return answer.get("nextCursor")


if __name__ == "__main__":
    main()
